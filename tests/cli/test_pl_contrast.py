"""nnUNetTrainerPLContrast through nnU-Net's unmodified commands, 2d small plans on real data (MSD Hippocampus).

nnUNetv2_train (2 epochs x 5 iterations: stage 1 = iterations 0-1, pseudo-labels (re-)estimated at iterations 2, 4,
6; batch 8 labeled + 8 unlabeled) -> nnUNetv2_predict -> nnUNetv2_evaluate_folder (pipeline checks; no accuracy
claim at 10 iterations), and the same seeded training killed in epoch 1 and continued with --c, which must end
bit-identical, pseudo-labeler included (the one of iteration 4 is restored from the epoch-0 checkpoint and labels
iteration 5).
"""
import math

import pytest
import torch

from nnunet_semi.training.semi_base import CHECKPOINT_KEY
from tests.conftest import HIPPO_ID, SMALL_PLANS, nnunet_bin, run, train_env
from tests.helpers import assert_identical, kill_at_epoch, predict_and_evaluate, result_folder

TRAINER = "nnUNetTrainerPLContrast_2epochs_5its"
CURVES = ("sup_losses", "contrastive_losses", "pseudo_label_accepted", "joint_stage")


def _train_cmd():
    return [nnunet_bin("nnUNetv2_train"), str(HIPPO_ID), "2d", "0", "-tr", TRAINER, "-p", SMALL_PLANS,
            "-device", "cpu"]


def _final_checkpoint(env, dataset):
    return torch.load(result_folder(env, dataset, TRAINER, "2d") / "checkpoint_final.pth", map_location="cpu",
                      weights_only=False)


@pytest.fixture(scope="module")
def trained(hippocampus_nnunet):
    """One uninterrupted seeded training run: the pipeline test's model and the resume test's reference."""
    run([nnunet_bin("nnunet_semi_preprocess_unlabeled"), "-d", HIPPO_ID, "-c", "2d", "-p", SMALL_PLANS, "-np", "2"],
        hippocampus_nnunet["env"])
    env = {**train_env(hippocampus_nnunet["env"]), "nnUNet_semi_seed": "7"}
    return env, run(_train_cmd(), env)


def test_pl_contrast_trains_predicts_evaluates(hippocampus_nnunet, trained):
    env, proc = trained
    assert "Unlabeled stream: 40 cases, batch size 8 per step (labeled: 8)" in proc.stdout
    assert "pseudo-labels (re-)estimated at iterations [2, 4, 6] of 10" in proc.stdout
    for step, t in enumerate((2, 4, 6), 1):
        assert f"Pseudo-labeling step {step}: pseudo-labeler = the network at iteration {t}" in proc.stdout
    checkpoint = _final_checkpoint(env, hippocampus_nnunet["dataset"])
    assert checkpoint["trainer_name"] == TRAINER and checkpoint["current_epoch"] == 2
    assert any(k.startswith("contrastive_head.") for k in checkpoint["network_weights"])
    state = checkpoint[CHECKPOINT_KEY]["method_state"]
    assert state["pseudo_label_refreshes"] == [2, 4, 6] and state["pseudo_labeler_iteration"] == 6
    assert state["pseudo_labeler"].keys() == checkpoint["network_weights"].keys()
    logging = checkpoint["logging"]
    for key in CURVES:
        assert len(logging[key]) == 2 and all(math.isfinite(v) for v in logging[key]), key
    assert logging["joint_stage"] == [pytest.approx(0.6), 1.0]  # 2 of epoch 0's 5 iterations are stage 1
    assert all(v > 0 for v in logging["contrastive_losses"])
    assert logging["pseudo_label_accepted"] == [pytest.approx(0.6), 1.0]  # threshold off: all, in stage 2

    summary = predict_and_evaluate(hippocampus_nnunet, TRAINER, "2d", "pred_pl_contrast")
    assert len(summary["metric_per_case"]) == 10
    assert math.isfinite(summary["foreground_mean"]["Dice"])
    print(f"PLContrast ({TRAINER}) test Dice: {summary['foreground_mean']['Dice']:.4f}")


def test_pl_contrast_resume_with_c_is_bit_identical(hippocampus_nnunet, trained):
    """Killed (SIGKILL) once epoch 1 started, continued with --c: the weights, optimizer state, curves and
    pseudo-labeler of the uninterrupted run."""
    env_a, _ = trained
    dataset = hippocampus_nnunet["dataset"]
    env_b = {**env_a, "nnUNet_results": str(hippocampus_nnunet["root"] / "res_pl_contrast_resumed")}
    kill_at_epoch(_train_cmd(), env_b, 1)
    folder = result_folder(env_b, dataset, TRAINER, "2d")
    assert not (folder / "checkpoint_final.pth").exists()
    latest = torch.load(folder / "checkpoint_latest.pth", map_location="cpu", weights_only=False)
    assert latest[CHECKPOINT_KEY]["method_state"]["pseudo_label_refreshes"] == [2, 4]  # labels iteration 5
    proc = run(_train_cmd() + ["--c"], env_b)
    assert "pseudo-labeler = the network at iteration 4" not in proc.stdout  # restored, not re-estimated

    final_a, final_b = _final_checkpoint(env_a, dataset), _final_checkpoint(env_b, dataset)
    assert_identical(final_a["network_weights"], final_b["network_weights"], "network_weights")
    assert_identical(final_a["optimizer_state"], final_b["optimizer_state"], "optimizer_state")
    assert_identical(final_a[CHECKPOINT_KEY]["method_state"], final_b[CHECKPOINT_KEY]["method_state"],
                     "method_state")
    for key in ("train_losses", "val_losses", "mean_fg_dice") + CURVES:
        assert final_a["logging"][key] == final_b["logging"][key], key
