"""The benchmark definitions stay runnable: every method names a registered trainer (with the profile's budget
variant) and pretraining method; the tables compute the gain over the labeled-only reference."""
import json
from dataclasses import replace
from pathlib import Path

import pytest

from benchmarks.profiles import METHODS, PROFILES, budget_suffix, methods_of, trainer_name
from benchmarks.run import aggregate
from nnunet_semi.training import TRAINERS
from pretraining.cli import PRETRAINERS


def test_every_profile_method_is_a_registered_trainer_and_pretraining():
    for profile in PROFILES.values():
        methods = methods_of(profile)
        assert methods and methods[0].key == "labeled_only"
        for method in methods:
            assert trainer_name(method, profile) in TRAINERS, (profile.name, method.key)
            assert all(pre in PRETRAINERS for pre, _ in method.pretrain), method.key
    assert set(PROFILES["hippocampus-cpu"].methods) <= set(METHODS)


def test_a_longer_budget_method_takes_its_multiple_of_the_profile_budget_and_refuses_a_profile_without_it():
    acdc, hippocampus = PROFILES["acdc3-cpu"], PROFILES["hippocampus5-2d-cpu"]
    epochs, its = (int(x) for x in acdc.budget.strip("_").replace("epochs", "").replace("its", "").split("_"))
    for key, factor in (("labeled_only_2x", 2), ("labeled_only_4x", 4), ("labeled_only_8x", 8), ("cps_4x", 4)):
        name = trainer_name(METHODS[key], acdc)
        assert name == f"{METHODS[key].trainer}_{epochs * factor}epochs_{its}its", key
        assert name in TRAINERS, name
    try:
        trainer_name(METHODS["cps_4x"], hippocampus)
    except ValueError as error:
        assert "hippocampus5-2d-cpu" in str(error) and "4x" in str(error)
    else:
        raise AssertionError("a profile without a 4x budget accepted cps_4x")
    # GPU profiles' budgets are epochs only (nnU-Net's 250 iterations per epoch): the epochs are multiplied alone
    assert budget_suffix(replace(acdc, budget="_500epochs"), "2x") == "_1000epochs"
    for budget, multiple in (("", "2x"), ("_40epochs_50its", "double")):  # nnU-Net's default has no suffix to scale
        try:
            budget_suffix(replace(acdc, budget=budget), multiple)
        except ValueError as error:
            assert repr(multiple) in str(error)
        else:
            raise AssertionError(f"{multiple} of {budget!r} was accepted")


def _record(method, seed, dice):
    names = ("anterior", "posterior", "mean")
    summary = {n: {"dice": {"mean": d}, "hd95": {"mean": 2.0}, "assd": {"mean": 1.0}} for n, d in zip(names, dice)}
    return {"method": method, "trainer": f"T_{method}", "seed": seed, "summary": summary,
            "timings": {"train_s": 120.0}}


def test_aggregate_reports_mean_std_and_gain(tmp_path):
    profile = PROFILES["hippocampus-cpu"]
    records = [_record("labeled_only", 0, (0.6, 0.5, 0.55)), _record("labeled_only", 1, (0.6, 0.5, 0.65)),
               _record("cps", 0, (0.7, 0.6, 0.65)), _record("mcnet", 0, (0.7, 0.6, 0.65)),
               _record("mcnet", 1, (0.7, 0.6, 0.70)), _record("urpc", 5, (0.7, 0.6, 0.9))]
    table = aggregate(profile, records, tmp_path)
    rows = {line.split(" | ")[0].strip("| "): line for line in table.splitlines()[2:]}
    # mean over two seeds of 0.55 / 0.65 with the SAMPLE standard deviation (n - 1): 5 * sqrt(2) = 7.07
    assert "60.00 ± 7.07" in rows["labeled_only"]
    # gains are paired by seed: cps seed 0 against labeled-only seed 0 (65 - 55), not against its 2-seed mean
    assert "| +10.00 (1: +10.00) |" in rows["cps"] and "| 1 |" in rows["cps"]
    # ((65 - 55) + (70 - 65)) / 2 = 7.5, per-seed gains 10 / 5, their sample sd 3.54; Dice sd of 0.65 / 0.70: 3.54
    assert "| 67.50 ± 3.54 | +7.50 ± 3.54 (2: +10.00 / +5.00) |" in rows["mcnet"]
    assert "| 90.00 | — |" in rows["urpc"]  # no labeled-only run of seed 5: no gain
    assert (tmp_path / "dice.png").is_file() and (tmp_path / "results.md").is_file()
    csv = (tmp_path / "results.csv").read_text().splitlines()
    assert csv[0].startswith("draw,method,trainer,seeds,dice_mean,dice_sd,gain") and len(csv) == 5
    assert json.loads(json.dumps(records))  # records are plain JSON (what runs/*.json hold)


def test_aggregate_keeps_the_hand_written_reading(tmp_path):
    profile = PROFILES["hippocampus-cpu"]
    records = [_record("labeled_only", 0, (0.6, 0.5, 0.55))]
    aggregate(profile, records, tmp_path)
    assert "Reading" not in (tmp_path / "results.md").read_text()
    (tmp_path / "reading.md").write_text("Reading: the interpretation.\n")
    table = aggregate(profile, records, tmp_path)
    text = (tmp_path / "results.md").read_text()
    assert text.index(table) < text.index("Reading: the interpretation.")


def test_pretraining_checkpoints_are_found_by_the_method_they_record(tmp_path):
    """``mmgl_global`` and ``mmgl_local`` write checkpoints recording "MMGLGlobal" / "MMGLLocal": each method key
    finds its own checkpoint (and none before it exists), so a re-run does not repeat a finished pretraining."""
    import torch

    from benchmarks.run import Runner

    profile = PROFILES["hippocampus-cpu"]
    runner = Runner(profile, tmp_path / "work", tmp_path / "results")
    runner.raw = tmp_path / "Dataset951_Hippocampus"
    env = runner.seed_env(0)
    assert runner._pretrain_checkpoint(env, "mmgl_global") is None
    paths = {}
    for method, name in (("mmgl_global", "MMGLGlobal"), ("mmgl_local", "MMGLLocal"), ("ccm", "CCM")):
        folder = tmp_path / "work" / "results_seed0" / runner.raw.name / f"{name}Pretrain__{profile.plans}__2d" / "fold_0"
        folder.mkdir(parents=True)
        torch.save({"pretraining": {"method": name}, "network_weights": {}}, folder / "checkpoint_final.pth")
        paths[method] = folder / "checkpoint_final.pth"
    for method, path in paths.items():
        assert runner._pretrain_checkpoint(env, method) == path


def _draw_record(method, draw, seed, dice, validation=None):
    record = _record(method, seed, (dice, dice, dice))
    record["summary"] = {n: {"dice": {"mean": dice}, "hd95": {"mean": 2.0}, "assd": {"mean": 1.0}}
                         for n in ("RV", "Myo", "LV", "mean")}
    record["draw"] = draw
    if validation is not None:
        record["validation"] = {n: {"dice": {"mean": validation}} for n in ("RV", "Myo", "LV", "mean")}
    return record


def test_protocol_aggregate_pairs_by_draw_and_seed_headlines_the_mean_over_draws_and_the_closed_fraction(tmp_path):
    """Multi-draw profile: gains are paired within (draw, seed); the headline is the mean over draws of each draw's
    mean paired gain; the all-labeled bound turns a gain into the fraction of the reference -> bound distance."""
    profile = PROFILES["acdc3-cpu"]
    records = [_draw_record("labeled_only", 0, 0, 0.50, 0.55), _draw_record("labeled_only", 0, 1, 0.60),
               _draw_record("cps", 0, 0, 0.56), _draw_record("cps", 0, 1, 0.62),
               _draw_record("labeled_only", 1, 0, 0.70), _draw_record("cps", 1, 0, 0.80),
               _draw_record("all_labeled", "all", 0, 0.85)]
    table = aggregate(profile, records, tmp_path)
    # draw 0: gains +6 / +2 (mean +4); draw 1: +10; headline (4 + 10) / 2 = 7 with sample sd of (4, 10) = 4.24
    assert "| cps | 2 | +7.00 ± 4.24 | draw 0: +4.00 (2) / draw 1: +10.00 (1) |" in table
    draw0 = table.split("### Labeled draw 0")[1].split("### Labeled draw 1")[0]
    cps0 = next(line for line in draw0.splitlines() if line.startswith("| cps |"))
    # bound 85, draw-0 reference mean 55: +4 closes 4 / 30 = 13 %
    assert "+4.00 ± 2.83 (2: +6.00 / +2.00)" in cps0 and "| 13 % |" in cps0
    lo0 = next(line for line in draw0.splitlines() if line.startswith("| labeled_only |"))
    assert "| 55.00 |" in lo0  # validation Dice of the one run that has it
    assert "All-labeled bound" in (tmp_path / "results.md").read_text()


def test_the_closed_fraction_of_a_method_run_on_fewer_seeds_is_measured_from_its_paired_references(tmp_path):
    """cps ran seed 0 only, the reference seeds 0 and 1: the distance to the bound is seed 0's (85 - 50 = 35), not
    the reference's mean over both seeds (85 - 55 = 30)."""
    profile = PROFILES["acdc3-cpu"]
    records = [_draw_record("labeled_only", 0, 0, 0.50), _draw_record("labeled_only", 0, 1, 0.60),
               _draw_record("cps", 0, 0, 0.57), _draw_record("all_labeled", "all", 0, 0.85)]
    draw0 = aggregate(profile, records, tmp_path).split("### Labeled draw 0")[1]
    cps0 = next(line for line in draw0.splitlines() if line.startswith("| cps |"))
    assert "| +7.00 (1: +7.00) | 20 % |" in cps0  # 7 / 35; measured from the mean reference it would read 23 %


def test_no_closed_fraction_where_the_bound_is_within_noise_of_the_reference(tmp_path):
    """A bound 1 point above the reference (a budget too short for the bound) would turn a +6 gain into "600 %":
    the fraction is left out ("—") below BOUND_MARGIN points, and kept above it."""
    profile = PROFILES["acdc3-cpu"]
    records = [_draw_record("labeled_only", 0, 0, 0.50), _draw_record("cps", 0, 0, 0.56),
               _draw_record("labeled_only", 1, 0, 0.70), _draw_record("cps", 1, 0, 0.80),
               _draw_record("all_labeled", "all", 0, 0.51)]
    table = aggregate(profile, records, tmp_path)
    draw0 = table.split("### Labeled draw 0")[1].split("### Labeled draw 1")[0]
    cps0 = next(line for line in draw0.splitlines() if line.startswith("| cps |"))
    assert "| +6.00 (1: +6.00) | — |" in cps0 and "%" not in cps0
    records[-1] = _draw_record("all_labeled", "all", 0, 0.53)  # 3 points above draw 0's reference: reported
    draw0 = aggregate(profile, records, tmp_path).split("### Labeled draw 0")[1].split("### Labeled draw 1")[0]
    cps0 = next(line for line in draw0.splitlines() if line.startswith("| cps |"))
    assert "| past the bound (not converged) |" in cps0  # +6 over a distance of 3: 200 % would mean nothing
    records[-1] = _draw_record("all_labeled", "all", 0, 0.56)  # the gain reaches the bound exactly: 100 %
    draw0 = aggregate(profile, records, tmp_path).split("### Labeled draw 0")[1].split("### Labeled draw 1")[0]
    assert "| 100 % |" in next(line for line in draw0.splitlines() if line.startswith("| cps |"))


def test_candidate_table_pairs_validation_dice_with_labeled_only_of_the_same_seed(tmp_path):
    """--validation-only candidates: validation Dice per seed, labeled-only's validation Dice of the same draw and seed
    (from its full run) and the paired gain with its sample sd; no reference, no gain."""
    profile = PROFILES["acdc3-cpu"]
    records = [_draw_record("labeled_only", 0, 0, 0.50, 0.40), _draw_record("labeled_only", 0, 2, 0.50, 0.44)]
    candidates = [_draw_record("fixmatch_sat", 0, 2, 0.0, 0.54), _draw_record("fixmatch_sat", 0, 0, 0.0, 0.50),
                  _draw_record("fixmatch_tau80", 0, 1, 0.0, 0.49)]
    for c in candidates:
        del c["summary"]  # the test set was not read
    aggregate(profile, records, tmp_path, candidates)
    md = (tmp_path / "results.md").read_text()
    sat = next(line for line in md.splitlines() if line.startswith("| 0 | fixmatch_sat |"))
    # gains +10 (seed 0) and +10 (seed 2): mean +10, sample sd 0; the mean validation Dice 52 ± 2.83
    assert "| 2 | 52.00 ± 2.83 | s0 50.00 / s2 54.00 | 40.00 / 44.00 | +10.00 ± 0.00 (+10.00 / +10.00) |" in sat
    tau = next(line for line in md.splitlines() if line.startswith("| 0 | fixmatch_tau80 |"))
    assert tau.endswith("| 1 | 49.00 | s1 49.00 | — | — |")  # labeled-only seed 1 has no run here


def test_a_longer_budget_candidate_is_paired_with_the_reference_at_its_budget(tmp_path):
    """fixmatch_2x on validation is paired with labeled_only_2x's validation Dice of the same draw and seed, not with
    the 1x reference's (which would credit the candidate with the longer budget's own gain)."""
    profile = PROFILES["acdc3-cpu"]
    records = [_draw_record("labeled_only", 1, 0, 0.30, 0.25), _draw_record("labeled_only_2x", 1, 0, 0.60, 0.59)]
    candidate = _draw_record("fixmatch_2x", 1, 0, 0.0, 0.65)
    del candidate["summary"]
    aggregate(profile, records, tmp_path, [candidate])
    row = next(line for line in (tmp_path / "results.md").read_text().splitlines()
               if line.startswith("| 1 | fixmatch_2x |"))
    # 65 - 59 = +6 against the 2x reference (against the 1x one it would read +40)
    assert row.endswith("| 1 | 65.00 | s0 65.00 | 59.00 (labeled_only_2x) | +6.00 (+6.00) |")


def test_sample_std_is_n_minus_one():
    from benchmarks.run import sample_std

    assert sample_std([1.0, 2.0, 3.0]) == 1.0 and sample_std([4.0]) == 0.0


def test_the_single_network_control_reuses_the_cps_checkpoint_and_predicts_with_network_a(tmp_path, monkeypatch):
    """``cps_single`` trains nothing: it finds the CPS run's checkpoint of the same seed (same trainer, same fold
    folder) and runs nnUNetv2_predict with ``nnUNet_semi_predict_member=a``, recorded in commands.sh; its record
    carries no validation Dice (the fold's validation is the ensemble's)."""
    from benchmarks.run import Runner

    profile = PROFILES["acdc3-cpu"]
    assert "cps_single" in profile.methods
    runner = Runner(profile, tmp_path / "work", tmp_path / "results")
    raw = tmp_path / "work" / "raw" / "Dataset970_ACDC"
    runner.raw_by_draw[0] = raw
    env = runner.seed_env(1)
    fold = runner.fold_folder(env["nnUNet_results"], trainer_name(METHODS["cps"], profile), raw)
    fold.mkdir(parents=True)
    (fold / "checkpoint_final.pth").write_bytes(b"")
    calls = []

    def step(title, cmd, env, log_name):
        calls.append(([str(c) for c in cmd], env))
        return 1.0

    monkeypatch.setattr(runner, "step", step)
    monkeypatch.setattr(runner, "evaluate", lambda gt, pred, allow_missing=False: {"mean": {"dice": {"mean": 0.5}}})
    monkeypatch.setattr(runner, "_train_log_timing", lambda fold: {})
    record = runner.run_method(METHODS["cps_single"], 1, 0)
    assert len(calls) == 1 and calls[0][0][0].endswith("nnUNetv2_predict")  # no nnUNetv2_train
    cmd, predict_env = calls[0]
    assert cmd[cmd.index("-tr") + 1] == "nnUNetTrainerCPS_40epochs_50its"
    assert predict_env["nnUNet_semi_predict_member"] == "a" and predict_env["nnUNet_semi_seed"] == "1"
    assert cmd[cmd.index("-o") + 1].endswith("predictions/draw0/seed1/cps_single")
    assert record["method"] == "cps_single" and "validation" not in record
    assert (tmp_path / "results" / "runs").is_dir()
    # the harness's own step writes the variable into the command line it records
    monkeypatch.undo()
    runner._ran = []
    import subprocess

    monkeypatch.setattr(subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 0))
    runner.step("t", ["nnUNetv2_predict"], {**env, "nnUNet_semi_predict_member": "a"}, "t")
    assert "nnUNet_semi_predict_member=a nnUNetv2_predict" in runner._ran[0]


def _recording_runner(tmp_path, monkeypatch):
    """An acdc3-cpu runner (draw 0) whose steps are recorded as commands in ``calls`` instead of run."""
    from benchmarks.run import Runner

    profile = PROFILES["acdc3-cpu"]
    runner = Runner(profile, tmp_path / "work", tmp_path / "results")
    raw = tmp_path / "work" / "raw" / "Dataset970_ACDC"
    runner.raw_by_draw[0] = raw
    calls = []
    monkeypatch.setattr(runner, "step", lambda title, cmd, env, log_name: calls.append([str(c) for c in cmd]) or 1.0)
    monkeypatch.setattr(runner, "evaluate", lambda gt, pred, allow_missing=False: {"mean": {"dice": {"mean": 0.5}}})
    monkeypatch.setattr(runner, "_train_log_timing", lambda fold: {})
    return profile, runner, raw, calls


def test_an_interrupted_pretraining_continues_with_c(tmp_path, monkeypatch):
    """A pretraining folder with checkpoint_latest.pth of the method (no final) is continued with
    nnunet_semi_pretrain's --c; another method's interrupted pretraining, or none, starts fresh."""
    import torch

    profile, runner, raw, calls = _recording_runner(tmp_path, monkeypatch)
    env = runner.seed_env(0)
    base = Path(env["nnUNet_results"]) / raw.name
    for name in ("MMGLGlobal", "CCM"):  # MMGL's stage 1 interrupted; CCM's too (another method)
        folder = base / f"{name}Pretrain__{profile.plans}__2d" / "fold_0"
        folder.mkdir(parents=True)
        torch.save({"pretraining": {"method": name}, "epoch": 3}, folder / "checkpoint_latest.pth")
    assert runner._interrupted_pretraining(env, "mmgl_global", raw)
    assert not runner._interrupted_pretraining(env, "mmgl_local", raw)
    runner.run_method(METHODS["mmgl"], 0, 0, validation_only=True)
    pretrain = {c[c.index("-m") + 1]: c for c in calls if c[0].endswith("nnunet_semi_pretrain")}
    assert pretrain["mmgl_global"][-1] == "--c" and "--c" not in pretrain["mmgl_local"]
    # the recorded command is one nnunet_semi_pretrain accepts: continued, and still the profile's configuration
    from pretraining.cli import build_parser

    args = build_parser("mmgl_global").parse_args(pretrain["mmgl_global"][1:])
    assert args.continue_training and args.c == "2d" and args.m == "mmgl_global"
    assert not build_parser("mmgl_local").parse_args(pretrain["mmgl_local"][1:]).continue_training
    # once the final checkpoint exists it is no longer interrupted (and the pretraining is not run again)
    final = base / f"MMGLGlobalPretrain__{profile.plans}__2d" / "fold_0" / "checkpoint_final.pth"
    torch.save({"pretraining": {"method": "MMGLGlobal"}}, final)
    assert not runner._interrupted_pretraining(env, "mmgl_global", raw)


def test_an_interrupted_training_continues_with_c(tmp_path, monkeypatch):
    """A fold with checkpoint_latest.pth but no checkpoint_final.pth (a killed chain) is continued with nnU-Net's
    --c; a fresh fold trains without it; a finished fold trains nothing."""
    profile, runner, raw, calls = _recording_runner(tmp_path, monkeypatch)
    fold = runner.fold_folder(runner.seed_env(0)["nnUNet_results"], trainer_name(METHODS["labeled_only"], profile),
                              raw)
    runner.run_method(METHODS["labeled_only"], 0, 0, validation_only=True)
    fold.mkdir(parents=True)
    (fold / "checkpoint_latest.pth").write_bytes(b"")
    runner.run_method(METHODS["labeled_only"], 1, 0, validation_only=True)  # seed 1: another fold, fresh
    for f in (tmp_path / "results" / "validation_runs").glob("*.json"):
        f.unlink()
    runner.run_method(METHODS["labeled_only"], 0, 0, validation_only=True)
    trains = [c for c in calls if c[0].endswith("nnUNetv2_train")]
    assert len(trains) == 3 and "--c" not in trains[0] and "--c" not in trains[1] and trains[2][-1] == "--c"
    (fold / "checkpoint_final.pth").write_bytes(b"")
    for f in (tmp_path / "results" / "validation_runs").glob("*.json"):
        f.unlink()
    runner.run_method(METHODS["labeled_only"], 0, 0, validation_only=True)
    assert len([c for c in calls if c[0].endswith("nnUNetv2_train")]) == 3  # finished: nothing trained


def test_a_longer_budget_method_is_paired_with_the_reference_at_its_budget_and_the_bound_is_the_longest(tmp_path):
    """cps_2x pairs with labeled_only_2x of the same draw and seed (a longer budget helps the reference too), the
    longer references with labeled_only (how far the reference moved), a draw without a 2x reference gets no gain;
    the closed fraction divides by the distance to the bound at the longest budget that ran."""
    from benchmarks.run import reference_of

    assert reference_of("labeled_only") is None
    assert reference_of("cps_2x") == "labeled_only_2x" and reference_of("cps_4x") == "labeled_only_4x"
    assert reference_of("labeled_only_2x") == reference_of("cps") == reference_of("cps_single") == "labeled_only"
    assert reference_of("labeled_only_ensemble") == "labeled_only"
    assert reference_of("labeled_only_2x_ensemble") == "labeled_only_2x"
    profile = PROFILES["acdc3-cpu"]
    records = [_draw_record("labeled_only", 0, 0, 0.50), _draw_record("labeled_only_2x", 0, 0, 0.56),
               _draw_record("cps_2x", 0, 0, 0.66), _draw_record("labeled_only", 1, 0, 0.60),
               _draw_record("cps_2x", 1, 0, 0.70), _draw_record("all_labeled", "all", 0, 0.54),
               _draw_record("all_labeled_4x", "all", 0, 0.76)]
    table = aggregate(profile, records, tmp_path)
    draw0 = table.split("### Labeled draw 0")[1].split("### Labeled draw 1")[0]
    rows = {line.split(" | ")[0].strip("| "): line for line in draw0.splitlines() if line.startswith("| ")}
    # 66 - 56 = +10 against the 2x reference (not +16 against the 1x one); bound 76 at 4x: 10 / (76 - 56) = 50 %
    assert "| +10.00 (1: +10.00) vs labeled_only_2x | 50 % |" in rows["cps_2x"]
    assert "| +6.00 (1: +6.00) | 23 % |" in rows["labeled_only_2x"]  # 6 / (76 - 50)
    draw1 = table.split("### Labeled draw 1")[1]
    cps1 = next(line for line in draw1.splitlines() if line.startswith("| cps_2x |"))
    assert "| 70.00 | — |" in cps1  # draw 1 has no 2x reference: no pairing with the 1x one
    assert "| cps_2x (vs labeled_only_2x) | 1 | +10.00 |" in table
    results = (tmp_path / "results.md").read_text()
    assert "`all_labeled` (T_all_labeled, seed 0): 54.00" in results and "`all_labeled_4x` (T_all_labeled_4x" in results
    assert "uses `all_labeled_4x`" in results
    csv = (tmp_path / "results.csv").read_text()
    assert "all,all_labeled," in csv and "all,all_labeled_4x," in csv


def test_two_chains_preparing_one_draw_run_one_after_the_other(tmp_path, monkeypatch):
    """prepare() holds a file lock per draw: two runners (two chains) preparing the same draw never overlap; two
    different draws may."""
    import threading
    import time

    from benchmarks.run import Runner

    profile = PROFILES["acdc3-cpu"]
    inside, overlaps = {}, []

    def slow_prepare(self, draw):
        inside[draw] = inside.get(draw, 0) + 1
        if inside[draw] > 1:
            overlaps.append(draw)
        time.sleep(0.3)
        inside[draw] -= 1
        return tmp_path / f"raw{draw}"

    monkeypatch.setattr(Runner, "_prepare", slow_prepare)
    runners = [Runner(profile, tmp_path / "work", tmp_path / "results") for _ in range(3)]
    threads = [threading.Thread(target=r.prepare, args=(d,)) for r, d in zip(runners, (0, 0, 1))]
    started = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert overlaps == []
    assert time.time() - started >= 0.6  # the two draw-0 preparations ran one after the other


def test_curve_table_lists_the_pseudo_dice_and_the_methods_curves_of_the_checkpoint(tmp_path):
    """benchmarks.curves: every k-th epoch and the last, nnU-Net's pseudo Dice per class and each logged curve, read
    from the fold's checkpoint; a folder without a checkpoint gets one error naming it."""
    import pytest
    import torch
    from benchmarks.curves import curve_table, load_logging, main

    logging = {"dice_per_class_or_region": [[0.1 * e, 0.05 * e] for e in range(7)], "lrs": [0.01] * 7,
               "train_losses": [1.0 - 0.1 * e for e in range(7)], "unsup_gate": [0, 0, 0, 0.5, 1, 1, 1],
               "epoch_start_timestamps": list(range(7)), "nnunet_semi": {"rng_states": []}}
    (tmp_path / "fold_0").mkdir()
    torch.save({"logging": logging}, tmp_path / "fold_0" / "checkpoint_final.pth")
    table = curve_table(load_logging(tmp_path / "fold_0"), every=3).splitlines()
    assert table[0] == "| epoch | pseudo Dice 1 | pseudo Dice 2 | lrs | train_losses | unsup_gate |"
    assert [row.split(" | ")[0] for row in table[2:]] == ["| 0", "| 3", "| 6"]
    assert table[3] == "| 3 | 0.300 | 0.150 | 0.01 | 0.7 | 0.5 |"
    assert main([str(tmp_path / "fold_0"), "--every", "3"]) == 0
    with pytest.raises(FileNotFoundError, match="no checkpoint_latest.pth"):
        load_logging(tmp_path)


def test_a_chains_thread_count_caps_nnunet_predict_too(tmp_path):
    """``--threads 1`` gives training (``nnUNet_semi_threads``) and ``nnUNetv2_predict`` (``nnUNet_def_n_proc``, which
    caps the torch threads that ``-device cpu`` sets to every core) one thread each; nnU-Net reads that variable."""
    import os
    import subprocess
    import sys

    from benchmarks.run import Runner

    profile = PROFILES["hippocampus5-2d-cpu"]
    env = Runner(profile, tmp_path / "work", tmp_path / "results", threads=1).seed_env(0)
    assert (env["nnUNet_semi_threads"], env["nnUNet_def_n_proc"]) == ("1", "1")
    unset = Runner(profile, tmp_path / "work", tmp_path / "results").seed_env(0)
    assert "nnUNet_semi_threads" not in unset  # without --threads: the runner's default, every core
    assert unset["nnUNet_def_n_proc"] == os.environ.get("nnUNet_def_n_proc", str(os.cpu_count() or 2))
    read = subprocess.run([sys.executable, "-c", "from nnunetv2.configuration import default_num_processes as n; "
                           "print(n)"], env={**env}, capture_output=True, text=True, check=True)
    assert read.stdout.split()[-1] == "1"


def test_an_ensemble_controls_row_names_every_ensembled_pair_of_seeds():
    """Each ``labeled_only_ensemble`` record names its own pair of seeds; the table row names them all, not the
    first record's pair only."""
    from benchmarks.run import trainer_text
    records = [{"trainer": "nnUNetTrainerLabeledOnly x2 (seeds 0, 1)", "ensembled_seeds": [0, 1]},
               {"trainer": "nnUNetTrainerLabeledOnly x2 (seeds 1, 2)", "ensembled_seeds": [1, 2]}]
    assert trainer_text(records) == "nnUNetTrainerLabeledOnly x2 (seeds 0+1, 1+2)"
    assert trainer_text(records[1:]) == "nnUNetTrainerLabeledOnly x2 (seeds 1+2)"
    assert trainer_text([{"trainer": "nnUNetTrainerCPS_40epochs_50its"}] * 2) == "nnUNetTrainerCPS_40epochs_50its"
    # the member trainer is read from its own field where the record has it, not parsed from the formatted text
    assert trainer_text([{"trainer": "hand-named, x2 (seeds 0, 1)", "member_trainer": "T", "ensembled_seeds": [0, 1]}]
                        ) == "T x2 (seeds 0+1)"


def test_the_ensemble_controls_record_stores_its_member_trainer(tmp_path):
    """``_ensemble_control`` records the ensembled trainer as a field of its own (the row's text is built from it), the
    pair of seeds, and the paired run's seed; the ensemble and the evaluation are nnU-Net's, stubbed here."""
    from benchmarks.run import Runner

    profile = PROFILES["hippocampus5-3d-cpu"]
    runner = Runner(profile, tmp_path / "work", tmp_path / "results", threads=1)
    member = METHODS["labeled_only"]
    for seed in (1, 2):
        runner.run_path(member, seed, 0).parent.mkdir(parents=True, exist_ok=True)
        runner.run_path(member, seed, 0).write_text("{}")
        runner.prediction_folder(member, seed, 0).mkdir(parents=True)
        (runner.prediction_folder(member, seed, 0) / "case.npz").write_bytes(b"")
    commands = []
    runner.step = lambda title, cmd, env, tag: commands.append(cmd) or 1.5
    runner.evaluate = lambda gt, pred, allow_missing=False: {"mean": {}}
    record = runner._ensemble_control(METHODS["labeled_only_ensemble"], 1, 0, tmp_path / "Dataset980_X")
    assert record["member_trainer"] == trainer_name(member, profile)
    assert record["trainer"] == f"{trainer_name(member, profile)} x2 (seeds 1, 2)"
    assert (record["ensembled_seeds"], record["seed"], record["draw"]) == ([1, 2], 1, 0)
    assert [str(f) for f in commands[0][2:4]] == [str(runner.prediction_folder(member, s, 0)) for s in (1, 2)]


def test_results_csv_quotes_a_trainer_text_with_a_comma(tmp_path):
    """A trainer text with a comma (a hand-named ensemble) stays one field of ``results.csv``: every row parses to
    the header's width and the field reads back whole."""
    import csv
    profile = PROFILES["hippocampus-cpu"]
    ensemble = _record("labeled_only_ensemble", 0, (0.6, 0.5, 0.58))
    ensemble["trainer"] = "T x2 (seeds 0, 1)"
    aggregate(profile, [_record("labeled_only", 0, (0.6, 0.5, 0.55)), ensemble], tmp_path)
    rows = list(csv.reader((tmp_path / "results.csv").open()))
    assert {len(r) for r in rows} == {len(rows[0])}
    assert [r[2] for r in rows if r[1] == "labeled_only_ensemble"] == ["T x2 (seeds 0, 1)"]


def test_an_ensemble_member_recorded_without_probabilities_is_predicted_again(tmp_path):
    """A member run recorded before its profile listed the ensemble control has segmentations but no test
    probabilities: its checkpoint predicts the test set again with ``--save_probabilities`` into a staging folder, the
    re-prediction must score the recorded Dice, and only its probabilities join the recorded segmentations; a refused
    re-prediction leaves nothing behind; without the checkpoint the control waits (no record)."""
    from benchmarks.run import Runner

    profile = PROFILES["hippocampus5-3d-cpu"]
    runner = Runner(profile, tmp_path / "work", tmp_path / "results", threads=1)
    member = METHODS["labeled_only_2x"]
    raw = tmp_path / "Dataset980_X"
    dice = {1: 0.81, 2: 0.83}
    for seed in (1, 2):
        run = runner.run_path(member, seed, 0)
        run.parent.mkdir(parents=True, exist_ok=True)
        run.write_text(json.dumps({"summary": {"mean": {"dice": {"mean": dice[seed]}}}}))
        runner.prediction_folder(member, seed, 0).mkdir(parents=True)
    (runner.prediction_folder(member, 2, 0) / "case.npz").write_bytes(b"")  # seed 2 ran with probabilities
    recorded = runner.prediction_folder(member, 1, 0) / "case.nii.gz"
    recorded.write_bytes(b"recorded segmentation")
    staging = runner.prediction_folder(member, 1, 0).with_name("labeled_only_2x.reprediction")
    commands = []

    def step(title, cmd, env, tag):  # a stub nnUNetv2_predict / nnUNetv2_ensemble writing what the real ones write
        out = Path(cmd[cmd.index("-o") + 1])
        out.mkdir(parents=True, exist_ok=True)
        if "--save_probabilities" in cmd:
            for name in ("case.nii.gz", "case.npz", "case.pkl"):
                (out / name).write_bytes(b"re-predicted")
        commands.append((title, [str(c) for c in cmd], env))
        return 1.5

    runner.step = step
    runner.evaluate = lambda gt, pred, allow_missing=False: {"mean": {"dice": {"mean": scored[str(pred)]}}}
    scored = {str(staging): 0.81}
    method = METHODS["labeled_only_2x_ensemble"]

    # seed 1's checkpoint is gone: nothing runs, no record
    assert runner._ensemble_control(method, 1, 0, raw) is None and commands == []

    checkpoint = runner.fold_folder(runner.seed_env(1)["nnUNet_results"], trainer_name(member, profile), raw)
    checkpoint.mkdir(parents=True)
    (checkpoint / "checkpoint_final.pth").write_bytes(b"")
    scored[str(runner.prediction_folder(method, 1, 0))] = 0.84
    record = runner._ensemble_control(method, 1, 0, raw)
    (title, predict, env), (_, ensemble, _) = commands
    assert "--save_probabilities" in predict and "for the ensemble control" in title
    # predicted into a staging folder; the probabilities join the recorded segmentations, which stay untouched
    assert predict[predict.index("-o") + 1] == str(staging) and not staging.exists()
    assert sorted(p.name for p in runner.prediction_folder(member, 1, 0).iterdir()) == \
        ["case.nii.gz", "case.npz", "case.pkl"]
    assert recorded.read_bytes() == b"recorded segmentation"
    assert predict[predict.index("-tr") + 1] == "nnUNetTrainerLabeledOnly_80epochs_50its"
    assert env["nnUNet_results"] == runner.seed_env(1)["nnUNet_results"]
    assert ensemble[2:4] == [str(runner.prediction_folder(member, s, 0)) for s in (1, 2)]
    assert record["ensembled_seeds"] == [1, 2] and record["summary"]["mean"]["dice"]["mean"] == 0.84

    # a re-prediction that does not score the recorded Dice is not the recorded run: refused, nothing left behind
    for f in runner.prediction_folder(member, 1, 0).glob("case.*"):
        if f.suffix != ".gz":
            f.unlink()
    commands.clear()
    scored[str(staging)] = 0.79
    with pytest.raises(RuntimeError, match="not the recorded run's"):
        runner._member_folder(member, 1, 0, raw)
    assert not staging.exists() and recorded.read_bytes() == b"recorded segmentation"
    assert not any(runner.prediction_folder(member, 1, 0).glob("*.npz"))


def test_a_member_whose_checkpoint_is_gone_is_trained_again_with_rerun(tmp_path, capsys):
    """``--rerun`` trains a recorded run again whose checkpoint is gone: the same trainer and seed, predicted with
    probabilities into its own folder and recorded in ``reruns/``, while ``runs/`` keeps the original. The ensemble
    control then reads the re-run's probabilities (not a re-prediction of the fold's checkpoint, which is now the
    re-run's) and names the records of its members. A run still holding its checkpoint, a run never recorded and an
    ensemble control are refused; an interrupted re-run continues with ``--c``."""
    import time

    from benchmarks.run import Runner

    profile = PROFILES["hippocampus5-3d-cpu"]
    runner = Runner(profile, tmp_path / "work", tmp_path / "results", threads=1)
    member, method = METHODS["labeled_only_2x"], METHODS["labeled_only_2x_ensemble"]
    raw = tmp_path / "Dataset980_X"
    runner.raw_by_draw[0] = raw
    trainer = trainer_name(member, profile)

    def fold(seed):
        return runner.fold_folder(runner.seed_env(seed)["nnUNet_results"], trainer, raw)

    original = {"method": member.key, "seed": 0, "summary": {"mean": {"dice": {"mean": 0.8268}}}}
    for seed in (0, 1, 2):
        runner.run_path(member, seed, 0).parent.mkdir(parents=True, exist_ok=True)
        runner.run_path(member, seed, 0).write_text(json.dumps({**original, "seed": seed}))
    runner.prediction_folder(member, 1, 0).mkdir(parents=True)
    (runner.prediction_folder(member, 1, 0) / "case.npz").write_bytes(b"")  # seed 1 ran with probabilities
    commands = []

    def step(title, cmd, env, tag):  # stub nnUNetv2_train / _predict / _ensemble writing what the real ones write
        cmd = [str(c) for c in cmd]
        if cmd[0].endswith("nnUNetv2_train"):
            fold(int(env["nnUNet_results"][-1])).mkdir(parents=True, exist_ok=True)
            (fold(int(env["nnUNet_results"][-1])) / "checkpoint_final.pth").write_bytes(b"")
        else:
            out = Path(cmd[cmd.index("-o") + 1])
            out.mkdir(parents=True, exist_ok=True)
            if "--save_probabilities" in cmd:
                for name in ("case.nii.gz", "case.npz", "case.pkl"):
                    (out / name).write_bytes(b"")
        commands.append(cmd)
        return 2.0

    runner.step = step
    runner._train_log_timing = lambda fold: {}
    runner.evaluate = lambda gt, pred, allow_missing=False: {"mean": {"dice": {"mean": 0.8231}}}

    # seed 0's checkpoint is gone: the control waits and says how to train it again
    assert runner._ensemble_control(method, 0, 0, raw) is None and commands == []
    assert "--methods labeled_only_2x --seeds 0 --draws 0 --rerun" in capsys.readouterr().out

    record = runner.rerun_method(member, 0, 0)
    (train, predict) = commands
    assert train[train.index("-tr") + 1] == trainer and "--c" not in train
    assert runner.seed_env(0)["nnUNet_results"] in str(fold(0))
    assert "--save_probabilities" in predict
    assert predict[predict.index("-o") + 1] == str(runner.rerun_folder(member, 0, 0))
    saved = runner.results / "reruns" / f"labeled_only_2x_seed0_{time.strftime('%Y-%m-%d')}.json"
    assert json.loads(saved.read_text()) == record and record["rerun_of"] == "runs/labeled_only_2x_seed0.json"
    assert record["seed"] == 0 and record["summary"]["mean"]["dice"]["mean"] == 0.8231
    assert json.loads(runner.run_path(member, 0, 0).read_text()) == original  # the original stays the record
    assert not runner.prediction_folder(member, 0, 0).exists()

    commands.clear()
    assert runner.rerun_method(member, 0, 0) == record and commands == []  # a finished re-run is reused
    control = runner._ensemble_control(method, 0, 0, raw)
    (ensemble,) = commands  # no re-prediction of the fold's checkpoint: it is the re-run's
    assert ensemble[2:4] == [str(runner.rerun_folder(member, 0, 0)), str(runner.prediction_folder(member, 1, 0))]
    assert control["members"] == [saved.relative_to(runner.results).as_posix(), "runs/labeled_only_2x_seed1.json"]

    # refusals: a run whose checkpoint is here, a run never recorded, an ensemble control
    fold(2).mkdir(parents=True)
    (fold(2) / "checkpoint_final.pth").write_bytes(b"")
    with pytest.raises(SystemExit, match="holds the recorded run's checkpoint"):
        runner.rerun_method(member, 2, 0)
    with pytest.raises(SystemExit, match="no recorded run"):
        runner.rerun_method(METHODS["cps_2x"], 0, 0)
    with pytest.raises(SystemExit, match="an ensemble control"):
        runner.rerun_method(method, 0, 0)

    # an interrupted re-run (its folder made, the fold's latest checkpoint only) continues with --c
    (fold(2) / "checkpoint_final.pth").replace(fold(2) / "checkpoint_latest.pth")
    runner.rerun_folder(member, 2, 0).mkdir(parents=True)
    commands.clear()
    runner.rerun_method(member, 2, 0)
    assert "--c" in commands[0] and runner.rerun_record(member, 2, 0) is not None


def test_rerun_refuses_validation_only_and_aggregate_only(tmp_path, capsys):
    """A re-run exists for its test probabilities: with ``--validation-only`` (no test prediction) or
    ``--aggregate-only`` (no training) it would do nothing asked of it, so the command line refuses both."""
    from benchmarks.run import main

    for flag in ("--validation-only", "--aggregate-only"):
        with pytest.raises(SystemExit):
            main(["--profile", "hippocampus5-3d-cpu", "--rerun", flag, "--work", str(tmp_path / "w"),
                  "--results", str(tmp_path / "r")])
        assert "--rerun trains and predicts the test set" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
