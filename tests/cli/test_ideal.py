"""IDEAL on real data (Hippocampus, 2d, small plans): dense local contrastive pretraining through
``nnunet_semi_pretrain -m ideal``, encoder-only initialisation of nnUNetTrainerIDEAL, then
nnUNetv2_train -> nnUNetv2_predict -> nnUNetv2_evaluate_folder."""
import math
import os

import pytest
import torch
from batchgenerators.utilities.file_and_folder_operations import join, load_json

from nnunet_semi.pretrained.loading import PretrainedWeightsError
from tests.conftest import HIPPO_ID, SMALL_PLANS, nnunet_bin, run, train_env
from tests.helpers import predict_and_evaluate, train_cmd

PRETRAIN_EPOCHS = 3
PRETRAIN_ITERS = 8
TRAINER = "nnUNetTrainerIDEAL_4epochs_10its"


@pytest.fixture(scope="module")
def ideal_checkpoint(hippocampus_nnunet):
    """A short IDEAL pretraining (seeded), through the command, for fold 0 of the small 2d plans. The learning rate
    is raised from the paper's 1e-5 so that 24 iterations show a falling loss."""
    env = {**train_env(hippocampus_nnunet["env"]), "nnUNet_semi_seed": "0"}
    proc = run([nnunet_bin("nnunet_semi_pretrain"), "-d", HIPPO_ID, "-c", "2d", "-p", SMALL_PLANS, "-m", "ideal",
                "-device", "cpu", "--epochs", PRETRAIN_EPOCHS, "--iters-per-epoch", PRETRAIN_ITERS, "--lr", 1e-3], env)
    path = proc.stdout.strip().splitlines()[-1]
    assert path.endswith(join(f"IDEALPretrain__{SMALL_PLANS}__2d", "fold_0", "checkpoint_final.pth"))
    return path


def _trainer(hippocampus_nnunet, monkeypatch):
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(var, hippocampus_nnunet["env"][var])
    from nnunet_semi.training.ideal import nnUNetTrainerIDEAL

    pre = join(hippocampus_nnunet["env"]["nnUNet_preprocessed"], hippocampus_nnunet["dataset"])
    plans = load_json(join(pre, SMALL_PLANS + ".json"))
    plans["continue_training"] = False
    return nnUNetTrainerIDEAL(plans, "2d", 0, load_json(join(pre, "dataset.json")), device=torch.device("cpu"))


def test_ideal_pretraining_writes_a_safe_encoder_checkpoint(ideal_checkpoint):
    checkpoint = torch.load(ideal_checkpoint, map_location="cpu", weights_only=True)  # loads without pickle code
    history = checkpoint["history"]
    assert len(history["L_total"]) == PRETRAIN_EPOCHS and checkpoint["epoch"] == PRETRAIN_EPOCHS
    assert all(math.isfinite(v) for v in history["L_total"])
    assert history["L_total"][-1] < history["L_total"][0]
    assert history["L_total"] == history["L_loc"] and set(history["L_g"]) == {0.0}  # eq. 2 alone by default
    # 8 images x 20 key locations per view: the first epoch starts near chance level, log(1 + 7 * 20)
    assert abs(history["L_loc"][0] - math.log(1 + 7 * 20)) < 0.5
    weights = checkpoint["network_weights"]
    assert weights and all(k.startswith("encoder.") for k in weights)  # the encoder only, no projection head
    assert any(k.startswith("head.") for k in checkpoint["model_state"])  # pretrained with the head, not transferred
    settings = checkpoint["pretraining"]
    assert settings["method"] == "IDEAL" and settings["learning_rate"] == 1e-3
    assert settings["temperature"] == 0.1 and settings["projection_dim"] == 128
    assert settings["stride"] == [8, 8] and settings["crop_size"] == [40, 32]  # of the 56 x 40 patch
    folder = os.path.dirname(ideal_checkpoint)
    assert os.path.isfile(join(folder, "progress.png")) and not os.path.exists(join(folder, "checkpoint_latest.pth"))


def test_ideal_loads_the_pretrained_encoder_only(hippocampus_nnunet, ideal_checkpoint, monkeypatch):
    import nnunet_semi.pretrained.loading as init_module

    trainer = _trainer(hippocampus_nnunet, monkeypatch)
    assert trainer.pretrained_checkpoint() == ideal_checkpoint  # found by convention
    real_load, states = init_module.load_pretrained_networks, {}

    def load_and_record(network, path, **kwargs):
        states["before"] = {k: v.clone() for k, v in network.state_dict().items()}
        return real_load(network, path, **kwargs)

    monkeypatch.setattr(init_module, "load_pretrained_networks", load_and_record)
    trainer.initialize()
    before, after = states["before"], trainer.network.state_dict()
    pretrained = torch.load(ideal_checkpoint, map_location="cpu", weights_only=True)["network_weights"]
    assert set(pretrained) == {k for k in after if k.startswith("encoder.")}
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    encoder_keys = {k for k in after if k.startswith(("encoder.", "decoder_1.encoder.", "decoder_2.encoder."))}
    assert changed and changed <= encoder_keys  # nothing outside the encoder (and its aliases) changed
    for key in encoder_keys:
        assert torch.equal(after[key], pretrained[key[key.index("encoder."):]]), key
    assert any(".transpconvs." in k for k in after if k.startswith("decoder_2.")) and \
        all(torch.equal(after[k], before[k]) for k in after if k.startswith("decoder_2.transpconvs."))


def test_ideal_refuses_a_missing_pretraining(hippocampus_nnunet, tmp_path, monkeypatch):
    monkeypatch.setenv("nnUNet_semi_pretrained", str(tmp_path / "missing.pth"))
    with pytest.raises(PretrainedWeightsError, match="nnunet_semi_pretrain .* -m ideal"):
        _trainer(hippocampus_nnunet, monkeypatch).initialize()


def test_ideal_end_to_end(hippocampus_nnunet, ideal_checkpoint):
    """nnUNetv2_train -tr nnUNetTrainerIDEAL_4epochs_10its on real data, then nnU-Net's predict (the fused two
    decoders) and evaluate. A 40-iteration CPU budget proves the pipeline, not accuracy."""
    env, dataset = hippocampus_nnunet["env"], hippocampus_nnunet["dataset"]
    tenv = train_env(env)
    proc = run(train_cmd(TRAINER), tenv)
    assert "Initialised" in proc.stdout and ideal_checkpoint in proc.stdout
    results = os.path.join(env["nnUNet_results"], dataset, f"{TRAINER}__{SMALL_PLANS}__2d")
    final = torch.load(join(results, "fold_0", "checkpoint_final.pth"), map_location="cpu", weights_only=False)
    assert final["current_epoch"] == 4 and len(final["logging"]["cps_losses"]) == 4
    assert {k.split(".")[0] for k in final["network_weights"]} == {"encoder", "decoder_1", "decoder_2"}
    summary = predict_and_evaluate(hippocampus_nnunet, TRAINER, "2d", "pred_ideal")
    print(f"IDEAL ({TRAINER}) test Dice: {summary['foreground_mean']['Dice']:.4f}")
