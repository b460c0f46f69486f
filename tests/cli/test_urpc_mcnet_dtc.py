"""URPC, MC-Net and DTC through nnU-Net's unmodified commands on real data (MSD Hippocampus, 2d, small plans), and
one compute_losses step of each on its 3d_fullres network built from the plans.

Per trainer: a seeded nnUNetv2_train (2 epochs x 5 iterations, 8 labeled + 8 unlabeled per step) ->
nnUNetv2_predict -> nnUNetv2_evaluate_folder (pipeline checks; no accuracy claim at 10 iterations), and the same
training killed (SIGKILL) in epoch 1 and continued with --c, which must end bit-identical.
"""
import math

import pytest
import torch
import torch.nn.functional as F
from batchgenerators.utilities.file_and_folder_operations import join, load_json

from tests.conftest import SMALL_PLANS, run, seeded_env
from tests.helpers import assert_resume_is_bit_identical, final_checkpoint, predict_and_evaluate, train_cmd

#: trainer -> (its method curves, the top-level keys of network_weights)
METHODS = {
    "nnUNetTrainerURPC": (("sup_losses", "urpc_losses", "urpc_uncertainty"), {"encoder", "decoder"}),
    "nnUNetTrainerMCNet": (("sup_losses", "mc_losses", "pseudo_label_agreement"),
                           {"encoder", "decoder_1", "decoder_2"}),
    "nnUNetTrainerDTC": (("sup_losses", "lsf_losses", "dtc_losses"), {"net", "head"}),
}
BUDGET = "_2epochs_5its"


@pytest.fixture(scope="module", params=list(METHODS))
def trained(request, hippocampus_nnunet, unlabeled_preprocessed):
    """One uninterrupted seeded training run per trainer: the pipeline test's model and the resume reference."""
    trainer = request.param
    unlabeled_preprocessed("2d")
    env = seeded_env(hippocampus_nnunet["env"], 7)
    return trainer, env, run(train_cmd(trainer + BUDGET), env)


def test_trains_predicts_evaluates(hippocampus_nnunet, trained):
    trainer, env, proc = trained
    curves, top_keys = METHODS[trainer]
    assert "Unlabeled stream: 40 cases, batch size 8 per step (labeled: 8)" in proc.stdout
    checkpoint = final_checkpoint(env, hippocampus_nnunet["dataset"], trainer + BUDGET)
    assert checkpoint["trainer_name"] == trainer + BUDGET and checkpoint["current_epoch"] == 2
    assert {k.split(".")[0] for k in checkpoint["network_weights"]} == top_keys
    for key in curves:
        values = checkpoint["logging"][key]
        assert len(values) == 2 and all(math.isfinite(v) for v in values), key
    assert all(v > 0 for v in checkpoint["logging"][curves[1]])  # the method's unlabeled term is active

    summary = predict_and_evaluate(hippocampus_nnunet, trainer + BUDGET, "2d", f"pred_{trainer}")
    assert len(summary["metric_per_case"]) == 10
    assert math.isfinite(summary["foreground_mean"]["Dice"])
    print(f"{trainer}{BUDGET} test Dice: {summary['foreground_mean']['Dice']:.4f}")


def test_resume_with_c_is_bit_identical(hippocampus_nnunet, trained):
    """Killed (SIGKILL) once epoch 1 started, continued with --c: the weights, optimizer state and curves of the
    uninterrupted run."""
    trainer, env_a, _ = trained
    assert_resume_is_bit_identical(hippocampus_nnunet, env_a, trainer + BUDGET, curves=METHODS[trainer][0],
                                   name=trainer)


# ---------------------------------------------------------------------------------------------- 3d_fullres, in-process
def _trainer_3d(hippocampus_nnunet, monkeypatch, name):
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(var, hippocampus_nnunet["env"][var])
    from nnunet_semi.training import TRAINERS

    pre = join(hippocampus_nnunet["env"]["nnUNet_preprocessed"], hippocampus_nnunet["dataset"])
    plans = load_json(join(pre, SMALL_PLANS + ".json"))
    plans["continue_training"] = False
    trainer = TRAINERS[name](plans, "3d_fullres", 0, load_json(join(pre, "dataset.json")),
                             device=torch.device("cpu"))
    trainer.initialize()
    return trainer


@pytest.mark.parametrize("name", list(METHODS))
def test_3d_fullres_step_and_predictor_network(hippocampus_nnunet, monkeypatch, name):
    """One compute_losses + backward on the 3d_fullres network built from the plans (batch 1 labeled + 1 unlabeled,
    deep-supervision targets as nnU-Net's loader makes them), then the network nnUNetv2_predict builds loads the
    trained weights strictly and returns one logit map."""
    torch.manual_seed(0)
    trainer = _trainer_3d(hippocampus_nnunet, monkeypatch, name)
    patch = tuple(trainer.configuration_manager.patch_size)
    assert len(patch) == 3
    data, data_u = torch.randn(1, 1, *patch), torch.randn(1, 1, *patch)
    labels = torch.zeros(1, 1, *patch)
    labels[..., 8:20, 10:30, 8:20] = 1
    labels[..., 12:16, 14:22, 12:16] = 2
    target = [F.interpolate(labels, scale_factor=tuple(float(f) for f in s), mode="nearest-exact")
              for s in trainer._get_deep_supervision_scales()]
    trainer.network.train()
    loss, logged, curves = trainer.compute_losses(data, target, data_u)
    loss.backward()
    assert math.isfinite(loss.item()) and math.isfinite(logged.item())
    assert set(curves) == set(METHODS[name][0]) and all(math.isfinite(v) for v in curves.values())
    grads = {n: p.grad for n, p in trainer.network.named_parameters()}
    # the method's own parts receive gradient: decoder B (MC-Net), the SDF head (DTC), a coarse DS head (URPC)
    n_heads = len(trainer.network.decoder.seg_layers) if name == "nnUNetTrainerURPC" else 0
    part = {"nnUNetTrainerMCNet": "decoder_2.", "nnUNetTrainerDTC": "head.",
            "nnUNetTrainerURPC": f"decoder.seg_layers.{n_heads - min(4, n_heads)}."}[name]
    assert any(n.startswith(part) and g is not None and g.abs().sum() > 0 for n, g in grads.items())

    predictor_net = type(trainer).build_network_architecture(
        trainer.plans_manager, trainer.configuration_manager, 1, trainer.label_manager.num_segmentation_heads,
        enable_deep_supervision=False)
    predictor_net.load_state_dict(trainer.network.state_dict())  # strict, as nnU-Net's predictor
    predictor_net.eval()
    with torch.no_grad():
        out = predictor_net(data)
    assert isinstance(out, torch.Tensor) and out.shape == (1, 3) + patch
