"""CPS loss (eq. 5 of the CCM paper, and its Dice form) and the CPS trainers' step against independent NumPy
recomputations, gradients included."""
import math

import numpy as np
import pytest
import torch

from nnunet_semi.losses.cps import cross_pseudo_supervision, foreground_agreement, pseudo_label_agreement
from nnunet_semi.schedules import sigmoid_rampup
from tests.unit.test_teacher_family import _batch, make_trainer  # noqa: F401 (make_trainer: the fixture)


def _ce_numpy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-pixel cross-entropy -log softmax(logits)[label], logits (B, C, ...), labels (B, ...)."""
    shifted = logits - logits.max(1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    return -np.take_along_axis(log_softmax, labels[:, None], 1)[:, 0]


@pytest.mark.parametrize("shape", [(3, 4, 9, 7), (2, 3, 4, 5, 6)])
def test_cps_equals_numpy_recomputation_of_eq5(shape):
    rng = np.random.default_rng(0)
    a = rng.normal(size=shape).astype(np.float64) * 3
    b = rng.normal(size=shape).astype(np.float64) * 3
    l_a, l_b = cross_pseudo_supervision(torch.from_numpy(a), torch.from_numpy(b))
    # eq. 5: 1/(2|D_u|) sum_X (ce(P_a, Y_b*) + ce(P_b, Y_a*)), ce = mean over pixels of an image
    per_image_a = _ce_numpy(a, b.argmax(1)).reshape(shape[0], -1).mean(1)
    per_image_b = _ce_numpy(b, a.argmax(1)).reshape(shape[0], -1).mean(1)
    eq5 = (per_image_a + per_image_b).sum() / (2 * shape[0])
    assert l_a.item() == pytest.approx(per_image_a.mean(), rel=1e-12)
    assert l_b.item() == pytest.approx(per_image_b.mean(), rel=1e-12)
    assert (0.5 * (l_a + l_b)).item() == pytest.approx(eq5, rel=1e-12)


def test_cps_hand_computed_two_pixels():
    # pixel 1: a = [2, 0], b = [0, 1]; pixel 2: a = [0, 0], b = [3, 0]  -> Y_a* = [0, 0], Y_b* = [1, 0]
    a = torch.tensor([[[2.0, 0.0], [0.0, 0.0]]])  # (B=1, C=2, N=2)
    b = torch.tensor([[[0.0, 3.0], [1.0, 0.0]]])
    l_a, l_b = cross_pseudo_supervision(a, b)
    ce = lambda z, k: math.log(sum(math.exp(v) for v in z)) - z[k]
    assert l_a.item() == pytest.approx((ce([2, 0], 1) + ce([0, 0], 0)) / 2)
    assert l_b.item() == pytest.approx((ce([0, 1], 0) + ce([3, 0], 0)) / 2)


def test_agreement_and_rampup():
    a = torch.tensor([[[1.0, 0.0, 0.0, 2.0], [0.0, 1.0, 1.0, 0.0]]])
    b = torch.tensor([[[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]]])
    assert pseudo_label_agreement(a, b).item() == pytest.approx(0.5)  # argmax a=[0,1,1,0], b=[0,0,1,1]
    assert sigmoid_rampup(0, 0) == 1.0
    assert sigmoid_rampup(5, 10) == pytest.approx(math.exp(-5 * 0.25))
    assert sigmoid_rampup(20, 10) == 1.0 and sigmoid_rampup(0, 10) == pytest.approx(math.exp(-5))


def test_foreground_agreement_is_the_dice_of_the_foreground_maps():
    # argmax a = [0, 1, 2, 2, 0, 1], b = [0, 1, 1, 2, 2, 0]: same foreground class at 2 voxels, |F_a| = 4, |F_b| = 4
    a = torch.nn.functional.one_hot(torch.tensor([[0, 1, 2, 2, 0, 1]]), 3).permute(0, 2, 1).float()
    b = torch.nn.functional.one_hot(torch.tensor([[0, 1, 1, 2, 2, 0]]), 3).permute(0, 2, 1).float()
    assert foreground_agreement(a, b).item() == pytest.approx(2 * 2 / (4 + 4))
    assert pseudo_label_agreement(a, b).item() == pytest.approx(3 / 6)  # background agreement counts there
    background = torch.zeros(1, 3, 6)
    background[:, 0] = 1
    assert foreground_agreement(background, background).item() == 1.0


def test_shape_mismatch_is_rejected():
    with pytest.raises(ValueError, match="differ in shape"):
        cross_pseudo_supervision(torch.zeros(1, 2, 4, 4), torch.zeros(1, 3, 4, 4))


def _softmax_and_one_hot(logits: np.ndarray, labels: np.ndarray):
    shifted = logits - logits.max(1, keepdims=True)
    p = np.exp(shifted) / np.exp(shifted).sum(1, keepdims=True)
    y = np.stack([labels == c for c in range(logits.shape[1])], 1).astype(np.float64)
    return p, y, (0,) + tuple(range(2, logits.ndim))


def _soft_dice_numpy(logits: np.ndarray, labels: np.ndarray, smooth: float = 1e-5,
                     include_background: bool = True, present_only: bool = False) -> float:
    """1 - mean over classes of (2 sum p y + s) / (sum p + sum y + s), sums over every voxel of the batch; the mean
    over all classes, or over classes 1.. only; with ``present_only`` over those that occur in ``labels`` (0 if
    none)."""
    p, y, axes = _softmax_and_one_hot(logits, labels)
    dice = (2 * (p * y).sum(axes) + smooth) / (p.sum(axes) + y.sum(axes) + smooth)
    classes = [c for c in range(0 if include_background else 1, logits.shape[1])
               if not present_only or (labels == c).any()]
    return float(1 - dice[classes].mean()) if classes else 0.0


def _gradient_numpy(logits: np.ndarray, labels: np.ndarray, kind: str, smooth: float = 1e-5) -> np.ndarray:
    """d loss / d logits with the labels held constant, by hand: CE (mean over pixels) -> (p - y) / N; soft Dice ->
    with g_vc = d loss / d p_vc = -1/C (2 y_vc (D_c + s) - (2 I_c + s)) / (D_c + s)^2 the softmax chain rule
    p_vk (g_vk - sum_c g_vc p_vc)."""
    p, y, axes = _softmax_and_one_hot(logits, labels)
    if kind == "ce":
        return (p - y) / (p.size / p.shape[1])
    intersection = (p * y).sum(axes, keepdims=True)
    denominator = p.sum(axes, keepdims=True) + y.sum(axes, keepdims=True) + smooth
    g = -(2 * y * denominator - (2 * intersection + smooth)) / denominator ** 2 / logits.shape[1]
    return p * (g - (g * p).sum(1, keepdims=True))


@pytest.mark.parametrize("kind", ["ce", "dice"])
def test_each_network_gets_the_gradient_of_its_own_term_only(kind):
    """l_a = l(P_a, argmax P_b) must reach network a only, with the gradient of a loss whose targets are constants:
    no gradient path into b at all (autograd reports None, not zeros), and a's gradient equal to the hand gradient.
    A soft or straight-through pseudo-label (b's probabilities reaching the target), or a network supervised by its
    own argmax, fails here."""
    rng = np.random.default_rng(4)
    a_np, b_np = rng.normal(size=(2, 3, 5, 4)) * 2, rng.normal(size=(2, 3, 5, 4)) * 2
    a, b = torch.tensor(a_np, requires_grad=True), torch.tensor(b_np, requires_grad=True)
    l_a, l_b = cross_pseudo_supervision(a, b, kind=kind)
    tolerance = {"rtol": 1e-12, "atol": 1e-15} if kind == "ce" else {"rtol": 1e-4, "atol": 1e-8}  # Dice in float32
    grad_a, grad_b = torch.autograd.grad(l_a, (a, b), allow_unused=True, retain_graph=True)
    assert grad_b is None
    np.testing.assert_allclose(grad_a.numpy(), _gradient_numpy(a_np, b_np.argmax(1), kind), **tolerance)
    grad_a, grad_b = torch.autograd.grad(l_b, (a, b), allow_unused=True)
    assert grad_a is None
    np.testing.assert_allclose(grad_b.numpy(), _gradient_numpy(b_np, a_np.argmax(1), kind), **tolerance)
    assert np.abs(grad_b.numpy()).max() > 1e-4  # a real gradient, not a vanishing one


@pytest.mark.parametrize("shape", [(3, 4, 9, 7), (2, 3, 4, 5, 6)])
def test_cps_dice_form_equals_numpy_recomputation(shape):
    rng = np.random.default_rng(1)
    a = rng.normal(size=shape) * 3
    b = rng.normal(size=shape) * 3
    l_a, l_b = cross_pseudo_supervision(torch.from_numpy(a), torch.from_numpy(b), kind="dice")
    assert l_a.item() == pytest.approx(_soft_dice_numpy(a, b.argmax(1)), rel=1e-6)
    assert l_b.item() == pytest.approx(_soft_dice_numpy(b, a.argmax(1)), rel=1e-6)
    # identical networks: each is trained towards its own argmax, the loss is below the disagreeing pair's
    same, _ = cross_pseudo_supervision(torch.from_numpy(a), torch.from_numpy(a), kind="dice")
    assert same.item() == pytest.approx(_soft_dice_numpy(a, a.argmax(1)), rel=1e-6) and same.item() < l_a.item()


def test_cps_dice_form_without_background_equals_numpy_recomputation():
    """The switch towards nnU-Net's class set: the mean over the foreground classes only."""
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(2, 4, 6, 5)) * 3, rng.normal(size=(2, 4, 6, 5)) * 3
    l_a, l_b = cross_pseudo_supervision(torch.from_numpy(a), torch.from_numpy(b), kind="dice",
                                        include_background=False)
    assert l_a.item() == pytest.approx(_soft_dice_numpy(a, b.argmax(1), include_background=False), rel=1e-6)
    assert l_b.item() == pytest.approx(_soft_dice_numpy(b, a.argmax(1), include_background=False), rel=1e-6)
    with_background = cross_pseudo_supervision(torch.from_numpy(a), torch.from_numpy(b), kind="dice")[0].item()
    assert abs(with_background - l_a.item()) > 1e-3  # the two class sets really differ here


def test_cps_dice_over_present_foreground_classes_equals_numpy_recomputation():
    """``present_only`` with the foreground classes: a class missing from the other network's argmax adds no term
    (the default's term for it, s / (sum p + s), would teach its absence); none present: loss 0, no gradient."""
    rng = np.random.default_rng(6)
    a, b = rng.normal(size=(2, 4, 6, 5)) * 3, rng.normal(size=(2, 4, 6, 5)) * 3
    b[:, 2] -= 100.0  # network b never predicts class 2
    assert 2 not in b.argmax(1) and 2 in a.argmax(1)
    l_a, l_b = cross_pseudo_supervision(torch.from_numpy(a), torch.from_numpy(b), kind="dice",
                                        include_background=False, present_only=True)
    expected_a = _soft_dice_numpy(a, b.argmax(1), include_background=False, present_only=True)
    assert l_a.item() == pytest.approx(expected_a, rel=1e-6)
    assert l_b.item() == pytest.approx(_soft_dice_numpy(b, a.argmax(1), include_background=False, present_only=True),
                                       rel=1e-6)
    # class 2 really is dropped for network a: the foreground mean over classes 1 and 3 only
    assert abs(expected_a - _soft_dice_numpy(a, b.argmax(1), include_background=False)) > 1e-3
    background_only = np.zeros_like(b)
    background_only[:, 0] = 10.0  # b predicts background everywhere: nothing to learn from it
    a_t = torch.tensor(a, requires_grad=True)
    l_a, _ = cross_pseudo_supervision(a_t, torch.from_numpy(background_only), kind="dice", include_background=False,
                                      present_only=True)
    l_a.backward()
    assert l_a.item() == 0.0 and float(a_t.grad.abs().max()) == 0.0


def test_cps_bad_arguments():
    a, b = torch.randn(2, 3, 5, 5), torch.randn(2, 3, 5, 5)
    with pytest.raises(ValueError, match="reduction"):
        cross_pseudo_supervision(a, b, reduction="none", kind="dice")
    with pytest.raises(ValueError, match="expected 'ce' or 'dice'"):
        cross_pseudo_supervision(a, b, kind="focal")
    with pytest.raises(ValueError, match="Dice form of cross pseudo supervision only"):
        cross_pseudo_supervision(a, b, kind="ce", include_background=False)
    with pytest.raises(ValueError, match="present_only=True"):
        cross_pseudo_supervision(a, b, kind="ce", present_only=True)


# ------------------------------------------------------------------------------------------------- CPS trainer step
def _forward_members(trainer, x, target, xu):
    """Each network on its own (not the trainer's joint pass): nnU-Net's supervised loss on the labeled batch and
    the full-resolution logits on the unlabeled batch (float64 NumPy)."""
    with torch.no_grad():
        sup = [trainer.loss(net(x), target).item() for net in trainer.network.members]
        logits = [net(xu)[0].double().numpy() for net in trainer.network.members]
    return sup, logits


def _mean_ce_numpy(logits, labels):
    return float(_ce_numpy(logits, labels).mean())


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("trainer_name, kind, alpha", [("nnUNetTrainerCPS", "dice", 1.0),  # the default
                                                       ("nnUNetTrainerCPS_paper", "ce", 0.1)])  # eq. 5-6
def test_cps_step_equals_independent_recomputation(make_trainer, ndim, trainer_name, kind, alpha):
    """compute_losses of the CPS trainers against the two networks run separately and eq. 4-6 in NumPy:
    L_s = 1/2 (sup_a + sup_b), L_c = 1/2 (l(P_a, argmax P_b) + l(P_b, argmax P_a)), logged L_s + alpha L_c,
    back-propagated 2 (L_s + alpha L_c)."""
    trainer = make_trainer(trainer_name, ndim)
    assert (trainer.cps_loss, trainer.cps_weight, trainer.cps_on_labeled) == (kind, alpha, False)
    x, target, xu = _batch(trainer)
    total, logged, curves = trainer.compute_losses(x, target, xu)

    (sup_a, sup_b), (za, zb) = _forward_members(trainer, x, target, xu)
    assert not np.array_equal(za.argmax(1), zb.argmax(1))  # two independently initialised networks
    loss = _soft_dice_numpy if kind == "dice" else _mean_ce_numpy
    cps_a, cps_b = loss(za, zb.argmax(1)), loss(zb, za.argmax(1))
    l_s, l_c = 0.5 * (sup_a + sup_b), 0.5 * (cps_a + cps_b)
    assert curves["sup_losses"] == pytest.approx(l_s, rel=1e-4)
    assert curves["cps_losses"] == pytest.approx(l_c, rel=1e-4)
    assert logged.item() == pytest.approx(l_s + alpha * l_c, rel=1e-4)
    assert total.item() == pytest.approx(sup_a + sup_b + alpha * (cps_a + cps_b), rel=1e-4)
    agreement = (za.argmax(1) == zb.argmax(1)).mean()
    assert curves["pseudo_label_agreement"] == pytest.approx(agreement, rel=1e-6)
    fg_a, fg_b = za.argmax(1) > 0, zb.argmax(1) > 0
    fg_dice = 2 * (fg_a & (za.argmax(1) == zb.argmax(1))).sum() / (fg_a.sum() + fg_b.sum())
    assert curves["foreground_agreement"] == pytest.approx(fg_dice, rel=1e-6)
    total.backward()  # both networks learn (the lowest-resolution head has nnU-Net's deep-supervision weight 0)
    for net in trainer.network.members:
        assert all(p.grad is not None for n, p in net.named_parameters() if "seg_layers.0" not in n)


def test_cps_step_dice_without_background(make_trainer):
    """``cps_dice_include_background = False`` reaches the loss: the cross term is the foreground-class mean."""
    trainer = make_trainer("nnUNetTrainerCPS", 2)
    trainer.cps_dice_include_background = False
    x, target, xu = _batch(trainer)
    _, _, curves = trainer.compute_losses(x, target, xu)
    _, (za, zb) = _forward_members(trainer, x, target, xu)
    expected = 0.5 * (_soft_dice_numpy(za, zb.argmax(1), include_background=False) +
                      _soft_dice_numpy(zb, za.argmax(1), include_background=False))
    assert curves["cps_losses"] == pytest.approx(expected, rel=1e-4)
    assert abs(expected - 0.5 * (_soft_dice_numpy(za, zb.argmax(1)) + _soft_dice_numpy(zb, za.argmax(1)))) > 1e-3


def test_cps_present_trainer_uses_the_present_foreground_classes(make_trainer):
    """``nnUNetTrainerCPS_present``: the cross term is each network's foreground Dice over the classes the other
    network predicts in the batch, recomputed from the two networks run separately."""
    trainer = make_trainer("nnUNetTrainerCPS_present", 2)
    assert (trainer.cps_dice_include_background, trainer.cps_dice_present_only) == (False, True)
    x, target, xu = _batch(trainer)
    _, _, curves = trainer.compute_losses(x, target, xu)
    _, (za, zb) = _forward_members(trainer, x, target, xu)
    expected = 0.5 * (_soft_dice_numpy(za, zb.argmax(1), include_background=False, present_only=True) +
                      _soft_dice_numpy(zb, za.argmax(1), include_background=False, present_only=True))
    assert curves["cps_losses"] == pytest.approx(expected, rel=1e-4)


def test_cps_rampup_trainer_ramps_alpha_over_40_percent_of_its_epochs(make_trainer):
    """``nnUNetTrainerCPS_rampup``: alpha * exp(-5 (1 - e / R)^2) with R = round(0.4 * num_epochs), so the ramp scales
    with the budget variant; the default trainer keeps alpha constant; the logged loss is L_s + alpha(e) * L_c."""
    trainer = make_trainer("nnUNetTrainerCPS_rampup", 2)
    for num_epochs, epoch in ((40, 0), (40, 8), (40, 16), (80, 16), (80, 40)):
        trainer.num_epochs, trainer.current_epoch = num_epochs, epoch
        ramp = round(0.4 * num_epochs)
        assert trainer.current_cps_weight() == pytest.approx(math.exp(-5.0 * (1.0 - min(epoch / ramp, 1.0)) ** 2))
    trainer.num_epochs, trainer.current_epoch = 40, 4  # alpha = exp(-5 * 0.75^2) = 0.0600
    x, target, xu = _batch(trainer)
    _, logged, curves = trainer.compute_losses(x, target, xu)
    alpha = math.exp(-5.0 * 0.75 ** 2)
    assert logged.item() == pytest.approx(curves["sup_losses"] + alpha * curves["cps_losses"], rel=1e-5)
    default = make_trainer("nnUNetTrainerCPS", 2)
    default.num_epochs, default.current_epoch = 40, 0
    assert default.current_cps_weight() == 1.0
