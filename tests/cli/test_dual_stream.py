"""nnUNetTrainerDualStreamCL through nnU-Net's unmodified commands, 3d_fullres on real data (MSD Hippocampus).

nnUNetv2_train (2 epochs x 5 iterations, batch 2 labeled + 2 unlabeled, small plans) -> nnUNetv2_predict ->
nnUNetv2_evaluate_folder (pipeline checks; no accuracy claim at 10 iterations), and the same seeded training killed
in epoch 1 and continued with --c, which must end bit-identical (the schedules derive from the epoch counter).
"""
import math

import pytest
import torch

from tests.conftest import HIPPO_ID, SMALL_PLANS, nnunet_bin, run, train_env
from tests.helpers import assert_identical, kill_at_epoch, predict_and_evaluate, result_folder

TRAINER = "nnUNetTrainerDualStreamCL_2epochs_5its"
CURVES = ("sup_losses", "unsup_losses", "reg_losses", "contrastive_losses", "mdiff_fraction", "source_a_fraction")


def _train_cmd():
    return [nnunet_bin("nnUNetv2_train"), str(HIPPO_ID), "3d_fullres", "0", "-tr", TRAINER, "-p", SMALL_PLANS,
            "-device", "cpu"]


def _final_checkpoint(env, dataset):
    return torch.load(result_folder(env, dataset, TRAINER, "3d_fullres") / "checkpoint_final.pth",
                      map_location="cpu", weights_only=False)


@pytest.fixture(scope="module")
def trained(hippocampus_nnunet):
    """One uninterrupted seeded training run: the pipeline test's model and the resume test's reference."""
    # preprocess the unlabeled images beforehand, so that the reference and the resumed run do the same work
    run([nnunet_bin("nnunet_semi_preprocess_unlabeled"), "-d", HIPPO_ID, "-c", "3d_fullres", "-p", SMALL_PLANS,
         "-np", "2"], hippocampus_nnunet["env"])
    env = {**train_env(hippocampus_nnunet["env"]), "nnUNet_semi_seed": "7"}
    return env, run(_train_cmd(), env)


def test_dual_stream_3d_trains_predicts_evaluates(hippocampus_nnunet, trained):
    env, proc = trained
    assert "Unlabeled stream: 40 cases, batch size 2 per step (labeled: 2)" in proc.stdout
    checkpoint = _final_checkpoint(env, hippocampus_nnunet["dataset"])
    assert checkpoint["trainer_name"] == TRAINER and checkpoint["current_epoch"] == 2
    keys = checkpoint["network_weights"]
    assert {k.split(".")[0] for k in keys} == {"net_a", "net_b"}
    assert any(k.startswith("net_b.encoder.stem.") for k in keys)  # B is the residual-encoder UNet
    assert not any(k.startswith("net_a.encoder.stem.") for k in keys)  # A the planned PlainConvUNet
    logging = checkpoint["logging"]
    for key in CURVES:
        assert len(logging[key]) == 2 and all(math.isfinite(v) for v in logging[key]), key
    assert all(0.0 <= v <= 1.0 for v in logging["source_a_fraction"] + logging["mdiff_fraction"])
    assert all(v > 0 for v in logging["contrastive_losses"] + logging["unsup_losses"])

    summary = predict_and_evaluate(hippocampus_nnunet, TRAINER, "3d_fullres", "pred_dual_stream_3d")
    assert len(summary["metric_per_case"]) == 10
    assert math.isfinite(summary["foreground_mean"]["Dice"])


def test_dual_stream_resume_with_c_is_bit_identical(hippocampus_nnunet, trained):
    """Killed (SIGKILL) once epoch 1 started, continued with --c: the weights, optimizer state and curves of the
    uninterrupted run."""
    env_a, _ = trained
    dataset = hippocampus_nnunet["dataset"]
    env_b = {**env_a, "nnUNet_results": str(hippocampus_nnunet["root"] / "res_dual_stream_resumed")}
    kill_at_epoch(_train_cmd(), env_b, 1)
    assert not (result_folder(env_b, dataset, TRAINER, "3d_fullres") / "checkpoint_final.pth").exists()
    run(_train_cmd() + ["--c"], env_b)

    final_a, final_b = _final_checkpoint(env_a, dataset), _final_checkpoint(env_b, dataset)
    assert_identical(final_a["network_weights"], final_b["network_weights"], "network_weights")
    assert_identical(final_a["optimizer_state"], final_b["optimizer_state"], "optimizer_state")
    for key in ("train_losses", "val_losses", "mean_fg_dice") + CURVES:
        assert final_a["logging"][key] == final_b["logging"][key], key
