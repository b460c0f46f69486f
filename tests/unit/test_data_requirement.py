"""A fresh clone without ../shared/data: the tests that need the real data (mark ``real_data``) are skipped (one line
per module, naming the data and NNUNET_SEMI_SHARED_DATA), the fixtures that need no particular dataset run on data
the project generates; on CI (CI=true), where the data is expected, both fail instead."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import (DATA_ENV, FIXTURE_COUNTS, GENERATED_SHAPE, GENERATED_SPACING, HIPPO_ID, HIPPOCAMPUS,
                            REAL_DATA_MARK, REPO, data_source, missing_data_decision, missing_data_message, on_ci,
                            shared_data_root)


def test_decision_runs_with_data_fails_on_ci_and_skips_elsewhere():
    for environ in ({}, {"CI": "true"}, {"CI": "1"}):
        assert missing_data_decision(True, environ) == "run"
    for value in ("true", "True", "1", "yes", "gitlab"):
        assert on_ci({"CI": value}) and missing_data_decision(False, {"CI": value}) == "fail"
    for environ in ({}, {"CI": ""}, {"CI": "false"}, {"CI": "0"}, {"CI": "no"}):
        assert not on_ci(environ) and missing_data_decision(False, environ) == "skip"


def test_fallback_reads_real_data_where_it_exists_and_generates_it_only_outside_ci(tmp_path):
    assert data_source(tmp_path, {}) == data_source(tmp_path, {"CI": "true"}) == "real"
    assert data_source(tmp_path / "missing", {"CI": "true"}) == "fail"
    assert data_source(tmp_path / "missing", {"CI": "false"}) == data_source(tmp_path / "missing", {}) == "generated"


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


#: modules with real-data tests (``-m real_data`` selects them: Hippocampus for one, ACDC for the other)
MODULES = ("tests/unit/test_msd_and_demo_data.py", "tests/unit/test_conversion_papers.py")
#: a module whose fixtures fall back to generated data: runs without the data outside CI, fails on CI
FALLBACK_MODULE = "tests/cli/test_genesis.py"


def _pytest(tmp_path, ci: str, *args: str):
    env = {**os.environ, DATA_ENV: str(tmp_path / "empty"), "CI": ci}
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rs", *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def _collected_per_module(tmp_path, modules, *extra: str) -> dict:
    """How many tests pytest collects in each module (``--collect-only``): the counts the skip lines must show,
    derived rather than written down, so that adding a test to a module does not break this one."""
    collected = _pytest(tmp_path, "", "--collect-only", *extra, *modules)
    assert collected.returncode == 0, collected.stdout[-3000:]
    counts = {module: 0 for module in modules}
    for line in collected.stdout.splitlines():
        module = line.split("::")[0]
        if "::" in line and module in counts:
            counts[module] += 1
    assert all(counts.values()), collected.stdout[-3000:]
    return counts


def test_missing_data_skips_one_line_per_module_outside_ci_and_fails_on_ci(tmp_path):
    counts = _collected_per_module(tmp_path, MODULES, "-m", REAL_DATA_MARK)
    total = sum(counts.values())
    skipped = _pytest(tmp_path, "", "-m", REAL_DATA_MARK, *MODULES)
    assert skipped.returncode == 0, skipped.stdout[-3000:]
    lines = [line for line in skipped.stdout.splitlines() if line.startswith("SKIPPED")]
    assert len(lines) == len(MODULES), skipped.stdout[-3000:]
    for line, module, data in zip(lines, MODULES, ("hippocampus/Task04_Hippocampus", "acdc_h5")):
        assert re.match(rf"SKIPPED \[{counts[module]}\] tests/conftest\.py:\d+: {re.escape(module)} needs real test "
                        rf"data {data} under {re.escape(str(tmp_path / 'empty'))}", line), line
    assert re.search(rf"\b{total} skipped\b", skipped.stdout) and " passed" not in skipped.stdout
    failed = _pytest(tmp_path, "true", "-m", REAL_DATA_MARK, *MODULES)
    assert failed.returncode == 1 and re.search(rf"\b{total} (failed|errors?)\b", failed.stdout), \
        failed.stdout[-3000:]
    assert "CI is set, so this fails" in failed.stdout and "skipped" not in failed.stdout.splitlines()[-1]


def test_generated_fallback_fails_on_ci_without_the_data(tmp_path):
    """On CI the fixtures with a generated fallback fail as the real-data tests do (before building anything)."""
    total = _collected_per_module(tmp_path, (FALLBACK_MODULE,))[FALLBACK_MODULE]
    failed = _pytest(tmp_path, "true", FALLBACK_MODULE)
    assert failed.returncode == 1 and re.search(rf"\b{total} (failed|errors?)\b", failed.stdout), \
        failed.stdout[-3000:]
    assert failed.stdout.count(f"{FALLBACK_MODULE} needs real test data hippocampus/Task04_Hippocampus") >= 1
    assert "CI is set, so this fails" in failed.stdout and " passed" not in failed.stdout.splitlines()[-1]


def _plan(raw_root: Path, root: Path) -> dict:
    env = {**os.environ, "nnUNet_raw": str(raw_root), "nnUNet_preprocessed": str(root / "preprocessed"),
           "nnUNet_results": str(root / "results")}
    for command in (["nnUNetv2_extract_fingerprint", "-d", str(HIPPO_ID), "-np", "1"],
                    ["nnUNetv2_plan_experiment", "-d", str(HIPPO_ID)]):
        proc = subprocess.run([str(Path(sys.executable).parent / command[0]), *command[1:]], env=env,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (plans_file,) = (root / "preprocessed").glob("Dataset*/nnUNetPlans.json")
    return json.loads(plans_file.read_text())


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """The data hippocampus_nnunet generates without the real data, and nnU-Net's plans for it."""
    from nnunet_semi.apps.demo_data import generate_demo_dataset

    root = tmp_path_factory.mktemp("generated")
    raw = Path(generate_demo_dataset(str(root / "raw"), HIPPO_ID, seed=0, shape=GENERATED_SHAPE,
                                     spacing=GENERATED_SPACING, **FIXTURE_COUNTS))
    return raw, _plan(raw.parent, root)


def test_generated_stand_in_has_the_fixtures_layout_split_and_plans(generated):
    """The real fixture's folders, counts and one-fold split; nnU-Net's plans are those the tests name (2d patch
    56 x 40, 3d_fullres 40 x 56 x 40, 4 stages, 1 mm)."""
    raw, plans = generated
    assert raw.name == f"Dataset{HIPPO_ID}_SemiDemo"
    counts = {folder: len(list((raw / folder).glob("*.nii.gz")))
              for folder in ("imagesTr", "labelsTr", "imagesTs", "labelsTs", "imagesUnlabeled")}
    labeled, val = FIXTURE_COUNTS["num_labeled"], FIXTURE_COUNTS["num_val"]
    assert counts == {"imagesTr": labeled + val, "labelsTr": labeled + val, "imagesTs": FIXTURE_COUNTS["num_test"],
                      "labelsTs": FIXTURE_COUNTS["num_test"], "imagesUnlabeled": FIXTURE_COUNTS["num_unlabeled"]}
    (fold,) = json.loads((raw / "splits_final.json").read_text())
    assert (len(fold["train"]), len(fold["val"])) == (labeled, val) and not set(fold["train"]) & set(fold["val"])
    assert sorted(fold["train"] + fold["val"]) == sorted(p.name[:-len(".nii.gz")] for p in (raw / "labelsTr").iterdir())
    dataset_json = json.loads((raw / "dataset.json").read_text())
    assert dataset_json["labels"] == {"background": 0, "organ": 1, "core": 2}  # two foreground labels, as Hippocampus
    configurations = plans["configurations"]
    assert configurations["2d"]["patch_size"] == [56, 40] and configurations["3d_fullres"]["patch_size"] == [40, 56, 40]
    assert configurations["3d_fullres"]["spacing"] == [1.0, 1.0, 1.0]
    assert all(configurations[c]["architecture"]["arch_kwargs"]["n_stages"] == 4 for c in ("2d", "3d_fullres"))


@pytest.mark.real_data(HIPPOCAMPUS)
def test_generated_stand_in_is_planned_as_the_real_fixture(generated, tmp_path):
    """nnU-Net plans the generated data exactly as the real fixture's (every configuration: patch, spacing, network,
    batch size), so the tests' shapes hold on both."""
    from dataset_conversion.msd import convert_msd_semi

    _, plans = generated
    raw = Path(convert_msd_semi(str(HIPPOCAMPUS), HIPPO_ID, seed=0, output_root=str(tmp_path / "raw"),
                                **FIXTURE_COUNTS))
    real = _plan(raw.parent, tmp_path)
    assert plans["configurations"].keys() == real["configurations"].keys()
    for name, configuration in real["configurations"].items():
        assert plans["configurations"][name] == configuration, name
    assert plans["transpose_forward"] == real["transpose_forward"]
    assert plans["original_median_spacing_after_transp"] == real["original_median_spacing_after_transp"]
