"""nnUNetTrainerDualStreamCL through nnU-Net's unmodified commands, 3d_fullres on real data (MSD Hippocampus).

nnUNetv2_train (2 epochs x 5 iterations, batch 2 labeled + 2 unlabeled, small plans) -> nnUNetv2_predict ->
nnUNetv2_evaluate_folder (pipeline checks; no accuracy claim at 10 iterations), and the same seeded training killed
in epoch 1 and continued with --c, which must end bit-identical (the schedules derive from the epoch counter).
"""
import math

import pytest

from tests.conftest import run, seeded_env
from tests.helpers import assert_resume_is_bit_identical, final_checkpoint, predict_and_evaluate, train_cmd

TRAINER = "nnUNetTrainerDualStreamCL_2epochs_5its"
CURVES = ("sup_losses", "unsup_losses", "reg_losses", "contrastive_losses", "mdiff_fraction", "source_a_fraction")


@pytest.fixture(scope="module")
def trained(hippocampus_nnunet, unlabeled_preprocessed):
    """One uninterrupted seeded training run: the pipeline test's model and the resume test's reference."""
    unlabeled_preprocessed("3d_fullres")
    env = seeded_env(hippocampus_nnunet["env"], 7)
    return env, run(train_cmd(TRAINER, "3d_fullres"), env)


def test_dual_stream_3d_trains_predicts_evaluates(hippocampus_nnunet, trained):
    env, proc = trained
    assert "Unlabeled stream: 40 cases, batch size 2 per step (labeled: 2)" in proc.stdout
    checkpoint = final_checkpoint(env, hippocampus_nnunet["dataset"], TRAINER, "3d_fullres")
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
    assert_resume_is_bit_identical(hippocampus_nnunet, env_a, TRAINER, "3d_fullres", curves=CURVES,
                                   name="dual_stream")
