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


def _pytest(tmp_path, ci: str):
    env = {**os.environ, DATA_ENV: str(tmp_path / "empty"), "CI": ci}
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rs",
                           "tests/cli/test_ccm.py", "tests/cli/test_genesis.py"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)


def test_missing_data_skips_one_line_per_module_outside_ci_and_fails_on_ci(tmp_path):
    skipped = _pytest(tmp_path, ci="")
    assert skipped.returncode == 0, skipped.stdout[-3000:]
    lines = [line for line in skipped.stdout.splitlines() if line.startswith("SKIPPED")]
    assert len(lines) == 2, skipped.stdout[-3000:]
    for line, module, count in zip(lines, ("tests/cli/test_ccm.py", "tests/cli/test_genesis.py"), (6, 3)):
        assert re.match(rf"SKIPPED \[{count}\] tests/conftest\.py:\d+: {re.escape(module)} needs real test data "
                        rf"hippocampus/Task04_Hippocampus under {re.escape(str(tmp_path / 'empty'))}", line), line
    assert re.search(r"\b9 skipped\b", skipped.stdout)
    failed = _pytest(tmp_path, ci="true")
    assert failed.returncode == 1 and re.search(r"\b9 (failed|errors?)\b", failed.stdout), failed.stdout[-3000:]
    assert "CI is set, so this fails" in failed.stdout and "skipped" not in failed.stdout.splitlines()[-1]
