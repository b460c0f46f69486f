"""EMA teacher, Mean Teacher, UA-MT, entropy minimisation and BCP: every mechanism recomputed independently (NumPy /
loops / hand formulas) on small tensors, in 2D and 3D, with real trainers built from minimal plans (no data)."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from nnunet_semi.augmentation.copy_paste import box_mask, copy_paste, downsample_targets, region_targets
from nnunet_semi.losses.consistency import (entropy_map, mean_entropy, predictive_entropy, softmax_mse,
                                            teacher_consistency, uncertainty_masked_mse)
from nnunet_semi.networks.teacher import MeanTeacherNetwork, channel_dropout, ema_decay, ema_update, \
    gaussian_input_noise
from nnunet_semi.postprocessing import largest_component_per_class
from nnunet_semi.schedules import uamt_threshold
from nnunet_semi.training import TRAINERS

METHODS = ("nnUNetTrainerMeanTeacher", "nnUNetTrainerUAMT", "nnUNetTrainerEntMin", "nnUNetTrainerBCP")


# ------------------------------------------------------------------------------------------------- set-up helpers
def _plans(ndim: int) -> dict:
    conv, norm = ("torch.nn.modules.conv.Conv2d", "torch.nn.modules.instancenorm.InstanceNorm2d") if ndim == 2 else \
        ("torch.nn.modules.conv.Conv3d", "torch.nn.modules.instancenorm.InstanceNorm3d")
    arch = {"network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
            "arch_kwargs": {"n_stages": 3, "features_per_stage": [4, 8, 16], "conv_op": conv,
                            "kernel_sizes": [[3] * ndim] * 3, "strides": [[1] * ndim, [2] * ndim, [2] * ndim],
                            "n_conv_per_stage": [1, 1, 1], "n_conv_per_stage_decoder": [1, 1], "conv_bias": True,
                            "norm_op": norm, "norm_op_kwargs": {"eps": 1e-5, "affine": True}, "dropout_op": None,
                            "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
                            "nonlin_kwargs": {"inplace": True}},
            "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]}
    patch = [16, 12] if ndim == 2 else [8, 16, 12]
    config = {"data_identifier": "x", "preprocessor_name": "DefaultPreprocessor", "batch_size": 4, "patch_size": patch,
              "spacing": [1.0] * ndim, "architecture": arch, "batch_dice": True, "median_image_size_in_voxels": patch,
              "normalization_schemes": ["ZScoreNormalization"], "use_mask_for_norm": [False]}
    return {"dataset_name": "Dataset999_Test", "plans_name": "p", "configurations": {"cfg": config},
            "transpose_forward": list(range(ndim)), "transpose_backward": list(range(ndim)),
            "original_median_spacing_after_transp": [1.0] * ndim, "image_reader_writer": "SimpleITKIO",
            "experiment_planner_used": "x", "label_manager": "LabelManager",
            "foreground_intensity_properties_per_channel": {}, "continue_training": False}


DATASET_JSON = {"labels": {"background": 0, "a": 1, "b": 2}, "channel_names": {"0": "x"}, "numTraining": 4,
                "file_ending": ".nii.gz"}


@pytest.fixture
def make_trainer(tmp_path, monkeypatch):
    """A real trainer (device cpu) with its network, nnU-Net loss and BCP's region loss; no data loaders."""
    monkeypatch.setenv("nnUNet_results", str(tmp_path))
    monkeypatch.delenv("nnUNet_semi_seed", raising=False)

    def make(name: str, ndim: int):
        trainer = TRAINERS[name](_plans(ndim), "cfg", 0, dict(DATASET_JSON), device=torch.device("cpu"))
        trainer.num_epochs, trainer.num_iterations_per_epoch = 4, 5
        trainer._set_batch_size_and_oversample()
        torch.manual_seed(0)
        trainer.network = trainer.build_network_architecture(trainer.plans_manager, trainer.configuration_manager,
                                                             1, 3, True)
        trainer.optimizer, trainer.lr_scheduler = trainer.configure_optimizers()
        trainer.loss = trainer._build_loss()
        if name == "nnUNetTrainerBCP":
            trainer.region_loss_fn = trainer.build_region_loss()
        return trainer

    return make


def _batch(trainer, n=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    patch = trainer.configuration_manager.patch_size
    x, xu = torch.randn(n, 1, *patch, generator=g), torch.randn(n, 1, *patch, generator=g)
    y = torch.randint(0, 3, (n, 1, *patch), generator=g).float()
    target = [y] + [torch.nn.functional.interpolate(y, scale_factor=s, mode="nearest-exact") for s in (0.5, 0.25)]
    return x, target, xu


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 2)
        self.bn = nn.BatchNorm1d(2)


# ------------------------------------------------------------------------------------------------- EMA teacher
def test_ema_update_equals_hand_formula():
    torch.manual_seed(0)
    teacher, student = _Tiny(), _Tiny()
    student.bn.running_mean.fill_(2.0)
    student.bn.num_batches_tracked.fill_(7)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    ema_update(teacher, student, 0.99)
    for key, value in teacher.state_dict().items():
        s = student.state_dict()[key]
        expected = s if key.endswith("num_batches_tracked") else 0.99 * before[key] + 0.01 * s
        torch.testing.assert_close(value, expected, rtol=0, atol=1e-7)
    with pytest.raises(ValueError):
        ema_update(teacher, nn.Linear(3, 2), 0.5)


def test_ema_decay_warmup():
    assert [ema_decay(t, 0.99) for t in (0, 1, 3, 98, 99, 5000)] == [0.0, 0.5, 0.75, 1 - 1 / 99, 0.99, 0.99]
    assert ema_decay(0, 0.99, warmup=False) == 0.99
    with pytest.raises(ValueError):
        ema_decay(3, 1.5)


@pytest.mark.parametrize("ndim", [2, 3])
def test_teacher_gets_no_gradient_is_not_optimized_and_follows_the_ema(make_trainer, ndim):
    trainer = make_trainer("nnUNetTrainerMeanTeacher", ndim)
    net = trainer.mean_teacher
    assert isinstance(net, MeanTeacherNetwork)
    optimized = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert optimized == {id(p) for p in net.student.parameters()}
    assert not optimized & {id(p) for p in net.teacher.parameters()}
    assert all(not p.requires_grad for p in net.teacher.parameters())

    x, target, xu = _batch(trainer)
    trainer.current_epoch, trainer.step_in_epoch = 1, 2  # global step 7: a = min(1 - 1/8, 0.99) = 0.875
    for p in net.teacher.parameters():  # make the teacher differ from the student
        p.add_(0.1)
    teacher_before = {k: v.clone() for k, v in net.teacher.state_dict().items()}
    loss, _, _ = trainer.compute_losses(x, target, xu)
    loss.backward()
    assert all(p.grad is None for p in net.teacher.parameters())
    # every student parameter learns, except the lowest-resolution head (nnU-Net's deep-supervision weight 0)
    assert {k for k, p in net.student.named_parameters() if p.grad is None} == \
        {"decoder.seg_layers.0.weight", "decoder.seg_layers.0.bias"}
    trainer.optimizer.step()
    student_after = {k: v.clone() for k, v in net.student.state_dict().items()}
    trainer.after_optimizer_step()
    for key, value in net.teacher.state_dict().items():
        torch.testing.assert_close(value, 0.875 * teacher_before[key] + 0.125 * student_after[key], rtol=0,
                                   atol=1e-6)


def test_eval_forward_returns_the_evaluated_network_and_predictor_loads_strictly():
    from nnunet_semi.training.mean_teacher import nnUNetTrainerMeanTeacher_evalTeacher
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    plans = PlansManager(_plans(2))
    cm = plans.get_configuration("cfg")
    for cls, evaluated in ((TRAINERS["nnUNetTrainerMeanTeacher"], "student"),
                           (nnUNetTrainerMeanTeacher_evalTeacher, "teacher")):
        torch.manual_seed(0)
        trained = cls.build_network_architecture(plans, cm, 1, 3, True)
        with torch.no_grad():
            for p in trained.teacher.parameters():
                p.mul_(0.5)
        predictor_net = cls.build_network_architecture(plans, cm, 1, 3, enable_deep_supervision=False)
        predictor_net.load_state_dict(trained.state_dict())  # strict, as nnUNetv2_predict does
        predictor_net.eval()
        x = torch.randn(2, 1, 16, 12)
        with torch.no_grad():
            out = predictor_net(x)
            expected = getattr(predictor_net, evaluated)(x)
            other = getattr(predictor_net, "teacher" if evaluated == "student" else "student")(x)
        assert isinstance(out, torch.Tensor) and out.shape == (2, 3, 16, 12)
        assert torch.equal(out, expected) and not torch.allclose(out, other)
        assert {k.split(".")[0] for k in trained.state_dict()} == {"student", "teacher"}
    with pytest.raises(ValueError):
        MeanTeacherNetwork(nn.Linear(2, 2), evaluate="ensemble")


def test_channel_dropout_drops_whole_channels_and_rescales():
    torch.manual_seed(0)
    x = torch.ones(3, 64, 5, 4, 2)
    y = channel_dropout(x, 0.5)
    per_channel = y.flatten(2)
    assert torch.all((per_channel == 0).all(-1) | (per_channel == 2.0).all(-1))  # a channel is dropped or x 1/(1-p)
    assert 0.3 < (per_channel[..., 0] == 0).float().mean() < 0.7
    assert torch.equal(channel_dropout(x, 0.0), x)
    with pytest.raises(ValueError):
        channel_dropout(x, 1.0)


def test_teacher_forward_dropout_is_stochastic_only_when_asked(make_trainer):
    trainer = make_trainer("nnUNetTrainerUAMT", 2)
    net = trainer.mean_teacher
    x = torch.randn(2, 1, 16, 12)
    a, b = net.teacher_forward(x)[0], net.teacher_forward(x)[0]
    assert torch.equal(a, b)
    c, d = net.teacher_forward(x, 0.5)[0], net.teacher_forward(x, 0.5)[0]
    assert not torch.equal(c, d) and not torch.equal(a, c)
    assert torch.equal(net.teacher_forward(x)[0], a)  # the hook is gone after the call
    assert not c.requires_grad


def test_input_noise_is_clamped_gaussian():
    torch.manual_seed(0)
    noise = gaussian_input_noise(torch.zeros(200000))
    assert noise.abs().max() <= 0.2 and (noise.abs() == 0.2).any()
    torch.manual_seed(0)
    expected = torch.clamp(torch.randn(200000) * 0.1, -0.2, 0.2)
    assert torch.equal(noise, expected)


# ------------------------------------------------------------------------------------------------- losses
def _np_softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


@pytest.mark.parametrize("shape", [(2, 3, 5, 4), (2, 4, 3, 4, 2)])
def test_softmax_mse_and_entropies_equal_numpy(shape):
    rng = np.random.default_rng(0)
    z_s, z_t = rng.normal(size=shape) * 2, rng.normal(size=shape) * 2
    p_t = _np_softmax(z_t)
    got = softmax_mse(torch.tensor(z_s), torch.tensor(p_t))
    assert got.item() == pytest.approx(((_np_softmax(z_s) - p_t) ** 2).mean(), rel=1e-5)
    ent = -(p_t * np.log(p_t + 1e-6)).sum(1)
    np.testing.assert_allclose(entropy_map(torch.tensor(p_t)).numpy(), ent, rtol=1e-5)
    assert mean_entropy(torch.tensor(z_t), normalize=False).item() == pytest.approx(ent.mean(), rel=1e-5)
    assert mean_entropy(torch.tensor(z_t)).item() == pytest.approx(ent.mean() / math.log(shape[1]), rel=1e-5)
    mc = _np_softmax(rng.normal(size=(8,) + shape).reshape((-1,) + shape[1:])).reshape((8,) + shape)
    mu = mc.mean(0)
    np.testing.assert_allclose(predictive_entropy(torch.tensor(mc)).numpy(), -(mu * np.log(mu + 1e-6)).sum(1),
                               rtol=1e-5)


def test_uamt_threshold_and_masked_consistency_equal_loops():
    assert uamt_threshold(0.0, 2) == pytest.approx((0.75 + 0.25 * math.exp(-5)) * math.log(2))
    assert uamt_threshold(0.5, 3) == pytest.approx((0.75 + 0.25 * math.exp(-5 * 0.25)) * math.log(3))
    assert uamt_threshold(1.0, 3) == pytest.approx(math.log(3))
    rng = np.random.default_rng(1)
    z_s, p_t = rng.normal(size=(2, 3, 4, 5)), _np_softmax(rng.normal(size=(2, 3, 4, 5)))
    u = rng.uniform(0, 1.1, size=(2, 4, 5))
    loss, mask = uncertainty_masked_mse(torch.tensor(z_s), torch.tensor(p_t), torch.tensor(u), 0.6)
    p_s = _np_softmax(z_s)
    num, count = 0.0, 0
    for b in range(2):
        for i in range(4):
            for j in range(5):
                if u[b, i, j] < 0.6:
                    count += 1
                    num += sum((p_s[b, c, i, j] - p_t[b, c, i, j]) ** 2 for c in range(3))
    assert mask.sum().item() == count and 0 < count < 40
    assert loss.item() == pytest.approx(num / (3 * count), rel=1e-6)
    zero, _ = uncertainty_masked_mse(torch.tensor(z_s, requires_grad=True), torch.tensor(p_t), torch.tensor(u), -1)
    assert zero.item() == 0.0 and zero.requires_grad


# ------------------------------------------------------------------------------------------------- trainers' steps
def _numpy_soft_dice_vs_argmax(student_logits: np.ndarray, teacher_probs: np.ndarray, smooth: float = 1e-5) -> float:
    """1 - mean over classes of (2 sum p y + s) / (sum p + sum y + s), sums over batch and voxels, y one-hot of the
    teacher's argmax: written from the formula, with NumPy."""
    e = np.exp(student_logits - student_logits.max(1, keepdims=True))
    p = e / e.sum(1, keepdims=True)
    labels = teacher_probs.argmax(1)
    dices = []
    for c in range(p.shape[1]):
        y = (labels == c).astype(np.float64)
        dices.append((2 * (p[:, c] * y).sum() + smooth) / (p[:, c].sum() + y.sum() + smooth))
    return 1 - float(np.mean(dices))


@pytest.mark.parametrize("shape", [(2, 3, 5, 4), (2, 3, 3, 4, 5)])
def test_teacher_consistency_forms_equal_numpy(shape):
    g = torch.Generator().manual_seed(3)
    student = torch.randn(*shape, generator=g, dtype=torch.float64)
    teacher = torch.softmax(torch.randn(*shape, generator=g, dtype=torch.float64) * 3, 1)
    assert teacher_consistency(student, teacher, "mse").item() == pytest.approx(softmax_mse(student, teacher).item())
    dice = teacher_consistency(student, teacher, "dice")
    assert dice.item() == pytest.approx(_numpy_soft_dice_vs_argmax(student.numpy(), teacher.numpy()), rel=1e-6)
    assert 0 < dice.item() < 1
    sure = torch.nn.functional.one_hot(teacher.argmax(1), 3).movedim(-1, 1).double() * 40.0  # student = argmax
    assert teacher_consistency(sure, teacher, "dice").item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="'ce'"):
        teacher_consistency(student, teacher, "ce")


def _softmax_mse_numpy(student_logits: np.ndarray, teacher_probs: np.ndarray) -> float:
    e = np.exp(student_logits - student_logits.max(1, keepdims=True))
    return float(((e / e.sum(1, keepdims=True) - teacher_probs) ** 2).mean())


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("name, loss_kind, max_weight, recompute, rel", [
    ("nnUNetTrainerMeanTeacher", "mse", 0.1, _softmax_mse_numpy, 1e-5),  # the paper's default
    ("nnUNetTrainerMeanTeacher_dice", "dice", 1.0, _numpy_soft_dice_vs_argmax, 1e-4)])
def test_mean_teacher_step_equals_recomputation(make_trainer, ndim, name, loss_kind, max_weight, recompute, rel):
    trainer = make_trainer(name, ndim)
    assert (trainer.consistency_loss, trainer.consistency_weight) == (loss_kind, max_weight)
    x, target, xu = _batch(trainer)
    trainer.current_epoch, trainer.step_in_epoch = 0, 3  # progress 3/20, ramp-up over 0.4 -> t = 0.375
    torch.manual_seed(5)
    loss, logged, curves = trainer.compute_losses(x, target, xu)
    weight = max_weight * math.exp(-5 * (1 - 0.375) ** 2)
    assert curves["consistency_weights"] == pytest.approx(weight)
    net = trainer.mean_teacher
    torch.manual_seed(5)
    with torch.no_grad():
        student = net.student(torch.cat((x, xu)))
        noise = torch.clamp(torch.randn_like(xu) * 0.1, -0.2, 0.2)
        p_t = torch.softmax(net.teacher(xu + noise)[0], 1)
    expected_cons = recompute(student[0][4:].double().numpy(), p_t.double().numpy())
    assert curves["consistency_losses"] == pytest.approx(expected_cons, rel=rel)
    expected_sup = trainer.loss([s[:4] for s in student], target).item()
    assert curves["sup_losses"] == pytest.approx(expected_sup, rel=1e-5)
    assert loss.item() == pytest.approx(expected_sup + weight * expected_cons, rel=rel)
    assert torch.equal(loss, logged)


@pytest.mark.parametrize("ndim", [2, 3])
def test_uamt_step_equals_recomputation(make_trainer, ndim):
    trainer = make_trainer("nnUNetTrainerUAMT", ndim)
    assert (trainer.mc_passes, trainer.mc_dropout, trainer.ema_decay) == (8, 0.5, 0.99)
    x, target, xu = _batch(trainer)
    trainer.current_epoch, trainer.step_in_epoch = 2, 0  # progress 0.5
    torch.manual_seed(11)
    loss, _, curves = trainer.compute_losses(x, target, xu)
    net = trainer.mean_teacher
    torch.manual_seed(11)
    with torch.no_grad():
        student = net.student(torch.cat((x, xu)))[0][4:]

        def noisy_pass(inp):
            inp = inp + torch.clamp(torch.randn_like(inp) * 0.1, -0.2, 0.2)
            return torch.softmax(net.teacher_forward(inp, 0.5)[0], 1)

        p_t = noisy_pass(xu)
        mc = torch.stack([p for _ in range(4) for p in noisy_pass(torch.cat((xu, xu))).split(4)])
    assert mc.shape == (8, 4, 3, *trainer.configuration_manager.patch_size)
    mu = mc.mean(0)
    u = -(mu * torch.log(mu + 1e-6)).sum(1)
    threshold = (0.75 + 0.25 * math.exp(-5 * 0.25)) * math.log(3)
    mask = (u < threshold).float()
    expected = (((torch.softmax(student, 1) - p_t) ** 2) * mask[:, None]).sum() / (3 * mask.sum())
    assert curves["certain_fraction"] == pytest.approx(mask.mean().item())
    assert 0 < curves["certain_fraction"] < 1
    assert curves["consistency_losses"] == pytest.approx(expected.item(), rel=1e-5)
    assert curves["consistency_weights"] == 0.1  # progress 0.5 is past the ramp-up (40 %)
    assert loss.item() == pytest.approx(curves["sup_losses"] + 0.1 * expected.item(), rel=1e-5)


@pytest.mark.parametrize("ndim", [2, 3])
def test_entmin_step_equals_numpy(make_trainer, ndim):
    trainer = make_trainer("nnUNetTrainerEntMin", ndim)
    assert not hasattr(trainer.network, "teacher")
    x, target, xu = _batch(trainer)
    trainer.current_epoch, trainer.step_in_epoch = 0, 0  # progress 0: lambda = 0.1 e^-5
    loss, _, curves = trainer.compute_losses(x, target, xu)
    with torch.no_grad():
        logits = trainer.network(torch.cat((x, xu)))[0][4:].numpy()
    p = _np_softmax(logits.astype(np.float64))
    expected = (-(p * np.log(p + 1e-6)).sum(1)).mean() / math.log(3)
    assert curves["entropy_losses"] == pytest.approx(expected, rel=1e-5)
    assert curves["entropy_weights"] == pytest.approx(0.1 * math.exp(-5))
    assert loss.item() == pytest.approx(curves["sup_losses"] + 0.1 * math.exp(-5) * expected, rel=1e-5)
    loss.backward()


# ------------------------------------------------------------------------------------------------- BCP
@pytest.mark.parametrize("shape", [(16, 12), (8, 16, 12), (9, 7, 5)])
def test_box_mask_is_a_two_thirds_box_inside_the_patch(shape):
    starts = set()
    for seed in range(30):
        mask = box_mask(shape, generator=torch.Generator().manual_seed(seed)).numpy()
        zeros = np.argwhere(mask == 0)
        lo, hi = zeros.min(0), zeros.max(0) + 1
        assert list(hi - lo) == [int(s * 2 / 3) for s in shape]
        assert len(zeros) == np.prod([int(s * 2 / 3) for s in shape])  # one solid box, ones elsewhere
        assert set(np.unique(mask)) == {0.0, 1.0}
        starts.add(tuple(lo))
    assert len(starts) > 5  # random position


def test_copy_paste_and_region_targets_equal_numpy():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(2, 1, 6, 5)), rng.normal(size=(2, 1, 6, 5))
    mask = np.ones((6, 5))
    mask[1:5, 2:5] = 0
    mixed = copy_paste(torch.tensor(a), torch.tensor(b), torch.tensor(mask)).numpy()
    for idx in np.ndindex(2, 1, 6, 5):
        assert mixed[idx] == (a[idx] if mask[idx[2:]] == 1 else b[idx])
    ya, yb = torch.full((2, 1, 6, 5), 1.0), torch.full((2, 1, 6, 5), 2.0)
    t_out, t_in = region_targets(ya, yb, torch.tensor(mask), 3)
    assert torch.equal(t_out[0, 0], torch.tensor(np.where(mask == 1, 1.0, 3.0)))
    assert torch.equal(t_in[1, 0], torch.tensor(np.where(mask == 0, 2.0, 3.0)))
    with pytest.raises(ValueError):
        copy_paste(torch.tensor(a), torch.tensor(b), torch.ones(5, 5))


def test_largest_component_per_class():
    labels = torch.zeros(1, 1, 6, 7, dtype=torch.long)
    labels[0, 0, 0:2, 0:2] = 1  # 4 voxels
    labels[0, 0, 4:6, 4:7] = 1  # 6 voxels: kept
    labels[0, 0, 0, 6] = 2  # 1 voxel
    labels[0, 0, 2:4, 2:3] = 2  # 2 voxels: kept
    labels[0, 0, 5, 0] = 2  # touches nothing of class 2
    out = largest_component_per_class(labels, 3)[0, 0]
    expected = torch.zeros(6, 7, dtype=torch.long)
    expected[4:6, 4:7] = 1
    expected[2:4, 2:3] = 2
    assert torch.equal(out, expected)
    diag = torch.zeros(1, 1, 3, 3, 3, dtype=torch.long)
    diag[0, 0, 0, 0, 0] = diag[0, 0, 1, 1, 1] = 1  # corner-connected in 3D: one component (full connectivity)
    assert torch.equal(largest_component_per_class(diag, 2), diag)


def test_downsample_targets_follow_the_output_scales():
    t = torch.arange(16.0).reshape(1, 1, 4, 4)
    outs = [torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 2, 2)]
    full, half = downsample_targets(t, outs)
    assert full is t
    assert torch.equal(half, torch.nn.functional.interpolate(t, size=(2, 2), mode="nearest-exact"))


class _RecordingRegionLoss:
    """Stands in for the region loss: records the (output, target) pairs and returns 1, 2, 3, ... per call."""

    def __init__(self):
        self.calls = []

    def __call__(self, output, target):
        self.calls.append((output, target))
        return output[0].sum() * 0.0 + float(len(self.calls))


@pytest.mark.parametrize("ndim", [2, 3])
def test_bcp_mixed_images_targets_and_weights(make_trainer, ndim):
    trainer = make_trainer("nnUNetTrainerBCP", ndim)
    assert (trainer.unlabeled_weight, trainer.mask_ratio, trainer.ema_decay, trainer.ema_warmup) == \
        (0.5, 2 / 3, 0.99, False)
    assert trainer.pretrain_epochs() == 1  # 4 epochs x 1/4
    patch = trainer.configuration_manager.patch_size
    x, target, xu = _batch(trainer)
    y = target[0]
    inputs = []
    trainer.network.register_forward_pre_hook(lambda module, args: inputs.append(args[0].clone()))

    # real losses: one call per stage, gradients reach the student only
    for epoch in (0, 1):
        trainer.current_epoch = epoch
        loss, _, curves = trainer.compute_losses(x, target, xu)
        loss.backward()
        assert curves["self_training_stage"] == epoch and math.isfinite(loss.item())
    assert all(p.grad is None for p in trainer.mean_teacher.teacher.parameters())

    trainer.region_loss_fn = _RecordingRegionLoss()
    # stage 1: labeled image i with the box of labeled image (i - 2) mod 4
    trainer.current_epoch = 0
    inputs.clear()
    torch.manual_seed(21)
    total, _, curves = trainer.compute_losses(x, target, xu)
    torch.manual_seed(21)
    mask = box_mask(patch, 2 / 3)
    partner = x[[2, 3, 0, 1]]
    assert torch.equal(inputs[0], x * mask + partner * (1 - mask))
    (_, t_outer), (_, t_inner) = trainer.region_loss_fn.calls
    assert torch.equal(t_outer[0], torch.where(mask == 1, y, 3.0))
    assert torch.equal(t_inner[0], torch.where(mask == 0, y[[2, 3, 0, 1]], 3.0))
    assert [t.shape[2:] for t in t_outer] == [o.shape[2:] for o in trainer.region_loss_fn.calls[0][0]]
    assert total.item() == pytest.approx(0.5 * (1 + 2))

    # stage 2: unlabeled a with a labeled crop, labeled b with an unlabeled crop; alpha on the pseudo-labeled parts
    trainer.current_epoch = 1
    trainer.region_loss_fn = _RecordingRegionLoss()
    inputs.clear()
    torch.manual_seed(22)
    total, _, curves = trainer.compute_losses(x, target, xu)
    torch.manual_seed(22)
    mask = box_mask(patch, 2 / 3)
    with torch.no_grad():
        y_hat = largest_component_per_class(trainer.mean_teacher.teacher(xu)[0].argmax(1, keepdim=True), 3).float()
    expected_input = torch.cat((xu[:2] * mask + x[:2] * (1 - mask), x[2:] * mask + xu[2:] * (1 - mask)))
    assert torch.equal(inputs[-1], expected_input)
    targets = [call[1][0] for call in trainer.region_loss_fn.calls]
    inside = mask == 0
    assert torch.equal(targets[0], torch.where(inside, 3.0, y_hat[:2]))  # unlabeled outside: pseudo-labels
    assert torch.equal(targets[1], torch.where(inside, y[:2], 3.0))  # labeled crop inside
    assert torch.equal(targets[2], torch.where(inside, 3.0, y[2:]))  # labeled outside
    assert torch.equal(targets[3], torch.where(inside, y_hat[2:], 3.0))  # unlabeled crop inside
    # calls return 1, 2, 3, 4: L = (0.5 * 1 + 2 + 3 + 0.5 * 4) / 2
    assert total.item() == pytest.approx(0.5 * (0.5 * 1 + 2 + 3 + 0.5 * 4))
    assert curves["labeled_region_losses"] == pytest.approx(0.5 * (2 + 3))
    assert curves["pseudo_region_losses"] == pytest.approx(0.5 * (1 + 4))


def test_bcp_teacher_is_copied_at_the_stage_switch_and_ema_only_afterwards(make_trainer):
    trainer = make_trainer("nnUNetTrainerBCP", 2)
    net = trainer.mean_teacher
    with torch.no_grad():
        for p in net.student.parameters():
            p.add_(1.0)
    trainer.current_epoch = 0
    assert not trainer.ema_active()
    teacher_before = {k: v.clone() for k, v in net.teacher.state_dict().items()}
    trainer.after_optimizer_step()
    # no EMA in the labeled pre-training stage
    assert all(torch.equal(v, teacher_before[k]) for k, v in net.teacher.state_dict().items())
    trainer.print_to_log_file = lambda *a, **k: None
    trainer.current_epoch = 1
    trainer.lr_scheduler.step = lambda *a, **k: None
    trainer.on_train_epoch_start()
    assert all(torch.equal(v, net.student.state_dict()[k]) for k, v in net.teacher.state_dict().items())
    assert trainer.ema_active()


def test_registered_with_budget_variants():
    for name in METHODS:
        assert name in TRAINERS and f"{name}_2epochs_5its" in TRAINERS and f"{name}_100epochs" in TRAINERS
        assert TRAINERS[f"{name}_2epochs_5its"].__module__ == TRAINERS[name].__module__
    assert "nnUNetTrainerMeanTeacher_evalTeacher" in TRAINERS


def test_bcp_logs_the_pseudo_label_foreground_and_warns_once_about_a_background_only_teacher(make_trainer):
    """A teacher that predicts background only (here: its background bias set huge) makes pseudo-labels without
    foreground; the first self-training step says so in the log (once), and the curve shows the fraction."""
    trainer = make_trainer("nnUNetTrainerBCP", 2)
    logged = []
    trainer.print_to_log_file = lambda *args, **kwargs: logged.append(" ".join(map(str, args)))
    x, target, xu = _batch(trainer)
    trainer.current_epoch = 0
    assert trainer.compute_losses(x, target, xu)[2]["pseudo_label_foreground"] == 0.0
    trainer.current_epoch = 1
    with torch.no_grad():
        for name, p in trainer.mean_teacher.teacher.named_parameters():
            if name.startswith("decoder.seg_layers.") and name.endswith("bias"):
                p.copy_(torch.tensor([1e4, 0.0, 0.0]))
    for _ in range(2):
        assert trainer.compute_losses(x, target, xu)[2]["pseudo_label_foreground"] == 0.0
    assert len([m for m in logged if "predicts background only" in m]) == 1

    # a teacher that predicts foreground: the measured fraction, and no warning
    trainer._teacher_checked, logged[:] = False, []
    with torch.no_grad():
        for name, p in trainer.mean_teacher.teacher.named_parameters():
            if name.startswith("decoder.seg_layers.") and name.endswith("bias"):
                p.copy_(torch.tensor([0.0, 0.0, 0.0]))
    y_hat = trainer.pseudo_labels(xu)
    fraction = trainer.compute_losses(x, target, xu)[2]["pseudo_label_foreground"]
    assert fraction == pytest.approx((y_hat > 0).float().mean().item()) and fraction > 0
    assert not logged
