"""``python -m benchmarks.cost --output STEM``: a later measurement goes to ``STEM.md`` / ``STEM.json`` beside the
committed ``cost.md`` (whose reading is hand-written below the table) and names the command that made it."""
import json
import subprocess

import pytest

import benchmarks.cost as cost


def _fake_worker(cmd, **kwargs):
    trainer = cmd[cmd.index("--trainer") + 1]
    seconds = 0.2 if trainer == "nnUNetTrainerLabeledOnly" else 0.5
    row = {"trainer": trainer, "batch_labeled": 32, "batch_unlabeled": 0 if "Labeled" in trainer else 32,
           "s_per_it": seconds, "compute_s_per_it": seconds - 0.05, "load_s_per_it": 0.05,
           "flops_per_it": 15e9 if "Labeled" in trainer else 45e9, "peak_memory_gb": 1.0, "parameters": 480000}
    return subprocess.CompletedProcess(cmd, 0, stdout="COST " + json.dumps(row) + "\n", stderr="")


def test_output_stem_keeps_the_committed_table(tmp_path, monkeypatch):
    monkeypatch.setattr(cost, "RESULTS", tmp_path)
    monkeypatch.setattr(cost.Runner, "prepare", lambda self: None)
    monkeypatch.setattr(cost.subprocess, "run", _fake_worker)
    (tmp_path / "hippocampus5-cpu").mkdir()
    committed = tmp_path / "hippocampus5-cpu" / "cost.md"
    committed.write_text("# Cost\n\n| table |\n\nReading written by hand.\n")
    argv = ["--profile", "hippocampus5-cpu", "--methods", "labeled_only", "unimatch_ce", "--pretraining",
            "--output", "cost_unimatch", "--work", str(tmp_path / "work")]
    cost.main(argv)
    assert committed.read_text() == "# Cost\n\n| table |\n\nReading written by hand.\n"
    md = (tmp_path / "hippocampus5-cpu" / "cost_unimatch.md").read_text()
    assert "`python -m benchmarks.cost --profile hippocampus5-cpu --methods labeled_only unimatch_ce" in md
    row = next(line for line in md.splitlines() if line.startswith("| unimatch_ce |"))
    assert "| 2.50 | 3.00 | 0.83 |" in row  # time ratio 0.5 / 0.2, FLOP ratio 45 / 15, their quotient
    rows = json.loads((tmp_path / "hippocampus5-cpu" / "cost_unimatch.json").read_text())["rows"]
    assert [r["method"] for r in rows] == ["labeled_only", "unimatch_ce"]
    with pytest.raises(SystemExit):
        cost.main(["--profile", "hippocampus5-cpu", "--output", "../cost"])
