"""Shared fixtures: the real data in ../shared/data and nnU-Net environments in temporary folders.

The real data is ``../shared/data`` beside the repository, or the folder named by ``NNUNET_SEMI_SHARED_DATA`` (as
for the benchmarks). Where it is missing, real-data tests FAIL on CI (``CI`` set, as CI services do: CI has the data)
and are skipped elsewhere (a fresh clone), with one line per test module saying which data it needs and how to point
the suite at it (:func:`require`).
"""
import os
import subprocess
import sys
from pathlib import Path
from typing import Mapping

import pytest

from nnunet_semi.utils.commands import command_beside_interpreter

REPO = Path(__file__).resolve().parents[1]
DATA_ENV = "NNUNET_SEMI_SHARED_DATA"


def shared_data_root(environ: Mapping[str, str] = os.environ) -> Path:
    """``$NNUNET_SEMI_SHARED_DATA`` if set (and not empty), else ``../shared/data`` beside the repository."""
    return Path(environ.get(DATA_ENV) or REPO.parent / "shared" / "data")


SHARED_DATA = shared_data_root()
HIPPOCAMPUS = SHARED_DATA / "hippocampus" / "Task04_Hippocampus"
ACDC_H5 = SHARED_DATA / "acdc_h5"
HIPPO_ID = 901
SMALL_PLANS = "nnUNetPlansSmall"
#: fixtures (here and in test modules) that need real data, checked before any fixture runs: a skip raised inside a
#: fixture is reported once per test, and a session fixture would repeat its first module's message for all others
DATA_FIXTURES = {"hippocampus_nnunet": HIPPOCAMPUS, "unlabeled_preprocessed": HIPPOCAMPUS, "msd_source": HIPPOCAMPUS,
                 "planned": HIPPOCAMPUS, "acdc_h5": ACDC_H5}


def on_ci(environ: Mapping[str, str] = os.environ) -> bool:
    """``CI`` set to anything but empty, ``0``, ``false`` or ``no`` (GitHub Actions, GitLab CI, ... set CI=true)."""
    return environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def missing_data_decision(exists: bool, environ: Mapping[str, str] = os.environ) -> str:
    """What a real-data test does: ``'run'`` when its data exists, else ``'fail'`` on CI and ``'skip'`` elsewhere."""
    return "run" if exists else "fail" if on_ci(environ) else "skip"


def missing_data_message(path: Path, module: str, environ: Mapping[str, str] = os.environ) -> str:
    """One line: which module needs which data, and how to point the suite at it."""
    root = shared_data_root(environ)
    needed = Path(path).relative_to(root) if Path(path).is_relative_to(root) else Path(path)
    return (f"{module} needs real test data {needed} under {root}, which is missing: put ../shared/data beside "
            f"the repository or set {DATA_ENV}=<folder holding {needed}> (shared/data/README.md); "
            f"{'CI is set, so this fails' if on_ci(environ) else 'skipped because CI is not set'}")


def require(path: Path, module: str = None) -> Path:
    """``path`` if it exists; else the test fails (CI) or is skipped (elsewhere) with :func:`missing_data_message`.
    ``module`` names the test module in the message (default: the running test's, from pytest)."""
    path = Path(path)
    decision = missing_data_decision(path.exists())
    if decision == "run":
        return path
    module = module or os.environ.get("PYTEST_CURRENT_TEST", "this test").split("::")[0]
    message = missing_data_message(path, module)
    if decision == "fail":
        pytest.fail(message)
    pytest.skip(message)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    for path in {DATA_FIXTURES[name] for name in item.fixturenames if name in DATA_FIXTURES}:
        require(path, item.nodeid.split("::")[0])


def nnunet_bin(name: str) -> str:
    """Console scripts of the interpreter running the tests (the project's venv)."""
    path = command_beside_interpreter(name)
    if path is None:
        pytest.fail(f"{name} not found next to {sys.executable}: install the project with scripts/setup_env.sh")
    return path


def make_env(root: Path) -> dict:
    """Environment for nnU-Net subprocesses rooted at ``root`` (raw / preprocessed / results), trainers found
    through the documented nnUNet_extTrainer set-up, single-process augmentation (deterministic, CPU)."""
    from nnunet_semi.apps.ext_trainer import ext_trainer_value

    env = dict(os.environ)
    for var, sub in (("nnUNet_raw", "raw"), ("nnUNet_preprocessed", "preprocessed"), ("nnUNet_results", "results")):
        (root / sub).mkdir(parents=True, exist_ok=True)
        env[var] = str(root / sub)
    env["nnUNet_extTrainer"] = ext_trainer_value(None)
    env["nnUNet_def_n_proc"] = "2"
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("nnUNet_n_proc_DA", None)
    return env


def train_env(env: dict) -> dict:
    # nnUNet_n_proc_DA=0 crashes nnUNetv2_plan_and_preprocess, so it is set for training / prediction only
    return {**env, "nnUNet_n_proc_DA": "0"}


def seeded_env(env: dict, seed: int) -> dict:
    """A reproducible training: seeded, single-process augmentation and one torch thread. With one intra-op thread
    every reduction (GEMM, convolution weight gradients, sums) runs in one fixed order, so two runs, or a run and
    its ``--c`` continuation, are bit-identical by construction, whatever else loads the machine (with several
    threads the split of a reduction across threads is part of the result)."""
    return {**train_env(env), "nnUNet_semi_seed": str(seed), "nnUNet_semi_threads": "1"}


def run(cmd, env, timeout=1800, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], env=env, capture_output=True, text=True, timeout=timeout, **kwargs)
    if proc.returncode != 0:
        pytest.fail(f"command failed ({proc.returncode}): {' '.join(map(str, cmd))}\n--- stdout (tail)\n"
                    f"{proc.stdout[-4000:]}\n--- stderr (tail)\n{proc.stderr[-4000:]}")
    return proc


@pytest.fixture(scope="session")
def hippocampus_nnunet(tmp_path_factory):
    """Hippocampus (MSD task 4, real data) as nnU-Net dataset 901: 8 labeled + 5 validation cases in imagesTr,
    10 labeled test cases in imagesTs/labelsTs, 40 unlabeled images (rest of the pool + MSD imagesTs);
    planned and preprocessed by nnU-Net (2d and 3d_fullres), plus small CPU plans ``nnUNetPlansSmall``
    (8..64 features; batch 8 in 2d, 2 in 3d_fullres)."""
    from dataset_conversion.msd import convert_msd_semi
    from nnunet_semi.apps.small_plans import make_small_plans

    root = tmp_path_factory.mktemp("hippocampus")
    env = make_env(root)
    raw = Path(convert_msd_semi(str(require(HIPPOCAMPUS)), HIPPO_ID, num_labeled=8, num_val=5, num_test=10,
                                num_unlabeled=40, seed=0, output_root=env["nnUNet_raw"]))
    run([nnunet_bin("nnUNetv2_plan_and_preprocess"), "-d", HIPPO_ID, "-c", "2d", "3d_fullres", "-np", "2",
         "-npfp", "2"], env)
    make_small_plans(raw.name, target_plans=SMALL_PLANS, base_features=8, max_features=64,
                     batch_size={"2d": 8, "3d_fullres": 2}, preprocessed_root=env["nnUNet_preprocessed"])
    return {"root": root, "env": env, "raw": raw, "dataset": raw.name}


@pytest.fixture(scope="session")
def unlabeled_preprocessed(hippocampus_nnunet):
    """``prepare(configuration)``: the unlabeled images preprocessed once per session and configuration with
    ``nnunet_semi_preprocess_unlabeled``, before any training that reads them, so that a reference run and its
    interrupted + resumed twin do the same work."""
    done = set()

    def prepare(configuration: str = "2d") -> None:
        if configuration not in done:
            run([nnunet_bin("nnunet_semi_preprocess_unlabeled"), "-d", HIPPO_ID, "-c", configuration, "-p",
                 SMALL_PLANS, "-np", "2"], hippocampus_nnunet["env"])
            done.add(configuration)

    return prepare
