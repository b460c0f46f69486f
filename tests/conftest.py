"""Shared fixtures: the real data in ../shared/data, a generated stand-in for it, and nnU-Net environments in
temporary folders.

The real data is ``../shared/data`` beside the repository, or the folder named by ``NNUNET_SEMI_SHARED_DATA`` (as
for the benchmarks). Where it is missing (a fresh clone), the fixtures that need no particular dataset
(``hippocampus_nnunet``, ``unlabeled_preprocessed``: trainers end to end, resume, DDP, pretraining, the toolbox)
build the same layout from the project's demo generator instead (:data:`FALLBACK_FIXTURES`), and only the tests
that need the real data itself (a Dice floor measured on it, a converter reading a real release: marked
``real_data``, :data:`DATA_FIXTURES`) are skipped, with one line per test module saying which data they need and how
to point the suite at it (:func:`require`). On CI (``CI`` set, as CI services do: CI has the data) missing data FAILS
every one of these tests instead, generated fallback included.
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
#: fixtures (here and in test modules) that need real data whatever happens (a converter reading the real release),
#: checked before any fixture runs: a skip raised inside a fixture is reported once per test, and a session fixture
#: would repeat its first module's message for all others. Their tests get the ``real_data`` mark.
DATA_FIXTURES = {"msd_source": HIPPOCAMPUS, "acdc_h5": ACDC_H5}
#: fixtures that read the real data where it exists and otherwise, outside CI, data the project generates (same
#: layout, counts and planned geometry); on CI missing data fails their tests, as for DATA_FIXTURES
FALLBACK_FIXTURES = {"hippocampus_nnunet": HIPPOCAMPUS, "unlabeled_preprocessed": HIPPOCAMPUS, "planned": HIPPOCAMPUS}
#: ``@pytest.mark.real_data(path)``: the test needs this real data (e.g. a Dice floor measured on it)
REAL_DATA_MARK = "real_data"
#: the generated stand-in for the Hippocampus fixture: the demo generator's volumes with Hippocampus's median
#: geometry after cropping (36 x 50 x 35 voxels of 1 mm), so that nnU-Net plans the same configurations (2d patch
#: 56 x 40, 3d_fullres 40 x 56 x 40, 4 stages) and every shape a test names holds on both
GENERATED_SHAPE = (36, 50, 35)
GENERATED_SPACING = (1.0, 1.0, 1.0)
#: the fixture's split: labeled training, validation (fold 0 of splits_final.json), test and unlabeled cases
FIXTURE_COUNTS = {"num_labeled": 8, "num_val": 5, "num_test": 10, "num_unlabeled": 40}


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


def data_source(path: Path, environ: Mapping[str, str] = os.environ) -> str:
    """Where a fixture with a generated fallback reads its data: ``'real'`` when ``path`` exists, else ``'fail'`` on
    CI (the data is expected there) and ``'generated'`` elsewhere."""
    return {"run": "real", "fail": "fail", "skip": "generated"}[missing_data_decision(Path(path).exists(), environ)]


def pytest_configure(config):
    config.addinivalue_line("markers", f"{REAL_DATA_MARK}(path): the test needs this real data (a Dice floor "
                                       f"measured on it, a converter's real release); skipped without it outside CI, "
                                       f"failed on CI")


def pytest_collection_modifyitems(config, items):
    # one mark for every real-data test, so that ``-m real_data`` selects them all (tests/unit/test_data_requirement)
    for item in items:
        for path in sorted({str(DATA_FIXTURES[name]) for name in item.fixturenames if name in DATA_FIXTURES}):
            item.add_marker(getattr(pytest.mark, REAL_DATA_MARK)(Path(path)))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    module = item.nodeid.split("::")[0]
    for path in {Path(mark.args[0]) for mark in item.iter_markers(REAL_DATA_MARK)}:
        require(path, module)
    for path in {FALLBACK_FIXTURES[name] for name in item.fixturenames if name in FALLBACK_FIXTURES}:
        if data_source(path) == "fail":
            require(path, module)


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
    # nnU-Net's validation and nnUNetv2_evaluate_folder start nnUNet_def_n_proc worker processes (spawn), each
    # importing torch and nnU-Net (~10 s of CPU); for the tests' few small cases one worker is enough: measured
    # 2026-12-07 on this 2-core machine, a 2 x 5 training's validation took 146 s with 1 worker, 223-238 s with 2
    # and 561 s with nnU-Net's default 8 (two benchmark chains beside it)
    env["nnUNet_def_n_proc"] = "1"
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
    """Hippocampus (MSD task 4, real data) as nnU-Net dataset 901: 8 labeled + 5 validation cases in imagesTr (fold 0
    of splits_final.json), 10 labeled test cases in imagesTs/labelsTs, 40 unlabeled images (rest of the pool + MSD
    imagesTs); planned and preprocessed by nnU-Net (2d and 3d_fullres), plus small CPU plans ``nnUNetPlansSmall``
    (8..64 features; batch 8 in 2d, 2 in 3d_fullres).

    Without the real data (outside CI): the same from the demo generator (``Dataset901_SemiDemo``, the same counts
    and split, two foreground labels, :data:`GENERATED_SHAPE` volumes of 1 mm so that the plans are Hippocampus's).
    ``source`` says which: ``'real'`` or ``'generated'``."""
    from dataset_conversion.msd import convert_msd_semi
    from nnunet_semi.apps.demo_data import generate_demo_dataset
    from nnunet_semi.apps.small_plans import make_small_plans

    source = data_source(HIPPOCAMPUS)
    if source == "fail":  # pytest_runtest_setup fails first; kept for a direct call
        require(HIPPOCAMPUS)
    root = tmp_path_factory.mktemp("hippocampus" if source == "real" else "generated901")
    env = make_env(root)
    if source == "real":
        raw = Path(convert_msd_semi(str(HIPPOCAMPUS), HIPPO_ID, seed=0, output_root=env["nnUNet_raw"],
                                    **FIXTURE_COUNTS))
    else:
        raw = Path(generate_demo_dataset(env["nnUNet_raw"], HIPPO_ID, seed=0, shape=GENERATED_SHAPE,
                                         spacing=GENERATED_SPACING, **FIXTURE_COUNTS))
    run([nnunet_bin("nnUNetv2_plan_and_preprocess"), "-d", HIPPO_ID, "-c", "2d", "3d_fullres", "-np", "2",
         "-npfp", "2"], env)
    make_small_plans(raw.name, target_plans=SMALL_PLANS, base_features=8, max_features=64,
                     batch_size={"2d": 8, "3d_fullres": 2}, preprocessed_root=env["nnUNet_preprocessed"])
    return {"root": root, "env": env, "raw": raw, "dataset": raw.name, "source": source}


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
