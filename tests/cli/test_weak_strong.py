"""FixMatch and UniMatch through nnU-Net's unmodified commands on real MSD Hippocampus data (small plans).

2d, per trainer: one seeded nnUNetv2_train run (2 epochs x 5 iterations, batch 8 labeled + 8 unlabeled) serves the
pipeline test (checkpoint, curves, nnUNetv2_predict + nnUNetv2_evaluate_folder; no accuracy claim at 10 iterations)
and is the reference of the resume test (killed once epoch 1 started, --c, bit-identical). 3d_fullres: train,
predict and evaluate UniMatch (batch 2 + 2; its step contains FixMatch's).
"""
import math

import pytest

from tests.helpers import (assert_resume_is_bit_identical, final_checkpoint, predict_and_evaluate,
                           seeded_training)

CURVES = {
    "nnUNetTrainerFixMatch": ("sup_losses", "unsup_losses", "confident_fraction", "pseudo_label_foreground"),
    "nnUNetTrainerUniMatch": ("sup_losses", "unsup_losses", "fp_losses", "confident_fraction",
                              "pseudo_label_foreground"),
}


def _trainer(method: str) -> str:
    return f"{method}_2epochs_5its"


@pytest.fixture(scope="module", params=list(CURVES))
def trained(request, hippocampus_nnunet, unlabeled_preprocessed):
    method = request.param
    return (method, *seeded_training(hippocampus_nnunet, unlabeled_preprocessed, _trainer(method), seed=5))


def test_trains_predicts_evaluates(hippocampus_nnunet, trained):
    method, env, proc = trained
    assert "Unlabeled stream: 40 cases, batch size 8 per step (labeled: 8)" in proc.stdout
    checkpoint = final_checkpoint(env, hippocampus_nnunet["dataset"], _trainer(method))
    assert checkpoint["trainer_name"] == _trainer(method) and checkpoint["current_epoch"] == 2
    # one plain nnU-Net network: the feature perturbation is a hook, not a layer
    assert {k.split(".")[0] for k in checkpoint["network_weights"]} == {"encoder", "decoder"}
    logging = checkpoint["logging"]
    for key in CURVES[method]:
        assert len(logging[key]) == 2 and all(math.isfinite(v) for v in logging[key]), key
    assert all(0.0 <= v <= 1.0 for v in logging["confident_fraction"] + logging["pseudo_label_foreground"])
    assert all(v >= 0.0 for v in logging["unsup_losses"])
    summary = predict_and_evaluate(hippocampus_nnunet, _trainer(method), "2d", f"pred_{method}")
    assert len(summary["metric_per_case"]) == 10 and math.isfinite(summary["foreground_mean"]["Dice"])


def test_resume_with_c_is_bit_identical(hippocampus_nnunet, trained):
    method, env_a, _ = trained
    assert_resume_is_bit_identical(hippocampus_nnunet, env_a, _trainer(method), curves=CURVES[method], name=method)


def test_3d_fullres_trains_and_predicts(hippocampus_nnunet, unlabeled_preprocessed):
    """UniMatch's step is FixMatch's plus the feature stream: it covers both on 3D patches (3D CutMix boxes, 3D
    strong transforms, channel dropout on 3D skips)."""
    method = "nnUNetTrainerUniMatch"
    env, proc = seeded_training(hippocampus_nnunet, unlabeled_preprocessed, _trainer(method), seed=5,
                                configuration="3d_fullres")
    assert "Unlabeled stream: 40 cases, batch size 2 per step (labeled: 2)" in proc.stdout
    logging = final_checkpoint(env, hippocampus_nnunet["dataset"], _trainer(method), "3d_fullres")["logging"]
    assert all(len(logging[key]) == 2 for key in CURVES[method])
    summary = predict_and_evaluate(hippocampus_nnunet, _trainer(method), "3d_fullres", f"pred_{method}_3d")
    assert len(summary["metric_per_case"]) == 10
