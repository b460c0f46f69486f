"""MMGL on real data (Hippocampus, 2d, small plans): stage 1 (``nnunet_semi_pretrain -m mmgl_global``, multi-view
multi-scale global contrastive) -> stage 2 (``-m mmgl_local``, multi-scale local supervised contrastive, starting
from stage 1's encoder) -> stage 3 (``nnUNetv2_train -tr nnUNetTrainerMMGL_2epochs_5its``, deeply supervised Dice
fine-tuning from stage 2), with weights asserted tensor-equal at each hand-over, a SIGKILL in epoch 1 + ``--c``
that must end bit-identical, and nnUNetv2_predict + nnUNetv2_evaluate_folder. Tiny budgets prove the pipeline, not
accuracy."""
import math

import pytest
import torch
from batchgenerators.utilities.file_and_folder_operations import join, load_json

from nnunet_semi.pretrained.loading import PretrainedWeightsError
from tests.conftest import HIPPO_ID, SMALL_PLANS, nnunet_bin, run, seeded_env, train_env
from tests.helpers import assert_resume_is_bit_identical, final_checkpoint, predict_and_evaluate, train_cmd

EPOCHS, ITERS = 3, 4
TRAINER = "nnUNetTrainerMMGL_2epochs_5its"


def _pretrain(hippocampus_nnunet, method, *extra):
    env = {**train_env(hippocampus_nnunet["env"]), "nnUNet_semi_seed": "0"}
    proc = run([nnunet_bin("nnunet_semi_pretrain"), "-d", HIPPO_ID, "-c", "2d", "-p", SMALL_PLANS, "-m", method,
                "-device", "cpu", "--epochs", EPOCHS, "--iters-per-epoch", ITERS, *extra], env)
    return proc.stdout.strip().splitlines()[-1], proc.stdout


@pytest.fixture(scope="module")
def stage1(hippocampus_nnunet):
    path, _ = _pretrain(hippocampus_nnunet, "mmgl_global")
    assert path.endswith(join(f"MMGLGlobalPretrain__{SMALL_PLANS}__2d", "fold_0", "checkpoint_final.pth"))
    return path


@pytest.fixture(scope="module")
def stage2(hippocampus_nnunet, stage1):
    path, stdout = _pretrain(hippocampus_nnunet, "mmgl_local")
    assert path.endswith(join(f"MMGLLocalPretrain__{SMALL_PLANS}__2d", "fold_0", "checkpoint_final.pth"))
    assert f"Encoder initialised from stage 1: {stage1}" in stdout  # found by the folder convention
    return path


def _set_paths(hippocampus_nnunet, monkeypatch):
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(var, hippocampus_nnunet["env"][var])


def _falls(history):
    return all(math.isfinite(v) for v in history) and history[-1] < history[0]


def test_stage1_multi_view_multi_scale_global(stage1):
    checkpoint = torch.load(stage1, map_location="cpu", weights_only=True)
    history, settings = checkpoint["history"], checkpoint["pretraining"]
    assert len(history["L_g_M"]) == EPOCHS and _falls(history["L_g_M"])
    assert settings["views"] == ["transaxial", "coronal", "sagittal"] and settings["stages"] == [1, 2, 3]
    assert settings["scale_weights"] == [0.2, 0.2, 0.6] and settings["temperature"] == 0.07
    assert settings["projection_dim"] == 128
    for epoch in range(EPOCHS):  # L_g^M = sum_e lambda_e L_g^e (per-epoch means of a linear combination)
        combined = sum(w * history[f"L_g_stage{s}"][epoch] for w, s in zip((0.2, 0.2, 0.6), (1, 2, 3)))
        assert history["L_g_M"][epoch] == pytest.approx(combined, rel=1e-6)
    weights = checkpoint["network_weights"]
    assert weights and all(k.startswith("encoder.") for k in weights)  # heads are not transferred
    assert sum(k.startswith("heads.") for k in checkpoint["model_state"]) == 3 * 4  # 3 heads x 2 linear layers


def test_stage2_starts_from_stage1_and_learns(hippocampus_nnunet, stage1, stage2, monkeypatch):
    checkpoint = torch.load(stage2, map_location="cpu", weights_only=True)
    history, settings = checkpoint["history"], checkpoint["pretraining"]
    assert len(history["L_l_M"]) == EPOCHS and _falls(history["L_l_M"])
    assert settings["global_checkpoint"] == stage1 and settings["stride"] == 4 and settings["stages"] == [0, 1, 2]
    assert {k.split(".")[0] for k in checkpoint["network_weights"]} == {"encoder", "decoder"}

    # hand-over 1: the stage-2 network built by the same pretrainer starts with stage 1's encoder, tensor-equal
    _set_paths(hippocampus_nnunet, monkeypatch)
    from pretraining.mmgl import MMGLLocalPretrainer

    model = MMGLLocalPretrainer(HIPPO_ID, "2d", plans_identifier=SMALL_PLANS).build_model()
    encoder = torch.load(stage1, map_location="cpu", weights_only=True)["network_weights"]
    state = model.network.state_dict()
    for key, value in encoder.items():
        assert torch.equal(state[key], value), key
        assert torch.equal(state["decoder." + key], value), key  # nnU-Net's alias of the encoder in the decoder

    with pytest.raises(PretrainedWeightsError, match="-m mmgl_global --no-multi-view"):
        MMGLLocalPretrainer(HIPPO_ID, "2d", plans_identifier=SMALL_PLANS, multi_view=False).build_model()


def test_stage3_trainer_starts_from_stage2(hippocampus_nnunet, stage2, monkeypatch):
    """hand-over 2: nnUNetTrainerMMGL's network equals stage 2's weights, segmentation heads excepted."""
    _set_paths(hippocampus_nnunet, monkeypatch)
    from nnunet_semi.training.mmgl import nnUNetTrainerMMGL

    pre = join(hippocampus_nnunet["env"]["nnUNet_preprocessed"], hippocampus_nnunet["dataset"])
    plans = load_json(join(pre, SMALL_PLANS + ".json"))
    plans["continue_training"] = False
    trainer = nnUNetTrainerMMGL(plans, "2d", 0, load_json(join(pre, "dataset.json")), device=torch.device("cpu"))
    assert trainer.pretrained_checkpoint() == stage2
    trainer.initialize()
    pretrained = torch.load(stage2, map_location="cpu", weights_only=True)["network_weights"]
    after = trainer.network.state_dict()
    transferred = [k for k in after if ".seg_layers." not in k]
    assert len(transferred) > 20
    for key in transferred:
        assert torch.equal(after[key], pretrained[key]), key
    assert not any(torch.equal(after[k], pretrained[k]) for k in after if ".seg_layers." in k and "weight" in k)
    assert trainer.loss.weight_factors == pytest.approx((0.4, 0.3, 0.3)) and trainer.loss.loss.weight_ce == 0


@pytest.fixture(scope="module")
def trained(hippocampus_nnunet, stage2):
    env = seeded_env(hippocampus_nnunet["env"], 3)
    return env, run(train_cmd(TRAINER), env)


def test_mmgl_trains_predicts_evaluates(hippocampus_nnunet, stage2, trained):
    env, proc = trained
    assert "Initialised" in proc.stdout and stage2 in proc.stdout
    assert "Unlabeled stream" not in proc.stdout  # fine-tuning on labeled data only
    checkpoint = final_checkpoint(env, hippocampus_nnunet["dataset"], TRAINER)
    assert checkpoint["trainer_name"] == TRAINER and checkpoint["current_epoch"] == 2
    curve = checkpoint["logging"]["dice_loss_full_res"]
    assert len(curve) == 2 and all(-1 <= v <= 0 for v in curve)  # nnU-Net's soft Dice loss is -Dice
    summary = predict_and_evaluate(hippocampus_nnunet, TRAINER, "2d", "pred_mmgl")
    assert len(summary["metric_per_case"]) == 10 and math.isfinite(summary["foreground_mean"]["Dice"])
    print(f"MMGL ({TRAINER}) test Dice: {summary['foreground_mean']['Dice']:.4f}")


def test_mmgl_resume_with_c_is_bit_identical(hippocampus_nnunet, stage2, trained):
    """Killed (SIGKILL) once epoch 1 started, continued with --c: the weights, optimizer state and curves of the
    uninterrupted run (same stage-2 weights, named by nnUNet_semi_pretrained in the other results folder)."""
    env_a, _ = trained
    assert_resume_is_bit_identical(hippocampus_nnunet, env_a, TRAINER, curves=("dice_loss_full_res",), name="mmgl",
                                   extra_env={"nnUNet_semi_pretrained": stage2})


def test_simclr_is_stage1_on_the_last_stage_and_main_view(hippocampus_nnunet, monkeypatch):
    """``-m simclr`` (the paper's "Global" baseline) = the stage-1 loss on the last encoder stage, transaxial only."""
    _set_paths(hippocampus_nnunet, monkeypatch)
    from nnunet_semi.data.multiview import MultiViewDataset
    from pretraining.cli import PRETRAINERS
    from pretraining.mmgl import MMGLGlobalPretrainer, SimCLRPretrainer

    assert PRETRAINERS["simclr"] is SimCLRPretrainer and issubclass(SimCLRPretrainer, MMGLGlobalPretrainer)
    simclr = SimCLRPretrainer(HIPPO_ID, "2d", plans_identifier=SMALL_PLANS, seed=0)
    assert simclr.stages == [3] and simclr.scale_weights == (1.0,) and simclr.views == ("transaxial",)
    assert f"SimCLRPretrain__{SMALL_PLANS}__2d" in simclr.output_folder
    assert not isinstance(simclr.build_dataset(), MultiViewDataset)
    simclr.model = simclr.build_model()
    assert len(simclr.model.heads) == 1
    loss, terms = simclr.compute_loss(torch.randn(4, 1, *simclr.configuration_manager.patch_size))
    assert set(terms) == {"L_g_M", "L_g_stage3"} and terms["L_g_M"] == terms["L_g_stage3"] == loss.item()
    mmgl = MMGLGlobalPretrainer(HIPPO_ID, "2d", plans_identifier=SMALL_PLANS)
    dataset = mmgl.build_dataset()
    assert isinstance(dataset, MultiViewDataset) and len(dataset.source.identifiers) > 40  # labeled + unlabeled
    assert sorted(dataset.identifiers) == sorted(f"{v}|{i}" for v in ("transaxial", "coronal", "sagittal")
                                                 for i in dataset.source.identifiers)


def test_semicontrast_route(hippocampus_nnunet, monkeypatch, tmp_path):
    """MMGL Table 1's "SemiContrast": stage 2 on one scale and view from a SimCLR checkpoint (accepted as stage 1),
    tagged beside MMGL's _noMV; nnUNetTrainerMMGL_SemiContrast finds it and fine-tunes the full-resolution output."""
    _set_paths(hippocampus_nnunet, monkeypatch)
    from nnunet_semi.training import TRAINERS
    from pretraining.mmgl import MMGLLocalPretrainer, SimCLRPretrainer

    simclr = SimCLRPretrainer(HIPPO_ID, "2d", plans_identifier=SMALL_PLANS, seed=0)
    simclr.model = simclr.build_model()
    path = str(tmp_path / "simclr.pth")
    torch.save({"network_weights": simclr.network_weights(), "pretraining": {"method": "SimCLR"}}, path)
    local = MMGLLocalPretrainer(HIPPO_ID, "2d", plans_identifier=SMALL_PLANS, seed=0, multi_view=False,
                                scale_weights=(1.0,), init_checkpoint=path, tag="semicontrast")
    assert f"MMGLLocalPretrain_noMV_semicontrast__{SMALL_PLANS}__2d" in local.output_folder
    n_decoder = len(local.configuration_manager.network_arch_init_kwargs["features_per_stage"]) - 1
    assert local.stages == [n_decoder - 1]  # the full-resolution decoder stage only
    model = local.build_model()
    encoder = {k: v for k, v in simclr.network_weights().items()}
    state = model.state_dict()
    for key, value in encoder.items():
        assert torch.equal(state[f"network.{key}"], value), key
    trainer = object.__new__(TRAINERS["nnUNetTrainerMMGL_SemiContrast"])
    assert trainer.pretraining_method == "MMGLLocal" and trainer.pretraining_variant == "_noMV_semicontrast"
    assert tuple(trainer.dice_weights) == (1,) and trainer.multi_view is False
    assert "--scale-weights 1" in trainer.pretraining_command and "--tag semicontrast" in trainer.pretraining_command
