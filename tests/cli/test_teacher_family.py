"""Mean Teacher, UA-MT, entropy minimisation and BCP through nnU-Net's unmodified commands (2d, small plans, real
MSD Hippocampus data).

Per trainer: one seeded nnUNetv2_train run (2 epochs x 5 iterations, batch 8 labeled + 8 unlabeled) that serves the
pipeline test (checkpoint contents, curves, nnUNetv2_predict + nnUNetv2_evaluate_folder; no accuracy claim at 10
iterations) and is the reference of the resume test: the same training killed (SIGKILL) once epoch 1 started and
continued with --c must end bit-identical, teacher weights included.
"""
import math

import pytest
import torch

from tests.helpers import (assert_resume_is_bit_identical, final_checkpoint, predict_and_evaluate,
                           seeded_training)

CURVES = {
    "nnUNetTrainerMeanTeacher": ("sup_losses", "consistency_losses", "consistency_weights"),
    "nnUNetTrainerUAMT": ("sup_losses", "consistency_losses", "consistency_weights", "certain_fraction"),
    "nnUNetTrainerEntMin": ("sup_losses", "entropy_losses", "entropy_weights"),
    "nnUNetTrainerBCP": ("labeled_region_losses", "pseudo_region_losses", "self_training_stage",
                         "pseudo_label_foreground"),
}
WITH_TEACHER = ("nnUNetTrainerMeanTeacher", "nnUNetTrainerUAMT", "nnUNetTrainerBCP")


def _trainer(method: str) -> str:
    return f"{method}_2epochs_5its"


@pytest.fixture(scope="module", params=list(CURVES))
def trained(request, hippocampus_nnunet, unlabeled_preprocessed):
    """One uninterrupted seeded run per trainer: the pipeline test's model and the resume test's reference."""
    method = request.param
    return (method, *seeded_training(hippocampus_nnunet, unlabeled_preprocessed, _trainer(method), seed=3))


def test_trains_predicts_evaluates(hippocampus_nnunet, trained):
    method, env, proc = trained
    dataset = hippocampus_nnunet["dataset"]
    assert "Unlabeled stream: 40 cases, batch size 8 per step (labeled: 8)" in proc.stdout
    checkpoint = final_checkpoint(env, dataset, _trainer(method))
    assert checkpoint["trainer_name"] == _trainer(method) and checkpoint["current_epoch"] == 2
    weights = checkpoint["network_weights"]
    logging = checkpoint["logging"]
    for key in CURVES[method]:
        assert len(logging[key]) == 2 and all(math.isfinite(v) for v in logging[key]), key

    n_optimized = len(checkpoint["optimizer_state"]["param_groups"][0]["params"])
    if method in WITH_TEACHER:
        assert {k.split(".")[0] for k in weights} == {"student", "teacher"}
        student = {k[len("student."):]: v for k, v in weights.items() if k.startswith("student.")}
        teacher = {k[len("teacher."):]: v for k, v in weights.items() if k.startswith("teacher.")}
        assert student.keys() == teacher.keys()
        # the teacher is an average of past students: close to, but not equal to, the final student
        assert any(not torch.equal(student[k], teacher[k]) for k in student)
        # the optimizer holds the student's parameters only (the state dict lists some tensors under two names:
        # count storages; the instance norms have no buffers)
        assert n_optimized == len({v.data_ptr() for v in student.values()})
    else:
        assert {k.split(".")[0] for k in weights} == {"encoder", "decoder"}
        assert n_optimized == len({v.data_ptr() for v in weights.values()})
    if method == "nnUNetTrainerBCP":
        assert logging["self_training_stage"] == [0.0, 1.0]  # 2 epochs: 1 labeled pre-training + 1 self-training
        assert logging["pseudo_region_losses"][0] == 0.0 < logging["pseudo_region_losses"][1]
        assert logging["pseudo_label_foreground"][0] == 0.0 <= logging["pseudo_label_foreground"][1] <= 1.0
    if method in ("nnUNetTrainerMeanTeacher", "nnUNetTrainerUAMT"):
        assert 0 < logging["consistency_weights"][0] < logging["consistency_weights"][1] <= 0.1
    if method == "nnUNetTrainerUAMT":
        assert all(0.0 < v <= 1.0 for v in logging["certain_fraction"])

    summary = predict_and_evaluate(hippocampus_nnunet, _trainer(method), "2d", f"pred_{method}")
    assert len(summary["metric_per_case"]) == 10
    assert math.isfinite(summary["foreground_mean"]["Dice"])


def test_resume_with_c_is_bit_identical(hippocampus_nnunet, trained):
    """Killed (SIGKILL) once epoch 1 started, continued with --c: the weights (student and teacher), optimizer state
    and curves of the uninterrupted run."""
    method, env_a, _ = trained
    assert_resume_is_bit_identical(hippocampus_nnunet, env_a, _trainer(method), curves=CURVES[method], name=method)
