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

from nnunet_semi.training.logging import semi_checkpoint_state
from tests.conftest import run, seeded_env
from tests.helpers import assert_identical, assert_resume_is_bit_identical, final_checkpoint, predict_and_evaluate, \
    train_cmd

TRAINER = "nnUNetTrainerPLContrast_2epochs_5its"
CURVES = ("sup_losses", "contrastive_losses", "pseudo_label_accepted", "joint_stage")


@pytest.fixture(scope="module")
def trained(hippocampus_nnunet, unlabeled_preprocessed):
    """One uninterrupted seeded training run: the pipeline test's model and the resume test's reference."""
    unlabeled_preprocessed("2d")
    env = seeded_env(hippocampus_nnunet["env"], 7)
    return env, run(train_cmd(TRAINER), env)


def test_pl_contrast_trains_predicts_evaluates(hippocampus_nnunet, trained):
    env, proc = trained
    assert "Unlabeled stream: 40 cases, batch size 8 per step (labeled: 8)" in proc.stdout
    assert "pseudo-labels (re-)estimated at iterations [2, 4, 6] of 10" in proc.stdout
    for step, t in enumerate((2, 4, 6), 1):
        assert f"Pseudo-labeling step {step}: pseudo-labeler = the network at iteration {t}" in proc.stdout
    checkpoint = final_checkpoint(env, hippocampus_nnunet["dataset"], TRAINER)
    assert checkpoint["trainer_name"] == TRAINER and checkpoint["current_epoch"] == 2
    assert any(k.startswith("contrastive_head.") for k in checkpoint["network_weights"])
    state = semi_checkpoint_state(checkpoint)["method_state"]
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

    def interrupted(folder):
        latest = torch.load(folder / "checkpoint_latest.pth", map_location="cpu", weights_only=False)
        assert semi_checkpoint_state(latest)["method_state"]["pseudo_label_refreshes"] == [2, 4]  # labels iteration 5

    final_a, final_b, proc = assert_resume_is_bit_identical(hippocampus_nnunet, env_a, TRAINER, curves=CURVES,
                                                            name="pl_contrast", before_resume=interrupted)
    assert "pseudo-labeler = the network at iteration 4" not in proc.stdout  # restored, not re-estimated
    assert_identical(semi_checkpoint_state(final_a)["method_state"], semi_checkpoint_state(final_b)["method_state"],
                     "method_state")
