"""Small pieces: small CPU plans, budget variants, the nnUNet_extTrainer shim, the logger extension."""
import importlib.util
import os
import pickle
from pathlib import Path

import pytest

from nnunet_semi import ext_trainer_dir
from nnunet_semi.apps.ext_trainer import ext_trainer_value
from nnunet_semi.training import TRAINERS
from nnunet_semi.apps.small_plans import shrink_configuration

CONFIG = {"patch_size": [40, 56, 40], "batch_size": 2,
          "architecture": {"arch_kwargs": {"n_stages": 4, "features_per_stage": [32, 64, 128, 256],
                                           "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]]}}}


def test_shrink_configuration():
    small = shrink_configuration(CONFIG, 8, 32, 4, [32, 48, 32])
    assert small["architecture"]["arch_kwargs"]["features_per_stage"] == [8, 16, 32, 32]
    assert small["batch_size"] == 4 and small["patch_size"] == [32, 48, 32]
    assert CONFIG["architecture"]["arch_kwargs"]["features_per_stage"] == [32, 64, 128, 256]  # copy
    with pytest.raises(ValueError, match="divisible by"):
        shrink_configuration(CONFIG, 8, 32, None, [30, 48, 32])
    with pytest.raises(ValueError, match="axes"):
        shrink_configuration(CONFIG, 8, 32, None, [32, 48])


def test_shrink_configuration_to_a_coarser_spacing():
    config = {**CONFIG, "spacing": [1.0, 0.7, 0.7], "median_image_size_in_voxels": [40.0, 60.0, 42.0],
              "data_identifier": "nnUNetPlans_3d_fullres"}
    low = shrink_configuration(config, 8, 32, None, None, spacing_factor=2.0)
    assert low["spacing"] == [2.0, 1.4, 1.4] and low["median_image_size_in_voxels"] == [20.0, 30.0, 21.0]
    assert low["patch_size"] == [24, 32, 24]  # 40 / 2 = 20 -> 24 and 56 / 2 = 28 -> 32 (strides: multiples of 8)
    assert low["data_identifier"] == "nnUNetPlans_3d_fullres_spacing_x2"  # new data: preprocess for these plans
    assert shrink_configuration(config, 8, 32, None, None)["data_identifier"] == "nnUNetPlans_3d_fullres"
    with pytest.raises(ValueError, match="spacing_factor"):
        shrink_configuration(config, 8, 32, None, None, spacing_factor=-1.0)


def test_budget_variants_and_shim():
    from nnunet_semi.training.budgets import CPU_BUDGETS, GPU_EPOCHS

    for base in ("nnUNetTrainerCPS", "nnUNetTrainerCCMCPS"):
        for epochs in GPU_EPOCHS:
            assert f"{base}_{epochs}epochs" in TRAINERS
        for epochs, iters in CPU_BUDGETS:
            cls = TRAINERS[f"{base}_{epochs}epochs_{iters}its"]
            assert issubclass(cls, TRAINERS[base])
            assert pickle.loads(pickle.dumps(cls)) is cls  # real module, picklable
    # the shim re-exports exactly these classes (same objects, defined nowhere else)
    spec = importlib.util.spec_from_file_location("shim_under_test",
                                                  Path(ext_trainer_dir()) / "nnunet_semi_trainers.py")
    shim = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(shim)
    for name, cls in TRAINERS.items():
        assert getattr(shim, name) is cls and cls.__module__.startswith("nnunet_semi.training.")


def test_star_import_exports_every_base_trainer():
    """``from nnunet_semi.training import *`` gives every suffix-free trainer of TRAINERS (the paired-CPS, FixMatch
    and UniMatch families are registered only through their variant dicts) and nothing that is not defined."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    namespace = {}
    exec("from nnunet_semi.training import *", namespace)
    bases = {name for name in TRAINERS if "_" not in name}
    assert {"nnUNetTrainerGenesisCPS", "nnUNetTrainerFixMatch", "nnUNetTrainerUniMatch"} <= bases
    for name in bases:
        assert namespace[name] is TRAINERS[name] and issubclass(namespace[name], nnUNetTrainer)
    assert namespace["TRAINERS"] is TRAINERS


def test_ext_trainer_value_appends_once():
    ours = ext_trainer_dir()
    assert ext_trainer_value(None) == ours
    assert ext_trainer_value("/a") == f"/a{os.pathsep}{ours}"
    assert ext_trainer_value(f"/a{os.pathsep}{ours}") == f"/a{os.pathsep}{ours}"
