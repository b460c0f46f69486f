"""Models Genesis pretraining on real data (Hippocampus, 2d, small plans) through the command, then nnU-Net's own
``nnUNetv2_train -pretrained_weights`` loader: exactly the pretrained tensors except the segmentation heads land in
nnU-Net's planned network."""
import os
import sys

import pytest
import torch
from batchgenerators.utilities.file_and_folder_operations import join, load_json

from tests.conftest import HIPPO_ID, SMALL_PLANS, nnunet_bin, run, train_env

EPOCHS = 4
ITERS = 6

# nnUNetv2_train's entry point, unchanged up to and including nnU-Net's load_pretrained_weights; only the training
# loop and the validation are replaced by a dump of the network the trainer would train
DUMP_AFTER_LOADING = """
import sys, torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
out = sys.argv.pop(1)
nnUNetTrainer.run_training = lambda self: torch.save(self.network.state_dict(), out)
nnUNetTrainer.perform_actual_validation = lambda self, *a, **k: None
from nnunetv2.run.run_training import run_training_entry
sys.argv[0] = "nnUNetv2_train"
run_training_entry()
"""


@pytest.fixture(scope="module")
def genesis_checkpoint(hippocampus_nnunet):
    env = {**train_env(hippocampus_nnunet["env"]), "nnUNet_semi_seed": "0"}
    proc = run([nnunet_bin("nnunet_semi_pretrain"), "-d", HIPPO_ID, "-c", "2d", "-p", SMALL_PLANS, "-m", "genesis",
                "-device", "cpu", "--epochs", EPOCHS, "--iters-per-epoch", ITERS, "--batch-size", 8, "--lr", "1e-2"],
               env)
    path = proc.stdout.strip().splitlines()[-1]
    assert path.endswith(join(f"GenesisPretrain__{SMALL_PLANS}__2d", "fold_0", "checkpoint_final.pth"))
    return path


def test_genesis_pretraining_lowers_the_restoration_loss(genesis_checkpoint):
    checkpoint = torch.load(genesis_checkpoint, map_location="cpu", weights_only=True)
    losses = checkpoint["history"]["L_rec"]
    print(f"Genesis restoration loss per epoch: {[round(v, 4) for v in losses]}")
    assert len(losses) == EPOCHS and checkpoint["epoch"] == EPOCHS
    assert losses[-1] < losses[0]
    hp = checkpoint["pretraining"]
    assert (hp["nonlinear_probability"], hp["local_shuffle_probability"], hp["paint_probability"],
            hp["outpaint_probability"], hp["num_blocks"]) == (0.9, 0.5, 0.9, 0.8, 10000)
    heads = [k for k in checkpoint["network_weights"] if ".seg_layers." in k and k.endswith("weight")]
    assert heads and all(checkpoint["network_weights"][k].shape[0] == 1 for k in heads)  # one channel restored
    assert os.path.isfile(os.path.join(os.path.dirname(genesis_checkpoint), "progress.png"))


def test_nnunet_pretrained_weights_loads_genesis(hippocampus_nnunet, genesis_checkpoint, tmp_path):
    dump = tmp_path / "network.pth"
    env = {**train_env(hippocampus_nnunet["env"]), "nnUNet_results": str(tmp_path / "results")}
    proc = run([sys.executable, "-c", DUMP_AFTER_LOADING, dump, HIPPO_ID, "2d", "0", "-p", SMALL_PLANS,
                "-tr", "nnUNetTrainerLabeledOnly", "-device", "cpu", "-pretrained_weights", genesis_checkpoint], env)
    assert f"Loading pretrained weights from file  {genesis_checkpoint}" in proc.stdout
    network = torch.load(dump, weights_only=True)
    pretrained = torch.load(genesis_checkpoint, map_location="cpu", weights_only=True)["network_weights"]
    heads = [k for k in network if ".seg_layers." in k]
    assert heads and all(network[k].shape[0] == 3 for k in heads if k.endswith("weight"))  # fresh 3-class heads
    assert set(network) == set(pretrained)
    for key, value in network.items():
        if key not in heads:
            assert torch.equal(value, pretrained[key]), key


def test_cps_from_two_genesis_pretrainings(hippocampus_nnunet, genesis_checkpoint, monkeypatch):
    """CCM Table 1's "CPS + Models Genesis": a second pretraining (--seed 1 --tag seed1) beside the first, the two
    paired by the command, and nnUNetTrainerGenesisCPS finds the pair by convention; network a starts from the first
    pretraining, network b from the second, the segmentation heads anew."""
    env = train_env(hippocampus_nnunet["env"])
    proc = run([nnunet_bin("nnunet_semi_pretrain"), "-d", HIPPO_ID, "-c", "2d", "-p", SMALL_PLANS, "-m", "genesis",
                "-device", "cpu", "--epochs", 1, "--iters-per-epoch", 2, "--batch-size", 8, "--seed", 1, "--tag",
                "seed1"], env)
    second = proc.stdout.strip().splitlines()[-1]
    assert second.endswith(join(f"GenesisPretrain_seed1__{SMALL_PLANS}__2d", "fold_0", "checkpoint_final.pth"))
    assert torch.load(second, weights_only=True)["pretraining"]["seed"] == 1
    pair = run([nnunet_bin("nnunet_semi_pair_pretrained"), genesis_checkpoint, second], env).stdout.strip()
    assert pair.endswith(join(f"GenesisPretrain_pair__{SMALL_PLANS}__2d", "fold_0", "checkpoint_final.pth"))

    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(var, hippocampus_nnunet["env"][var])
    monkeypatch.delenv("nnUNet_semi_pretrained", raising=False)
    from nnunet_semi.training.paired_cps import nnUNetTrainerGenesisCPS

    pre = join(hippocampus_nnunet["env"]["nnUNet_preprocessed"], hippocampus_nnunet["dataset"])
    plans = {**load_json(join(pre, SMALL_PLANS + ".json")), "continue_training": False}  # nnU-Net 2.8 pops it
    trainer = nnUNetTrainerGenesisCPS(plans, "2d", 0, load_json(join(pre, "dataset.json")), device=torch.device("cpu"))
    assert trainer.pretrained_checkpoint() == pair
    trainer.initialize()
    state = trainer.network.state_dict()
    for member, path in (("net_a", genesis_checkpoint), ("net_b", second)):
        pretrained = torch.load(path, map_location="cpu", weights_only=True)["network_weights"]
        for key, value in pretrained.items():
            if ".seg_layers." in key:  # one restored channel; the trainer's heads are 3-class and new
                assert state[f"{member}.{key}"].shape[0] == 3 and value.shape[0] == 1
            else:
                assert torch.equal(state[f"{member}.{key}"], value), (member, key)
