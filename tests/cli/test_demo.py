"""The README's demo command, end to end on the generated dataset (with a 10-iteration trainer to stay quick)."""
import json
import re

from tests.conftest import make_env, nnunet_bin, run


def test_demo_runs_end_to_end_and_prints_the_dice_table(tmp_path):
    env = make_env(tmp_path / "unused")  # the demo sets its own nnU-Net folders inside --work
    work = tmp_path / "demo"
    proc = run([nnunet_bin("nnunet_semi_demo"), "--work", work, "--trainer", "nnUNetTrainerCPS_2epochs_5its"], env)
    summary = json.loads((work / "predictions" / "summary.json").read_text())
    assert len(summary["metric_per_case"]) == 8  # every generated test case predicted and evaluated
    table = proc.stdout[proc.stdout.index("Test-set Dice"):]
    for name in ("organ (label 1)", "core (label 2)", "mean foreground"):
        assert re.search(rf"\| {re.escape(name)} \| \d\.\d{{4}} \|", table), table
    assert f"| mean foreground | {summary['foreground_mean']['Dice']:.4f} |" in table
