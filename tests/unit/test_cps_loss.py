"""CPS loss (eq. 5 of the CCM paper) against an independent NumPy recomputation."""
import math

import numpy as np
import pytest
import torch

from nnunet_semi.losses.cps import cross_pseudo_supervision, foreground_agreement, pseudo_label_agreement
from nnunet_semi.schedules import sigmoid_rampup


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


def test_pseudo_labels_carry_no_gradient():
    a = torch.randn(2, 3, 5, 5, requires_grad=True)
    b = torch.randn(2, 3, 5, 5, requires_grad=True)
    l_a, _ = cross_pseudo_supervision(a, b)
    l_a.backward()
    assert b.grad is None and a.grad is not None and a.grad.abs().sum() > 0


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


def _soft_dice_numpy(logits: np.ndarray, labels: np.ndarray, smooth: float = 1e-5) -> float:
    """1 - mean over classes of (2 sum p y + s) / (sum p + sum y + s), sums over every voxel of the batch."""
    shifted = logits - logits.max(1, keepdims=True)
    p = np.exp(shifted) / np.exp(shifted).sum(1, keepdims=True)
    y = np.stack([labels == c for c in range(logits.shape[1])], 1).astype(np.float64)
    axes = (0,) + tuple(range(2, logits.ndim))
    dice = (2 * (p * y).sum(axes) + smooth) / (p.sum(axes) + y.sum(axes) + smooth)
    return float(1 - dice.mean())


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


def test_cps_dice_form_gradient_and_bad_arguments():
    a = torch.randn(2, 3, 5, 5, requires_grad=True)
    b = torch.randn(2, 3, 5, 5, requires_grad=True)
    l_a, _ = cross_pseudo_supervision(a, b, kind="dice")
    l_a.backward()
    assert b.grad is None and a.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="reduction"):
        cross_pseudo_supervision(a, b, reduction="none", kind="dice")
    with pytest.raises(ValueError, match="expected 'ce' or 'dice'"):
        cross_pseudo_supervision(a, b, kind="focal")
