"""CCM pretraining on real data (Hippocampus, 2d, small plans) and nnUNetTrainerCCMCPS fine-tuning from it:
pretrain (command) -> nnUNetv2_train -tr nnUNetTrainerCCMCPS -> nnUNetv2_predict -> nnUNetv2_evaluate_folder."""
import os

import pytest
import torch
from batchgenerators.utilities.file_and_folder_operations import join, load_json

from nnunet_semi.pretrained.loading import PretrainedWeightsError
from tests.conftest import HIPPO_ID, SMALL_PLANS, nnunet_bin, run, train_env
from tests.helpers import predict_and_evaluate, train_cmd

PRETRAIN_EPOCHS = 3
PRETRAIN_ITERS = 8
FINETUNE_TRAINER = "nnUNetTrainerCCMCPS_4epochs_10its"


@pytest.fixture(scope="module")
def ccm_checkpoint(hippocampus_nnunet):
    """A short CCM pretraining (seeded), through the command, for fold 0 of the small 2d plans."""
    env = {**train_env(hippocampus_nnunet["env"]), "nnUNet_semi_seed": "0"}
    proc = run([nnunet_bin("nnunet_semi_pretrain"), "-d", HIPPO_ID, "-c", "2d", "-p", SMALL_PLANS, "-m", "ccm",
                "-device", "cpu", "--epochs", PRETRAIN_EPOCHS, "--iters-per-epoch", PRETRAIN_ITERS,
                "--batch-size", 16], env)
    path = proc.stdout.strip().splitlines()[-1]
    assert path.endswith(join(f"CCMPretrain__{SMALL_PLANS}__2d", "fold_0", "checkpoint_final.pth"))
    return path


def test_ccm_pretraining_lowers_the_loss_and_writes_a_safe_checkpoint(ccm_checkpoint):
    checkpoint = torch.load(ccm_checkpoint, map_location="cpu", weights_only=True)  # loads without pickle code
    history = checkpoint["history"]
    assert len(history["L_self"]) == PRETRAIN_EPOCHS and checkpoint["epoch"] == PRETRAIN_EPOCHS
    assert history["L_self"][-1] < history["L_self"][0]
    assert history["L_rec"][-1] < history["L_rec"][0] and history["L_con"][-1] < history["L_con"][0]
    for epoch in range(PRETRAIN_EPOCHS):  # eq. 3 with lambda = 1, per epoch mean
        assert history["L_self"][epoch] == pytest.approx(history["L_rec"][epoch] + history["L_con"][epoch])
    assert {k.split(".")[0] for k in checkpoint["network_weights"]} == {"net_a", "net_b"}
    assert checkpoint["pretraining"]["temperature"] == 0.07 and checkpoint["pretraining"]["projection_dim"] == 1000
    assert os.path.isfile(os.path.join(os.path.dirname(ccm_checkpoint), "progress.png"))
    assert not os.path.exists(os.path.join(os.path.dirname(ccm_checkpoint), "checkpoint_latest.pth"))


def _trainer(hippocampus_nnunet, trainer_class):
    env = hippocampus_nnunet["env"]
    pre = join(env["nnUNet_preprocessed"], hippocampus_nnunet["dataset"])
    plans = load_json(join(pre, SMALL_PLANS + ".json"))
    plans["continue_training"] = False
    return trainer_class(plans, "2d", 0, load_json(join(pre, "dataset.json")), device=torch.device("cpu"))


def test_ccmcps_starts_from_the_pretrained_networks(hippocampus_nnunet, ccm_checkpoint, monkeypatch):
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(var, hippocampus_nnunet["env"][var])
    from nnunet_semi.training.ccm_cps import nnUNetTrainerCCMCPS

    trainer = _trainer(hippocampus_nnunet, nnUNetTrainerCCMCPS)
    assert trainer.pretrained_checkpoint() == ccm_checkpoint  # found by convention
    trainer.initialize()
    pretrained = torch.load(ccm_checkpoint, map_location="cpu", weights_only=True)["network_weights"]
    state = trainer.network.state_dict()
    heads = [k for k in state if ".seg_layers." in k]
    assert heads and all(state[k].shape[0] == 3 for k in heads if k.endswith("weight"))  # new 3-class heads
    assert all(pretrained[k].shape[0] == 1 for k in heads if k.endswith("weight"))  # reconstruction heads
    for key, value in state.items():
        if key not in heads:
            assert torch.equal(value, pretrained[key]), key
    # the two networks differ (two pretrained networks, not one copied)
    assert not torch.equal(state["net_a.encoder.stages.0.0.convs.0.conv.weight"],
                           state["net_b.encoder.stages.0.0.convs.0.conv.weight"])


def test_ccmcps_refuses_a_checkpoint_that_does_not_fit(hippocampus_nnunet, ccm_checkpoint, tmp_path, monkeypatch):
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(var, hippocampus_nnunet["env"][var])
    from nnunet_semi.training.ccm_cps import nnUNetTrainerCCMCPS

    checkpoint = torch.load(ccm_checkpoint, map_location="cpu", weights_only=True)
    key = "net_b.encoder.stages.1.0.convs.0.conv.weight"
    checkpoint["network_weights"][key] = torch.zeros(3, 3, 3, 3)
    bad = tmp_path / "bad.pth"
    torch.save(checkpoint, bad)
    monkeypatch.setenv("nnUNet_semi_pretrained", str(bad))
    trainer = _trainer(hippocampus_nnunet, nnUNetTrainerCCMCPS)
    with pytest.raises(PretrainedWeightsError) as error:
        trainer.initialize()
    message = str(error.value)
    assert key in message and "(3, 3, 3, 3)" in message and "(16, 8, 3, 3)" in message and str(bad) in message
    monkeypatch.setenv("nnUNet_semi_pretrained", str(tmp_path / "missing.pth"))
    with pytest.raises(PretrainedWeightsError, match="nnunet_semi_pretrain"):
        _trainer(hippocampus_nnunet, nnUNetTrainerCCMCPS).initialize()


def test_ccmcps_end_to_end(hippocampus_nnunet, ccm_checkpoint):
    """The design card's command on real data: nnUNetv2_train -tr nnUNetTrainerCCMCPS, then nnU-Net's predict and
    evaluate. A 40-iteration CPU budget proves the pipeline (every test case predicted with the reference's
    geometry, evaluated by nnU-Net), not accuracy: the real-data Dice floor is test_cps_train_predict_evaluate_2d's,
    accuracy comparisons belong to the benchmarks."""
    tenv = train_env(hippocampus_nnunet["env"])
    proc = run(train_cmd(FINETUNE_TRAINER), tenv)
    assert "Initialised" in proc.stdout and ccm_checkpoint in proc.stdout
    summary = predict_and_evaluate(hippocampus_nnunet, FINETUNE_TRAINER, "2d", "pred_ccmcps")
    print(f"CCMCPS ({FINETUNE_TRAINER}) test Dice: {summary['foreground_mean']['Dice']:.4f}")


def test_ccm_pretraining_resumes_bit_identically(hippocampus_nnunet, monkeypatch):
    """An interrupted pretraining continued with continue_training=True (the command's --c) ends with exactly the
    weights of an uninterrupted run (seeded, single-process loading, CPU)."""
    env = train_env(hippocampus_nnunet["env"])
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_n_proc_DA"):
        monkeypatch.setenv(var, env[var])
    from pretraining.ccm import CCMPretrainer

    def pretrainer(results):
        monkeypatch.setenv("nnUNet_results", str(results))
        return CCMPretrainer(hippocampus_nnunet["dataset"], "2d", fold="0", plans_identifier=SMALL_PLANS,
                             num_epochs=3, batch_size=4, iterations_per_epoch=3, seed=7, projection_dim=32)

    root = hippocampus_nnunet["root"]
    final_a = torch.load(pretrainer(root / "ccm_a").run(), weights_only=True)

    class Interrupted(Exception):
        pass

    def interrupt_after_second_epoch(self):
        if len(self.history["L_self"]) == 2:
            raise Interrupted

    with monkeypatch.context() as m:
        m.setattr(CCMPretrainer, "_plot", interrupt_after_second_epoch)
        interrupted = pretrainer(root / "ccm_b")
        with pytest.raises(Interrupted):
            interrupted.run()
    latest = torch.load(join(interrupted.output_folder, "checkpoint_latest.pth"), weights_only=True)
    assert latest["epoch"] == 2
    final_b = torch.load(pretrainer(root / "ccm_b").run(continue_training=True), weights_only=True)
    assert final_a["history"] == final_b["history"]
    for key, value in final_a["model_state"].items():
        assert torch.equal(value, final_b["model_state"][key]), key


def test_ccm_pretraining_3d(hippocampus_nnunet, monkeypatch, tmp_path):
    """3d_fullres: 3D block masks on the planned 3D network, one short epoch."""
    env = train_env(hippocampus_nnunet["env"])
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_n_proc_DA"):
        monkeypatch.setenv(var, env[var])
    monkeypatch.setenv("nnUNet_results", str(tmp_path))
    from pretraining.ccm import CCMPretrainer

    pretrainer = CCMPretrainer(hippocampus_nnunet["dataset"], "3d_fullres", plans_identifier=SMALL_PLANS,
                               num_epochs=1, iterations_per_epoch=2, seed=0, projection_dim=16)
    assert pretrainer.block_size == (16, 16, 16)  # patch 40 x 56 x 40: 16 fits at least twice per axis
    assert pretrainer.default_batch_size() == 2  # the plans' 3D batch size
    checkpoint = torch.load(pretrainer.run(), weights_only=True)
    weights = checkpoint["network_weights"]
    assert weights["net_a.encoder.stages.0.0.convs.0.conv.weight"].ndim == 5
    assert all(torch.isfinite(torch.tensor(v)).all() for v in checkpoint["history"]["L_self"])


def test_a_non_finite_loss_stops_the_pretraining_with_the_step_and_the_fix(hippocampus_nnunet, monkeypatch):
    """A NaN loss (here injected at epoch 2, iteration 2) raises before it reaches the weights: the message names the
    step, the terms and the fix, checkpoint_latest.pth keeps epoch 1 (for --c) and no final checkpoint is written."""
    env = train_env(hippocampus_nnunet["env"])
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_n_proc_DA"):
        monkeypatch.setenv(var, env[var])
    monkeypatch.setenv("nnUNet_results", str(hippocampus_nnunet["root"] / "ccm_nan"))
    from pretraining.ccm import CCMPretrainer

    calls = []
    compute_loss = CCMPretrainer.compute_loss

    def nan_at_the_fifth_step(self, data):
        loss, terms = compute_loss(self, data)
        calls.append(self.current_epoch)
        if len(calls) == 5:  # 3 iterations per epoch: epoch 2, iteration 2
            return loss * float("nan"), {**terms, "L_self": float("nan")}
        return loss, terms

    monkeypatch.setattr(CCMPretrainer, "compute_loss", nan_at_the_fifth_step)
    pretrainer = CCMPretrainer(hippocampus_nnunet["dataset"], "2d", fold="0", plans_identifier=SMALL_PLANS,
                               num_epochs=3, batch_size=4, iterations_per_epoch=3, seed=7, projection_dim=32)
    with pytest.raises(FloatingPointError) as error:
        pretrainer.run()
    message = str(error.value)
    assert "epoch 2, iteration 2" in message and "L_self=nan" in message and "--lr; now" in message
    assert "checkpoint_latest.pth holds the last finished epoch" in message and "--c" in message
    folder = pretrainer.output_folder
    assert torch.load(join(folder, "checkpoint_latest.pth"), weights_only=True)["epoch"] == 1
    assert not os.path.exists(join(folder, "checkpoint_final.pth")) and calls == [0, 0, 0, 1, 1]
