"""Dual-stream contrastive method (Karimijafarbigloo et al., arXiv:2311.12617): eq. 2 entropy filter, eq. 4 M_diff,
eq. 5 L_reg, eq. 6-7 prototypes and L_c against independent NumPy recomputations and hand-computed cases; the
schedules; the trainer's wiring (pseudo-labels follow the lower L_s) with tiny networks and stub losses."""
import math
from functools import partial

import numpy as np
import pytest
import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet, ResidualEncoderUNet

from nnunet_semi.losses.dual_stream import (class_prototypes, confident_disagreement_mask, disagreement_l1_loss,
                                            normalized_entropy, prototype_loss, pseudo_label_source, reliable_mask)
from nnunet_semi.schedules import confidence_threshold, contrastive_weight
from nnunet_semi.training.dual_stream import _keep_output, nnUNetTrainerDualStreamCL, partner_architecture
from tests.unit.test_teacher_family import make_trainer  # noqa: F401 (fixture: a real trainer)


def _probs(rng, shape, scale=3.0):
    z = rng.normal(size=shape) * scale
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


# ------------------------------------------------------------------------------------------ eq. 2 entropy filter
@pytest.mark.parametrize("shape,fraction", [((2, 3, 5, 4), 0.2), ((2, 2, 3, 4, 5), 0.35), ((1, 4, 7, 3), 0.0)])
def test_reliable_mask_equals_numpy_percentile_rule(shape, fraction):
    rng = np.random.default_rng(1)
    p = _probs(rng, shape)
    entropy = -(p * np.log(p)).sum(1) / math.log(shape[1])
    n = entropy.size
    n_unreliable = int(math.floor(fraction * n))
    expected = np.ones_like(entropy, dtype=bool)
    expected.flat[np.argsort(entropy, axis=None)[n - n_unreliable:]] = False  # the highest entropies (no ties)
    assert np.allclose(normalized_entropy(torch.from_numpy(p)).numpy(), entropy, atol=1e-6)
    mask = reliable_mask(torch.from_numpy(p), fraction).numpy()
    assert (mask == expected).all() and (~mask).sum() == n_unreliable


def test_reliable_mask_hand_computed():
    # 5 voxels, 2 classes: p(fg) = 0.5 (entropy 1), 0.99, 0.7, 0.01, 0.6  ->  the 2 most uncertain are 0.5 and 0.6
    fg = torch.tensor([0.5, 0.99, 0.7, 0.01, 0.6])
    probs = torch.stack([1 - fg, fg])[None]  # (1, 2, 5)
    assert normalized_entropy(probs)[0, 0].item() == pytest.approx(1.0)
    assert reliable_mask(probs, 0.4).tolist() == [[False, True, True, True, False]]
    with pytest.raises(ValueError):
        reliable_mask(probs, 1.0)


# ---------------------------------------------------------------------------------------------- eq. 4-5
@pytest.mark.parametrize("threshold", [0.5, 0.7, 0.9])
def test_m_diff_and_l_reg_equal_numpy(threshold):
    rng = np.random.default_rng(2)
    pa, pb = _probs(rng, (2, 3, 6, 5, 4)), _probs(rng, (2, 3, 6, 5, 4))
    m = (pa.max(1) > threshold) & (pb.max(1) > threshold) & (pa.argmax(1) != pb.argmax(1))
    mask = confident_disagreement_mask(torch.from_numpy(pa), torch.from_numpy(pb), threshold)
    assert (mask.numpy() == m).all() and m.any()
    l1 = np.abs(m[:, None] * pa - m[:, None] * pb).sum()  # eq. 5 verbatim
    ta, tb = torch.from_numpy(pa), torch.from_numpy(pb)
    assert disagreement_l1_loss(ta, tb, mask, "sum").item() == pytest.approx(l1, rel=1e-12)
    assert disagreement_l1_loss(ta, tb, mask, "mean").item() == pytest.approx(l1 / m.size, rel=1e-12)
    assert disagreement_l1_loss(ta, tb, mask).item() == pytest.approx(l1 / m.sum(), rel=1e-12)


def test_m_diff_hand_computed_and_gradient_reaches_both():
    # voxel 0: both confident, disagree -> in M_diff; 1: both confident, agree; 2: disagree, B unconfident;
    # 3: disagree, both exactly at T (strict '>') -> not in M_diff
    pa = torch.tensor([[[0.9, 0.95, 0.9, 0.8], [0.1, 0.05, 0.1, 0.2]]], requires_grad=True)
    pb = torch.tensor([[[0.15, 0.9, 0.45, 0.2], [0.85, 0.1, 0.55, 0.8]]], requires_grad=True)
    mask = confident_disagreement_mask(pa, pb, 0.8)
    assert mask.tolist() == [[True, False, False, False]]
    loss = disagreement_l1_loss(pa, pb, mask)
    assert loss.item() == pytest.approx(0.75 + 0.75)
    loss.backward()
    assert pa.grad[0, :, 0].tolist() == [1.0, -1.0] and pb.grad[0, :, 0].tolist() == [-1.0, 1.0]
    assert pa.grad[0, :, 1:].abs().sum() == 0


# ---------------------------------------------------------------------------------------------- eq. 6-7
def _numpy_prototype_loss(f, labels, reliable, k_classes, temperature, sep_weight, normalize):
    """Loops over voxels / classes: f (B, D, *S), labels and reliable (B, *S)."""
    f = np.moveaxis(f, 1, -1).reshape(-1, f.shape[1])
    if normalize:
        f = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
    labels, reliable = labels.reshape(-1), reliable.reshape(-1)
    protos = {}
    for k in range(k_classes):
        members = [f[i] for i in range(len(f)) if reliable[i] and labels[i] == k]
        if members:
            protos[k] = np.mean(members, 0)  # eq. 6
    terms = []
    for i in range(len(f)):
        if reliable[i] or labels[i] not in protos:
            continue
        logits = {k: -np.sum((f[i] - c) ** 2) / temperature for k, c in protos.items()}
        log_z = math.log(sum(math.exp(v) for v in logits.values()))
        terms.append(-(logits[labels[i]] - log_z))  # -log p(y = y_hat | v), eq. 7
    pull = float(np.mean(terms)) if terms else 0.0
    keys = sorted(protos)
    pairs = [math.exp(-np.sum((protos[a] - protos[b]) ** 2) / temperature)
             for x, a in enumerate(keys) for b in keys[x + 1:]]
    push = float(np.mean(pairs)) if pairs else 0.0
    return protos, pull, push, pull + sep_weight * push


@pytest.mark.parametrize("shape,k_classes,temperature,normalize", [((2, 4, 5, 6), 3, 1.0, True),
                                                                   ((2, 5, 3, 4, 3), 4, 0.5, False)])
def test_prototypes_and_l_c_equal_numpy(shape, k_classes, temperature, normalize):
    rng = np.random.default_rng(3)
    f = rng.normal(size=shape)
    labels = rng.integers(0, k_classes, size=(shape[0],) + shape[2:])
    labels[labels == k_classes - 1] = 0  # the last class has no voxel at all: no prototype
    reliable = rng.random(labels.shape) > 0.3
    protos, pull, push, total = _numpy_prototype_loss(f, labels, reliable, k_classes, temperature, 0.7, normalize)

    tf, tl, tr = torch.from_numpy(f), torch.from_numpy(labels), torch.from_numpy(reliable)
    feats = torch.nn.functional.normalize(tf, dim=1) if normalize else tf
    c, present = class_prototypes(feats, tl, tr, k_classes)
    assert present.tolist() == [k in protos for k in range(k_classes)]
    for k, ck in protos.items():
        assert np.allclose(c[k].numpy(), ck, atol=1e-12)
    l_c, l_pull, l_push = prototype_loss(tf, tl, tr, k_classes, temperature, 0.7, normalize)
    assert l_pull.item() == pytest.approx(pull, rel=1e-6)
    assert l_push.item() == pytest.approx(push, rel=1e-6)
    assert l_c.item() == pytest.approx(total, rel=1e-6)


def test_l_c_hand_computed_and_gradients():
    # 1-D features (D = 1) of 4 voxels, no normalisation: reliable 0 (class 0, f = 0) and 1 (class 1, f = 2);
    # unreliable 2 (class 0, f = 1.5) and 3 (class 1, f = 1)  ->  c_0 = 0, c_1 = 2
    f = torch.tensor([[[0.0, 2.0, 1.5, 1.0]]], requires_grad=True)  # (B=1, D=1, N=4)
    labels = torch.tensor([[0, 1, 0, 1]])
    reliable = torch.tensor([[True, True, False, False]])
    l_c, pull, push = prototype_loss(f, labels, reliable, 2, normalize=False)
    # voxel 2: d = (2.25, 0.25) -> -log(e^-2.25 / (e^-2.25 + e^-0.25)); voxel 3: d = (1, 1) -> log 2
    v2 = -(-2.25 - math.log(math.exp(-2.25) + math.exp(-0.25)))
    assert pull.item() == pytest.approx((v2 + math.log(2)) / 2)
    assert push.item() == pytest.approx(math.exp(-4.0))
    assert l_c.item() == pytest.approx(pull.item() + push.item())
    pull.backward(retain_graph=True)
    assert f.grad[0, 0, :2].tolist() == [0.0, 0.0]  # prototypes are detached in the pull term
    assert f.grad[0, 0, 2].item() > 0  # descent moves voxel 2 (class 0, f = 1.5) towards c_0 = 0
    f.grad = None
    push.backward()
    assert f.grad[0, 0, 1].item() < 0 < f.grad[0, 0, 0].item()  # descent pushes c_0 = 0 down, c_1 = 2 up
    assert f.grad[0, 0, 2:].tolist() == [0.0, 0.0]


def test_l_c_degenerate_cases_are_zero_and_attached():
    f = torch.randn(1, 3, 4, 4, requires_grad=True)
    labels = torch.zeros(1, 4, 4, dtype=torch.long)
    for reliable in (torch.ones(1, 4, 4, dtype=torch.bool), torch.zeros(1, 4, 4, dtype=torch.bool)):
        l_c, pull, push = prototype_loss(f, labels, reliable, 2)
        assert l_c.item() == pull.item() == push.item() == 0.0
        l_c.backward()


# ---------------------------------------------------------------------------------------------- schedules
def test_schedules():
    assert contrastive_weight(0, 100) == pytest.approx(0.1 * math.exp(4))  # as printed: 5.46 at t = 0
    assert contrastive_weight(100, 100) == pytest.approx(0.1)
    assert contrastive_weight(50, 100) == pytest.approx(0.1 * math.exp(1))
    assert contrastive_weight(0, 100, exponent=-4) == pytest.approx(0.1 * math.exp(-4))  # rising reading
    assert contrastive_weight(250, 100) == pytest.approx(0.1)  # clipped
    assert confidence_threshold(0, 10) == pytest.approx(0.6)
    assert confidence_threshold(5, 10) == pytest.approx(0.75)
    assert confidence_threshold(10, 10, 0.5, 0.95) == pytest.approx(0.95)


def test_pseudo_label_source_is_lower_supervised_loss():
    assert pseudo_label_source([0.4, 0.7]) == 0
    assert pseudo_label_source([0.9, torch.tensor(0.3)]) == 1
    assert pseudo_label_source([0.5, 0.5]) == 0


# ---------------------------------------------------------------------------------------------- trainer wiring
_ARCH = {"n_stages": 3, "features_per_stage": [4, 8, 16], "conv_op": "torch.nn.modules.conv.Conv2d",
         "kernel_sizes": [[3, 3]] * 3, "strides": [[1, 1], [2, 2], [2, 2]], "n_conv_per_stage": [2, 2, 2],
         "n_conv_per_stage_decoder": [2, 2], "conv_bias": True,
         "norm_op": "torch.nn.modules.instancenorm.InstanceNorm2d", "norm_op_kwargs": {"eps": 1e-5, "affine": True},
         "dropout_op": None, "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
         "nonlin_kwargs": {"inplace": True}}
_CONFIG = {"architecture": {"network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
                            "arch_kwargs": _ARCH, "_kw_requires_import": ["conv_op", "norm_op", "dropout_op",
                                                                          "nonlin"]}}


def _dual(deep_supervision=True):
    from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager
    return nnUNetTrainerDualStreamCL.build_network_architecture(None, ConfigurationManager(_CONFIG), 1, 3,
                                                                enable_deep_supervision=deep_supervision)


def test_two_architectures_from_the_same_plans_and_predictor_loading():
    name, kwargs = partner_architecture(_CONFIG["architecture"]["network_class_name"], _ARCH)
    assert name.endswith("ResidualEncoderUNet") and kwargs["n_blocks_per_stage"] == [1, 1, 1]
    assert "n_conv_per_stage" not in kwargs and _ARCH["n_conv_per_stage"] == [2, 2, 2]  # plans untouched
    back, back_kwargs = partner_architecture(name, kwargs)
    assert back.endswith("PlainConvUNet") and back_kwargs["n_conv_per_stage"] == [2, 2, 2]
    with pytest.raises(NotImplementedError):
        partner_architecture("some.module.Primus", _ARCH)

    torch.manual_seed(0)
    trained = _dual(True)
    assert isinstance(trained.net_a, PlainConvUNet) and isinstance(trained.net_b, ResidualEncoderUNet)
    assert [s.output_channels for s in (trained.net_a.decoder.stages[-1], trained.net_b.decoder.stages[-1])] == [4, 4]
    predictor_net = _dual(False)  # what nnUNetv2_predict builds, then loads strictly
    predictor_net.load_state_dict(trained.state_dict())
    predictor_net.eval()
    with torch.no_grad():
        out = predictor_net(torch.randn(1, 1, 16, 16))
    assert isinstance(out, torch.Tensor) and out.shape == (1, 3, 16, 16)


class _StubSupervisedLoss:
    """Stands in for nnU-Net's deep-supervision Dice + CE: returns preset values, alternately for A and B."""

    def __init__(self, values):
        self.values = list(values)

    def __call__(self, output, target):
        return output[0].sum() * 0.0 + self.values.pop(0)


class _RecordingLoss:
    def __init__(self):
        self.targets = []

    def __call__(self, logits, target):
        self.targets.append(target.clone())
        return logits.float().mean() * 0.0 + 0.25


def _stub_trainer(sup_values):
    trainer = nnUNetTrainerDualStreamCL.__new__(nnUNetTrainerDualStreamCL)  # no nnU-Net set-up: only the step
    torch.manual_seed(0)
    trainer.network = _dual(True)
    trainer.loss = _StubSupervisedLoss(sup_values)
    trainer.loss_unlabeled = _RecordingLoss()
    trainer.unsup_ignore_value = 3
    trainer._decoder_features = {}
    for i, net in enumerate(trainer.network.members):
        net.decoder.stages[-1].register_forward_hook(partial(_keep_output, trainer._decoder_features, i))
    trainer.current_epoch, trainer.num_epochs, trainer.num_iterations_per_epoch = 0, 2, 5
    trainer.step_in_epoch = 0
    for knob, value in dict(lambda_u=1.0, lambda_c_base=0.1, lambda_c_exponent=4.0, confidence_threshold_start=0.6,
                            confidence_threshold_end=0.9, unreliable_fraction=0.2, prototype_temperature=1.0,
                            prototype_separation_weight=1.0, use_reg=True, use_contrastive=True,
                            unsup_on_source=True, reg_reduction="masked_mean").items():
        setattr(trainer, knob, value)
    trainer.unsup_gate_dice = None  # the unlabeled-term gate of ``_gate`` (off: the paper's setting)
    return trainer


@pytest.mark.parametrize("sup_values,source", [((0.3, 0.8), 0), ((0.9, 0.2), 1)])
def test_pseudo_labels_come_from_the_subnetwork_with_lower_supervised_loss(sup_values, source):
    trainer = _stub_trainer(sup_values)
    torch.manual_seed(1)
    data, data_u = torch.randn(2, 1, 16, 16), torch.randn(2, 1, 16, 16)
    loss, logged, curves = trainer.compute_losses(data, [torch.zeros(2, 1, 16, 16)] * 3, data_u)
    assert trainer._decoder_features == {}  # features consumed

    with torch.no_grad():
        outs = [net(torch.cat((data, data_u)))[0][2:] for net in trainer.network.members]
    probs = torch.softmax(outs[source], 1)
    other = torch.softmax(outs[1 - source], 1)
    assert not torch.equal(probs.argmax(1), other.argmax(1))  # the two sources are distinguishable
    expected = torch.where(reliable_mask(probs, 0.2), probs.argmax(1), 3)[:, None]
    targets = trainer.loss_unlabeled.targets
    assert len(targets) == 2 and all(torch.equal(t, expected) for t in targets)  # both subnetworks learn from it
    assert curves["source_a_fraction"] == float(source == 0)
    assert curves["sup_losses"] == pytest.approx(sum(sup_values) / 2)
    assert curves["unsup_losses"] == pytest.approx(0.25)
    # eq. 3 with lambda_c at t = 0 (0.1 e^4) and L_reg inside L_u
    expected_logged = (sum(sup_values) / 2 + 0.25 + curves["reg_losses"]
                       + 0.1 * math.exp(4) * curves["contrastive_losses"])
    assert logged.item() == pytest.approx(expected_logged, rel=1e-5)
    loss.backward()
    for net in trainer.network.members:
        assert net.decoder.stages[-1].convs[0].conv.weight.grad.abs().sum() > 0  # L_c reaches both feature maps


def test_ablation_switches_zero_their_terms():
    trainer = _stub_trainer((0.3, 0.8))
    trainer.use_reg, trainer.use_contrastive = False, False
    _, _, curves = trainer.compute_losses(torch.randn(2, 1, 16, 16), [torch.zeros(2, 1, 16, 16)] * 3,
                                          torch.randn(2, 1, 16, 16))
    assert curves["reg_losses"] == 0.0 and curves["contrastive_losses"] == 0.0


def test_gate_variant_trains_on_the_labeled_loss_alone_until_it_opens():
    """``nnUNetTrainerDualStreamCL_gate``: while the gate is closed the loss is L_s of both subnetworks (L_u, L_reg
    and L_c computed, weighted 0); once open and ramped up it is the ungated loss of the same step."""
    from types import SimpleNamespace

    from nnunet_semi.training.dual_stream import nnUNetTrainerDualStreamCL_gate

    gated_trainer = nnUNetTrainerDualStreamCL_gate.__new__(nnUNetTrainerDualStreamCL_gate)
    assert {"unsup_gate", "labeled_dice_ema_min"} <= set(gated_trainer.extra_curves)

    def step(gate_dice, open_step=None):
        trainer = _stub_trainer((0.3, 0.8))
        trainer.unsup_gate_dice, trainer.unsup_gate_momentum, trainer.unsup_gate_rampup_fraction = gate_dice, 0.98, 0.1
        trainer.unlabeled_gate, trainer.is_ddp = None, False
        trainer.label_manager = SimpleNamespace(ignore_label=None)
        trainer.step_in_epoch = 2  # step 2 of 10 (the schedules of lambda_c and T read it)
        if open_step is not None:  # a gate that opened at ``open_step``: its ramp (0.1 x 10 steps) is over at step 2
            trainer.observe_labeled([torch.zeros(2, 3, 16, 16)], torch.zeros(2, 1, 16, 16))
            trainer.unlabeled_gate.open_step = open_step
        torch.manual_seed(1)
        data, data_u = torch.randn(2, 1, 16, 16), torch.randn(2, 1, 16, 16)
        return trainer.compute_losses(data, [torch.randint(0, 3, (2, 1, 16, 16)).float()] * 3, data_u)

    loss, logged, curves = step(0.5)
    assert curves["unsup_gate"] == 0.0 and curves["unsup_losses"] == pytest.approx(0.25)
    assert curves["contrastive_losses"] > 0  # computed, weighted 0
    assert loss.item() == pytest.approx(0.3 + 0.8) and logged.item() == pytest.approx(0.55)
    assert 0.0 <= curves["labeled_dice_ema_min"] < 0.5

    open_loss, open_logged, open_curves = step(0.5, open_step=0)
    free_loss, free_logged, free_curves = step(None)
    assert open_curves["unsup_gate"] == 1.0 and "unsup_gate" not in free_curves
    assert open_logged.item() == pytest.approx(free_logged.item(), rel=1e-6)
    assert open_loss.item() == pytest.approx(free_loss.item(), rel=1e-6) and free_loss.item() > 1.1 + 0.25




@pytest.mark.parametrize("reduction", ["masked_mean", "mean"])
def test_l_reg_of_the_step_equals_eq5_recomputed(reduction):
    """L_reg in the trainer's step against eq. 4-5 recomputed in numpy from the two subnetworks' softmax outputs on
    the unlabeled batch: the sum over M_diff of the L1 distance, divided by |M_diff| (``masked_mean``, the default)
    or by the batch's voxel count (``mean``, ``_gate_regMean``: proportional to eq. 5's sum)."""
    trainer = _stub_trainer((0.3, 0.8))
    trainer.reg_reduction = reduction
    trainer.confidence_threshold_start = 0.4  # T at t = 0: low enough that random subnetworks disagree confidently
    torch.manual_seed(3)
    data, data_u = torch.randn(2, 1, 16, 16), torch.randn(2, 1, 16, 16)
    _, _, curves = trainer.compute_losses(data, [torch.zeros(2, 1, 16, 16)] * 3, data_u)
    with torch.no_grad():
        pa, pb = (torch.softmax(net(torch.cat((data, data_u)))[0][2:].double(), 1).numpy()
                  for net in trainer.network.members)
    m = (pa.max(1) > 0.4) & (pb.max(1) > 0.4) & (pa.argmax(1) != pb.argmax(1))
    assert 0 < m.sum() < m.size
    l1 = np.abs(m[:, None] * pa - m[:, None] * pb).sum()  # eq. 5 verbatim
    expected = l1 / (m.sum() if reduction == "masked_mean" else m.size)
    assert curves["reg_losses"] == pytest.approx(expected, rel=1e-5)
    assert curves["mdiff_fraction"] == pytest.approx(m.mean(), rel=1e-6)


def test_gate_regmean_variant_keeps_l_reg_at_eq5_weight(make_trainer):
    """``nnUNetTrainerDualStreamCL_gate_regMean`` built by nnU-Net's constructor: ``_gate`` (threshold, curves, L_reg
    and L_c on) with L_reg over the batch's voxel count; the other variants keep the mean over M_diff."""
    trainer = make_trainer("nnUNetTrainerDualStreamCL_gate_regMean", 2)
    assert trainer.reg_reduction == "mean" and trainer.use_reg is True and trainer.use_contrastive is True
    assert trainer.unsup_gate_dice == 0.5 and trainer.unsup_gate_factor() == 0.0
    assert {"unsup_gate", "labeled_dice_ema_min", "reg_losses"} <= set(trainer.extra_curves)
    assert make_trainer("nnUNetTrainerDualStreamCL_gate", 2).reg_reduction == "masked_mean"


def test_gate_noreg_variant_is_gated_and_drops_l_reg(make_trainer):
    """``nnUNetTrainerDualStreamCL_gate_noReg`` built by nnU-Net's constructor: the gate's threshold and curves
    (``_gate``) with L_reg off (the paper's ``_noReg`` ablation) and L_c on; ``_gate`` itself keeps L_reg. (That
    ``use_reg = False`` zeroes L_reg in the step: :func:`test_ablation_switches_zero_their_terms`.)"""
    trainer = make_trainer("nnUNetTrainerDualStreamCL_gate_noReg", 2)
    assert trainer.use_reg is False and trainer.use_contrastive is True and trainer.unsup_gate_dice == 0.5
    assert {"unsup_gate", "labeled_dice_ema_min", "reg_losses"} <= set(trainer.extra_curves)
    assert trainer.unsup_gate_factor() == 0.0  # closed until the labeled Dice reaches 0.5
    gated = make_trainer("nnUNetTrainerDualStreamCL_gate", 2)
    assert gated.use_reg is True and gated.unsup_gate_dice == 0.5
