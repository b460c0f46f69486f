"""Real-data tests on a fresh clone without ../shared/data: skipped (one line per module, naming the data and
NNUNET_SEMI_SHARED_DATA), but failed on CI (CI=true), where the data is expected."""
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import (DATA_ENV, REPO, missing_data_decision, missing_data_message, on_ci,
                            shared_data_root)


def test_decision_runs_with_data_fails_on_ci_and_skips_elsewhere():
    for environ in ({}, {"CI": "true"}, {"CI": "1"}):
        assert missing_data_decision(True, environ) == "run"
    for value in ("true", "True", "1", "yes", "gitlab"):
        assert on_ci({"CI": value}) and missing_data_decision(False, {"CI": value}) == "fail"
    for environ in ({}, {"CI": ""}, {"CI": "false"}, {"CI": "0"}, {"CI": "no"}):
        assert not on_ci(environ) and missing_data_decision(False, environ) == "skip"


def test_data_root_comes_from_the_environment_variable():
    assert shared_data_root({}) == REPO.parent / "shared" / "data"
    assert shared_data_root({DATA_ENV: ""}) == REPO.parent / "shared" / "data"
    assert shared_data_root({DATA_ENV: "/data/nnunet-semi"}) == Path("/data/nnunet-semi")


def test_message_names_module_data_and_how_to_point_the_suite_at_it():
    environ = {DATA_ENV: "/nowhere"}
    message = missing_data_message(Path("/nowhere/hippocampus/Task04_Hippocampus"), "tests/cli/test_ccm.py", environ)
    assert message.startswith("tests/cli/test_ccm.py needs real test data hippocampus/Task04_Hippocampus under "
                              "/nowhere, which is missing")
    assert f"{DATA_ENV}=<folder holding hippocampus/Task04_Hippocampus>" in message and "\n" not in message
    assert message.endswith("skipped because CI is not set")
    assert missing_data_message(Path("/nowhere/acdc_h5"), "m", {**environ, "CI": "true"}).endswith(
        "CI is set, so this fails")


MODULES = ("tests/cli/test_ccm.py", "tests/cli/test_genesis.py")


def _pytest(tmp_path, ci: str, *extra: str):
    env = {**os.environ, DATA_ENV: str(tmp_path / "empty"), "CI": ci}
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rs", *extra, *MODULES],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def _collected_per_module(tmp_path) -> dict:
    """How many tests pytest collects in each module (``--collect-only``): the counts the skip lines must show,
    derived rather than written down, so that adding a test to either module does not break this one."""
    collected = _pytest(tmp_path, "", "--collect-only")
    assert collected.returncode == 0, collected.stdout[-3000:]
    counts = {module: 0 for module in MODULES}
    for line in collected.stdout.splitlines():
        module = line.split("::")[0]
        if "::" in line and module in counts:
            counts[module] += 1
    assert all(counts.values()), collected.stdout[-3000:]
    return counts


def test_missing_data_skips_one_line_per_module_outside_ci_and_fails_on_ci(tmp_path):
    counts = _collected_per_module(tmp_path)
    total = sum(counts.values())
    skipped = _pytest(tmp_path, ci="")
    assert skipped.returncode == 0, skipped.stdout[-3000:]
    lines = [line for line in skipped.stdout.splitlines() if line.startswith("SKIPPED")]
    assert len(lines) == len(MODULES), skipped.stdout[-3000:]
    for line, module in zip(lines, MODULES):
        assert re.match(rf"SKIPPED \[{counts[module]}\] tests/conftest\.py:\d+: {re.escape(module)} needs real test "
                        rf"data hippocampus/Task04_Hippocampus under {re.escape(str(tmp_path / 'empty'))}", line), line
    assert re.search(rf"\b{total} skipped\b", skipped.stdout)
    failed = _pytest(tmp_path, ci="true")
    assert failed.returncode == 1 and re.search(rf"\b{total} (failed|errors?)\b", failed.stdout), \
        failed.stdout[-3000:]
    assert "CI is set, so this fails" in failed.stdout and "skipped" not in failed.stdout.splitlines()[-1]
