"""Shared fixtures: the real data in ../shared/data and nnU-Net environments in temporary folders.

Real-data tests fail (never skip) when ../shared/data is missing: CI has it.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
HIPPOCAMPUS = SHARED_DATA / "hippocampus" / "Task04_Hippocampus"
HIPPO_ID = 901
SMALL_PLANS = "nnUNetPlansSmall"


def require(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"real test data missing: {path} (expected ../shared/data beside the repository)")
    return path


def nnunet_bin(name: str) -> str:
    """Console scripts of the interpreter running the tests (the project's venv)."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        pytest.fail(f"{name} not found next to {sys.executable}: install the project with scripts/setup_env.sh")
    return str(path)


def make_env(root: Path) -> dict:
    """Environment for nnU-Net subprocesses rooted at ``root`` (raw / preprocessed / results), trainers found
    through the documented nnUNet_extTrainer set-up, single-process augmentation (deterministic, CPU)."""
    from nnunet_semi.cli import ext_trainer_value

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
    from nnunet_semi.utils.small_plans import make_small_plans

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
