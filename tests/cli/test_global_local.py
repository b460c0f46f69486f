"""Global + local contrastive pretraining (``-m globallocal``) on real data (Hippocampus, 2d, small plans) through
the command, and nnUNetTrainerPLContrastPI starting from it (Chaitanya et al. 2023, Table III "PI.")."""
import math
import os

import pytest
import torch
from batchgenerators.utilities.file_and_folder_operations import join, load_json

from tests.conftest import HIPPO_ID, SMALL_PLANS, nnunet_bin, run, train_env

EPOCHS = 4  # 2 global (encoder) + 2 local (decoder, encoder frozen)
ITERS = 6


@pytest.fixture(scope="module")
def globallocal_checkpoint(hippocampus_nnunet):
    env = {**train_env(hippocampus_nnunet["env"]), "nnUNet_semi_seed": "0"}
    proc = run([nnunet_bin("nnunet_semi_pretrain"), "-d", HIPPO_ID, "-c", "2d", "-p", SMALL_PLANS, "-m",
                "globallocal", "-device", "cpu", "--epochs", EPOCHS, "--iters-per-epoch", ITERS, "--batch-size", 8],
               env)
    path = proc.stdout.strip().splitlines()[-1]
    assert path.endswith(join(f"GlobalLocalPretrain__{SMALL_PLANS}__2d", "fold_0", "checkpoint_final.pth"))
    return path


def test_globallocal_pretraining_lowers_both_losses(globallocal_checkpoint):
    checkpoint = torch.load(globallocal_checkpoint, map_location="cpu", weights_only=True)
    history = checkpoint["history"]
    settings = checkpoint["pretraining"]
    assert settings["global_epochs"] == 2 and settings["temperature"] == 0.1 and settings["region_size"] == 3
    assert settings["local_stage"] == 0  # small 2d plans: decoder stage 0 is at 1/4 of the input resolution
    l_g, l_l = history["L_g"], history["L_l"]
    print(f"globallocal pretraining: L_g {l_g[:2]}, L_l {l_l[2:]}")
    assert all(math.isfinite(v) for v in l_g[:2] + l_l[2:])
    assert all(math.isnan(v) for v in l_g[2:] + l_l[:2])  # one stage at a time
    assert l_g[1] < l_g[0] and l_l[3] < l_l[2]
    # the learning rate restarts with the local stage
    assert history["lr"][0] == history["lr"][2] == pytest.approx(1e-3) and history["lr"][1] < 1e-3
    assert {k.split(".")[0] for k in checkpoint["network_weights"]} == {"encoder", "decoder"}
    assert os.path.isfile(os.path.join(os.path.dirname(globallocal_checkpoint), "progress.png"))


def test_pi_trainer_starts_from_the_pretraining(hippocampus_nnunet, globallocal_checkpoint, monkeypatch):
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(var, hippocampus_nnunet["env"][var])
    from nnunet_semi.training.pl_contrast import nnUNetTrainerPLContrastPI

    pre = join(hippocampus_nnunet["env"]["nnUNet_preprocessed"], hippocampus_nnunet["dataset"])
    plans = {**load_json(join(pre, SMALL_PLANS + ".json")), "continue_training": False}
    trainer = nnUNetTrainerPLContrastPI(plans, "2d", 0, load_json(join(pre, "dataset.json")),
                                        device=torch.device("cpu"))
    assert trainer.pretrained_checkpoint() == globallocal_checkpoint  # found by convention
    trainer.initialize()
    pretrained = torch.load(globallocal_checkpoint, map_location="cpu", weights_only=True)["network_weights"]
    state = trainer.network.state_dict()
    fresh = [k for k in state if ".seg_layers." in k or k.startswith("contrastive_head.")]
    assert any(k.startswith("contrastive_head.") for k in fresh)
    loaded = [k for k in state if k not in fresh]
    assert any(k.startswith("encoder.") for k in loaded) and any(k.startswith("decoder.stages.") for k in loaded)
    for key in loaded:
        assert torch.equal(state[key], pretrained[key]), key
