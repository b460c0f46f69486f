"""benchmarks/gains_figure.py: the paired gains it plots are recomputed by hand from synthetic run records (pairing
by seed, unpaired seeds and profiles without labeled-only runs left out), and it writes a PNG."""
import json

import pytest

from benchmarks import gains_figure as gf


def _run(folder, method, seed, dice, trainer=None):
    record = {"method": method, "seed": seed, "trainer": trainer or f"nnUNetTrainer{method}_40epochs_50its",
              "summary": {"mean": {"dice": {"mean": dice}}}}
    (folder / "runs").mkdir(parents=True, exist_ok=True)
    (folder / "runs" / f"{method}_seed{seed}.json").write_text(json.dumps(record))


@pytest.fixture
def results(tmp_path):
    a = tmp_path / "profile-a"
    _run(a, "labeled_only", 0, 0.70, "nnUNetTrainerLabeledOnly_40epochs_50its")
    _run(a, "labeled_only", 1, 0.72, "nnUNetTrainerLabeledOnly_40epochs_50its")
    _run(a, "cps", 0, 0.775, "nnUNetTrainerCPS_dice_40epochs_50its")
    _run(a, "cps", 1, 0.78, "nnUNetTrainerCPS_dice_40epochs_50its")
    _run(a, "cps", 2, 0.99, "nnUNetTrainerCPS_dice_40epochs_50its")  # no labeled-only seed 2: left out
    _run(a, "mean_teacher", 1, 0.70, "nnUNetTrainerMeanTeacher_40epochs_50its")
    _run(a, "labeled_only_long", 0, 0.71, "nnUNetTrainerLabeledOnly_50epochs_100its")
    _run(tmp_path / "profile-b", "cps", 0, 0.5)  # no labeled-only runs: no panel
    return tmp_path


def test_gains_are_paired_by_seed_in_dice_points(results):
    runs = gf.load_runs(results)
    assert sorted(runs) == ["profile-a", "profile-b"]
    gains = gf.paired_gains(runs["profile-a"])
    assert set(gains) == {"cps", "mean_teacher", "labeled_only_long"}
    assert [s for s, _ in gains["cps"]] == [0, 1]
    assert gains["cps"][0][1] == pytest.approx(7.5) and gains["cps"][1][1] == pytest.approx(6.0)
    assert gains["mean_teacher"] == [(1, pytest.approx(-2.0))]
    assert gf.paired_gains(runs["profile-b"]) == {}


def test_gains_are_paired_by_draw_and_seed(tmp_path):
    """A protocol profile's draws have their own references: draw 1's run pairs with draw 1's labeled-only run of
    the same seed, never with draw 0's, and the bound (draw "all") pairs with nothing."""
    folder = tmp_path / "protocol"
    (folder / "runs").mkdir(parents=True)
    for name, method, draw, seed, dice in (("lo0", "labeled_only", 0, 0, 0.54), ("lo1", "labeled_only", 1, 0, 0.28),
                                           ("cps0", "cps", 0, 0, 0.64), ("cps1", "cps", 1, 0, 0.56),
                                           ("cps1s1", "cps", 1, 1, 0.60), ("bound", "all_labeled", "all", 0, 0.85)):
        record = {"method": method, "seed": seed, "draw": draw, "trainer": f"nnUNetTrainer{method}_40epochs_50its",
                  "summary": {"mean": {"dice": {"mean": dice}}}}
        (folder / "runs" / f"{name}.json").write_text(json.dumps(record))
    gains = gf.paired_gains(gf.load_runs(tmp_path)["protocol"])
    assert set(gains) == {"cps"}
    assert [g for _, g in gains["cps"]] == [pytest.approx(10.0), pytest.approx(28.0)]
    title = gf.panels(gf.load_runs(tmp_path))[0]["title"]
    assert "labeled-only 54.0 (draw 0, seeds 0); 28.0 (draw 1, seeds 0)" in title


def test_panels_label_trainers_and_order_by_mean_gain(results):
    (panel,) = gf.panels(gf.load_runs(results))  # profile-b has no reference
    assert panel["profile"] == "profile-a"
    labels = [label for label, _ in panel["methods"]]
    assert labels == ["CPS", "LabeledOnly (50 x 100 its)", "MeanTeacher"]  # +6.75, +1.0, -2.0
    assert "40 x 50 its" in panel["title"] and "labeled-only 71.0 (seeds 0 1)" in panel["title"]


def test_draw_writes_a_png(results, tmp_path):
    out = gf.draw(gf.load_runs(results), tmp_path / "assets" / "gains.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(SystemExit):
        gf.draw({"p": []}, tmp_path / "none.png")


def test_the_controls_are_named(results):
    """The labeled-only ensemble of two seeds and a two-network trainer's single network get their own labels."""
    folder = results / "profile-a"
    _run(folder, "labeled_only_ensemble", 0, 0.69, "nnUNetTrainerLabeledOnly_40epochs_50its x2 (seeds 0, 1)")
    record = json.loads((folder / "runs" / "labeled_only_ensemble_seed0.json").read_text())
    (folder / "runs" / "labeled_only_ensemble_seed0.json").write_text(json.dumps({**record, "ensembled_seeds": [0, 1]}))
    _run(folder, "cps_single", 1, 0.75, "nnUNetTrainerCPS_40epochs_50its")
    (panel,) = gf.panels(gf.load_runs(results))
    labels = dict(panel["methods"])
    assert labels["CPS (network a alone)"] == [(1, pytest.approx(3.0))]
    assert labels["LabeledOnly x2 seeds, ensembled"] == [(0, pytest.approx(-1.0))]


def test_a_longer_budget_run_is_paired_with_the_reference_at_that_budget(results):
    """CPS at 80 x 50 minus labeled-only at 80 x 50 of the same seed (not the 40 x 50 one); without a reference at
    its budget it is left out; the longer reference itself stays paired with the panel's reference."""
    folder = results / "profile-a"
    _run(folder, "labeled_only_2x", 0, 0.74, "nnUNetTrainerLabeledOnly_80epochs_50its")
    _run(folder, "cps_2x", 0, 0.81, "nnUNetTrainerCPS_80epochs_50its")
    _run(folder, "cps_2x", 1, 0.90, "nnUNetTrainerCPS_80epochs_50its")  # no 2x reference of seed 1: left out
    gains = gf.paired_gains(gf.load_runs(results)["profile-a"])
    assert gains["cps_2x"] == [(0, pytest.approx(7.0))]  # 81 - 74, not 81 - 70
    assert gains["labeled_only_2x"] == [(0, pytest.approx(4.0))]  # 74 - 70: how far the reference moved
    (panel,) = gf.panels(gf.load_runs(results))
    labels = dict(panel["methods"])
    assert labels["CPS (80 x 50 its; minus labeled-only at that budget)"] == [(0, pytest.approx(7.0))]
    assert labels["LabeledOnly (80 x 50 its)"] == [(0, pytest.approx(4.0))]


def test_fixmatchs_runs_are_labeled_by_the_loss_they_ran_with():
    """FixMatch's default became the paper's CE on 2026-12-05: runs of ``nnUNetTrainerFixMatch`` (all made before,
    with the soft Dice) and of ``_dice`` are labeled ``FixMatch_dice``, runs of ``_ce`` (the default under its name)
    ``FixMatch``; the budget is named where it differs from the reference's."""
    ref = "nnUNetTrainerLabeledOnly_40epochs_50its"
    assert gf.method_label("nnUNetTrainerFixMatch_40epochs_50its", ref) == "FixMatch_dice"
    assert gf.method_label("nnUNetTrainerFixMatch_dice_40epochs_50its", ref) == "FixMatch_dice"
    assert gf.method_label("nnUNetTrainerFixMatch_ce_40epochs_50its", ref) == "FixMatch"
    assert gf.method_label("nnUNetTrainerFixMatch_ce_80epochs_50its", ref) == "FixMatch (80 x 50 its)"
    assert gf.method_label("nnUNetTrainerCPS_dice_40epochs_50its", ref) == "CPS"
    # UniMatch's default became the CE on 2026-12-06: the same relabelling
    assert gf.method_label("nnUNetTrainerUniMatch_40epochs_50its", ref) == "UniMatch_dice"
    assert gf.method_label("nnUNetTrainerUniMatch_dice_40epochs_50its", ref) == "UniMatch_dice"
    assert gf.method_label("nnUNetTrainerUniMatch_ce_40epochs_50its", ref) == "UniMatch"


def test_self_training_runs_are_not_labeled_as_the_reference():
    """Self-training trains the reference's own trainer (two rounds): its row must not read ``LabeledOnly``."""
    ref = "nnUNetTrainerLabeledOnly_40epochs_50its"
    record = {"method": "self_training", "trainer": ref, "seed": 0}
    assert gf.run_label(record, ref) == "self-training (1 round of LabeledOnly)"
    assert gf.run_label({**record, "method": "labeled_only"}, ref) == "LabeledOnly"
