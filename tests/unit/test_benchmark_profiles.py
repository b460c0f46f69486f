"""The benchmark definitions stay runnable: every method names a registered trainer (with the profile's budget
variant) and pretraining method; the tables compute the gain over the labeled-only reference."""
import json

from benchmarks.profiles import METHODS, PROFILES, methods_of, trainer_name
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
    assert "60.00 ± 5.00" in rows["labeled_only"]  # mean over two seeds of 0.55 / 0.65, population std
    # gains are paired by seed: cps seed 0 against labeled-only seed 0 (65 - 55), not against its 2-seed mean
    assert "| +10.00 (1) |" in rows["cps"] and "| 1 |" in rows["cps"]
    assert "| 67.50 ± 2.50 | +7.50 (2) |" in rows["mcnet"]  # ((65 - 55) + (70 - 65)) / 2
    assert "| 90.00 | — |" in rows["urpc"]  # no labeled-only run of seed 5: no gain
    assert (tmp_path / "dice.png").is_file() and (tmp_path / "results.md").is_file()
    csv = (tmp_path / "results.csv").read_text().splitlines()
    assert csv[0].startswith("method,trainer,seeds,dice_mean") and len(csv) == 5
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
