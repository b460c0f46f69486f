"""FixMatch / UniMatch pieces: the confident-voxel losses against NumPy recomputations, CutMix boxes (image and
pseudo-labels mixed with the same box), strong views that keep the weak view's geometry, the feature-perturbation
hook on a real nnU-Net UNet, and both trainers' compute_losses against an independent recomputation."""
import numpy as np
import pytest
import torch

from nnunet_semi.augmentation.weak_strong import (StrongIntensityConfig, apply_per_sample, cutmix, cutmix_boxes,
                                                  strong_intensity_transform)
from nnunet_semi.losses.weak_strong import (confident_pseudo_labels, masked_cross_entropy, masked_soft_dice,
                                            weak_to_strong_loss)
from nnunet_semi.networks.feature_perturbation import SkipFeatureDropout
from tests.unit.test_teacher_family import make_trainer  # noqa: F401 (the fixture: a real trainer, no data)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _masked_ce_numpy(logits, labels, mask):
    p = _softmax(logits)
    ce = -np.log(np.take_along_axis(p, labels[:, None], 1)[:, 0])
    return (ce * mask).sum() / ce.size  # 1/|V| sum over ALL voxels of 1(conf >= tau) * H


def _masked_dice_numpy(logits, labels, mask, smooth=1e-5):
    """1 - mean over classes of the soft Dice on the confident voxels (sums over the whole batch)."""
    p = _softmax(logits)
    dice = []
    for c in range(logits.shape[1]):
        y = (labels == c).astype(float)
        inter = (mask * p[:, c] * y).sum()
        dice.append((2 * inter + smooth) / ((mask * p[:, c]).sum() + (mask * y).sum() + smooth))
    return 1 - np.mean(dice)


# ------------------------------------------------------------------------------------------------- losses
@pytest.mark.parametrize("shape", [(3, 4, 9, 7), (2, 3, 4, 5, 6)])
def test_confident_ce_equals_numpy_recomputation(shape):
    rng = np.random.default_rng(0)
    weak, strong = rng.normal(size=shape) * 3, rng.normal(size=shape) * 3
    labels, confidence = confident_pseudo_labels(torch.from_numpy(weak))
    q = _softmax(weak)
    np.testing.assert_array_equal(labels.numpy(), q.argmax(1))
    np.testing.assert_allclose(confidence.numpy(), q.max(1), rtol=1e-6)
    for tau in (0.0, 0.6, 0.95, 1.01):
        mask = confidence >= tau
        expected = _masked_ce_numpy(strong, q.argmax(1), q.max(1) >= tau)
        got = masked_cross_entropy(torch.from_numpy(strong), labels, mask).item()
        assert got == pytest.approx(expected, rel=1e-6, abs=1e-12)
    assert masked_cross_entropy(torch.from_numpy(strong), labels, confidence >= 1.01).item() == 0.0


def test_confident_dice_equals_numpy_recomputation():
    rng = np.random.default_rng(1)
    logits, labels = rng.normal(size=(2, 3, 6, 5)) * 2, rng.integers(0, 3, size=(2, 6, 5))
    mask = rng.random((2, 6, 5)) > 0.4
    expected = _masked_dice_numpy(logits, labels, mask)
    got = masked_soft_dice(torch.from_numpy(logits), torch.from_numpy(labels), torch.from_numpy(mask)).item()
    assert got == pytest.approx(expected, rel=1e-6)  # computed in float32
    both = weak_to_strong_loss(torch.from_numpy(logits), torch.from_numpy(labels), torch.from_numpy(mask), "ce+dice")
    ce = _masked_ce_numpy(logits, labels, mask)
    assert both.item() == pytest.approx(0.5 * (ce + expected), rel=1e-6)
    with pytest.raises(ValueError, match="unknown unlabeled loss"):
        weak_to_strong_loss(torch.from_numpy(logits), torch.from_numpy(labels), torch.from_numpy(mask), "mse")


def test_pseudo_labels_carry_no_gradient():
    weak = torch.randn(2, 3, 5, 5, requires_grad=True)
    strong = torch.randn(2, 3, 5, 5, requires_grad=True)
    labels, confidence = confident_pseudo_labels(weak)
    masked_cross_entropy(strong, labels, confidence >= 0.0).backward()
    assert weak.grad is None and strong.grad.abs().sum() > 0


# ------------------------------------------------------------------------------------------------- CutMix
@pytest.mark.parametrize("spatial", [(40, 30), (12, 20, 16)])
def test_cutmix_boxes_are_solid_boxes_of_the_drawn_area(spatial):
    torch.manual_seed(0)
    boxes = cutmix_boxes(200, spatial, p=1.0, area=(0.05, 0.3))
    total = float(np.prod(spatial))
    for b in boxes:
        idx = b.nonzero()
        lo, hi = idx.min(0).values, idx.max(0).values
        bbox = torch.zeros_like(b)
        bbox[tuple(slice(int(l), int(h) + 1) for l, h in zip(lo, hi))] = True
        assert torch.equal(bbox, b)  # one axis-aligned box, inside the patch
        assert 0.02 < b.sum().item() / total < 0.45  # the drawn area, up to rounding of the sides
    assert not cutmix_boxes(10, spatial, p=0.0).any()
    drawn = cutmix_boxes(400, spatial, p=0.5).flatten(1).any(1).float().mean().item()
    assert 0.4 < drawn < 0.6


def test_cutmix_mixes_image_and_pseudo_labels_with_the_same_box():
    torch.manual_seed(3)
    images = torch.randn(4, 2, 10, 8)
    labels = torch.randint(0, 3, (4, 10, 8))
    confidence = torch.rand(4, 10, 8)
    boxes = cutmix_boxes(4, (10, 8), p=1.0)
    partner = torch.tensor([1, 2, 3, 0])
    mixed_images, mixed_labels, mixed_conf = (cutmix(t, boxes, partner) for t in (images, labels, confidence))
    for i in range(4):
        inside, j = boxes[i], int(partner[i])
        assert torch.equal(mixed_images[i][:, inside], images[j][:, inside])
        assert torch.equal(mixed_images[i][:, ~inside], images[i][:, ~inside])
        assert torch.equal(mixed_labels[i][inside], labels[j][inside])
        assert torch.equal(mixed_labels[i][~inside], labels[i][~inside])
        assert torch.equal(mixed_conf[i][inside], confidence[j][inside])
    with pytest.raises(ValueError, match="do not fit"):
        cutmix(images[:, :, :9], boxes, partner)


# ------------------------------------------------------------------------------------------------- strong views
def test_strong_view_keeps_the_weak_views_geometry():
    """Two-level images (object 4, background 0): every strong perturbation except blur/noise is monotonic per
    sample, so the object found on the strong, CutMixed view by a per-sample midpoint threshold is exactly the weak
    view's object mixed with the same box: a pseudo-label made on the weak view lies on the same voxels."""
    torch.manual_seed(0)
    objects = torch.rand(6, 24, 20) > 0.7
    weak = objects[:, None].float() * 4.0
    config = StrongIntensityConfig(p_brightness=1.0, p_contrast=1.0, p_gamma=1.0, p_blur=0.0, p_noise=0.0)
    strong = apply_per_sample(strong_intensity_transform(config), weak)
    assert not torch.allclose(strong, weak)  # intensities did change
    lo, hi = strong.amin((1, 2, 3)), strong.amax((1, 2, 3))
    threshold = ((lo + hi) / 2)[:, None, None].expand(6, 24, 20)
    boxes, partner = cutmix_boxes(6, (24, 20), p=1.0), torch.roll(torch.arange(6), -1)
    mixed, mixed_threshold = cutmix(strong, boxes, partner), cutmix(threshold, boxes, partner)
    assert torch.equal(mixed[:, 0] > mixed_threshold, cutmix(objects, boxes, partner))
    assert torch.equal(weak, objects[:, None].float() * 4.0)  # the weak view itself is untouched


def test_strong_perturbations_are_drawn_per_sample_and_switch_off():
    torch.manual_seed(0)
    x = torch.randn(8, 1, 16, 16)
    strong = apply_per_sample(strong_intensity_transform(), x)
    differences = (strong - x).flatten(1).abs().mean(1)
    assert strong.shape == x.shape and len(set(np.round(differences.numpy(), 6))) > 4
    off = StrongIntensityConfig(p_brightness=0, p_contrast=0, p_gamma=0, p_blur=0, p_noise=0)
    assert torch.equal(apply_per_sample(strong_intensity_transform(off), x), x)


# ------------------------------------------------------------------------------------------------- feature perturbation
@pytest.mark.parametrize("ndim", [2, 3])
def test_skip_feature_dropout_appends_perturbed_rows(make_trainer, ndim):
    trainer = make_trainer("nnUNetTrainerUniMatch", ndim)
    net = trainer.network
    keys = sorted(net.state_dict())
    x = torch.randn(5, 1, *trainer.configuration_manager.patch_size)
    hook = SkipFeatureDropout(net, p=0.5)
    plain = net(x)
    torch.manual_seed(0)
    with hook.active(2, 4):
        out = net(x)
    assert [o.shape[0] for o in out] == [7] * len(plain)  # every deep-supervision scale has 2 extra rows
    for o, p in zip(out, plain):
        assert torch.allclose(o[:5], p, atol=1e-6)
        assert not torch.allclose(o[5:], p[2:4], atol=1e-3)
    hook.p = 0.0
    with hook.active(2, 4):
        out = net(x)
    assert torch.allclose(out[0][5:], plain[0][2:4], atol=1e-6)  # p = 0: the copies are the clean rows
    assert net(x)[0].shape[0] == 5 and sorted(net.state_dict()) == keys  # inactive outside; no new weights
    hook.remove()


# ------------------------------------------------------------------------------------------------- trainers
def _inputs(trainer, n=4):
    g = torch.Generator().manual_seed(1)
    patch = trainer.configuration_manager.patch_size
    x, xu = torch.randn(n, 1, *patch, generator=g), torch.randn(n, 1, *patch, generator=g) * 3
    y = torch.randint(0, 3, (n, 1, *patch), generator=g).float()
    scales = (0.5, 0.25)
    target = [y] + [torch.nn.functional.interpolate(y, scale_factor=s, mode="nearest-exact") for s in scales]
    return x, target, xu


def _fixed_strong_view(trainer, xu, p_box=1.0):
    """Replace the random strong view by a fixed one, so the recomputation sees the same images and boxes."""
    torch.manual_seed(5)
    strong = xu * 0.7 + 0.3 * torch.randn_like(xu)
    boxes = cutmix_boxes(xu.shape[0], xu.shape[2:], p=p_box)
    partner = torch.roll(torch.arange(xu.shape[0]), -1)
    mixed = cutmix(strong, boxes, partner)
    trainer.strong_view = lambda weak: (mixed, boxes, partner)
    return mixed, boxes, partner


def _forward_again(trainer, x, target, xu, strong):
    """Weak and strong full-resolution logits (float64 NumPy) and nnU-Net's supervised loss, computed separately."""
    with torch.no_grad():
        weak = trainer.network(xu)[0].double().numpy()
        strong_logits = trainer.network(strong)[0].double().numpy()
        sup = trainer.loss(trainer.network(x), target).item()
    return weak, strong_logits, sup


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("trainer_name, recompute", [("nnUNetTrainerFixMatch", _masked_dice_numpy),  # the default
                                                     ("nnUNetTrainerFixMatch_ce", _masked_ce_numpy)])  # the paper's
def test_fixmatch_loss_equals_independent_recomputation(make_trainer, ndim, trainer_name, recompute):
    trainer = make_trainer(trainer_name, ndim)
    trainer.confidence_threshold = 0.4  # an untrained 3-class network is rarely 0.95-confident
    x, target, xu = _inputs(trainer)
    strong, boxes, partner = _fixed_strong_view(trainer, xu)
    total, logged, curves = trainer.compute_losses(x, target, xu)

    weak, strong_logits, sup = _forward_again(trainer, x, target, xu, strong)
    q = _softmax(weak)
    b, part = boxes.numpy(), partner.numpy()
    labels = np.where(b, q.argmax(1)[part], q.argmax(1))
    mask = np.where(b, q.max(1)[part], q.max(1)) >= 0.4
    l_u = recompute(strong_logits, labels, mask)
    assert 0.05 < mask.mean() < 0.95  # the threshold selects a real subset here
    assert curves["confident_fraction"] == pytest.approx(mask.mean())
    assert curves["pseudo_label_foreground"] == pytest.approx((labels[mask] > 0).mean())
    assert curves["unsup_losses"] == pytest.approx(l_u, rel=1e-4)
    assert curves["sup_losses"] == pytest.approx(sup, rel=1e-4)
    assert total.item() == pytest.approx(sup + 1.0 * l_u, rel=1e-4) and logged is total
    total.backward()  # (nnU-Net gives the lowest-resolution deep-supervision head weight 0: no gradient there)
    assert all(p.grad is not None for n, p in trainer.network.named_parameters() if "seg_layers" not in n)


def test_unimatch_weights_and_feature_stream(make_trainer):
    """With feature dropout 0 the perturbed stream is the weak prediction itself, so L_fp is the masked soft Dice
    (the default unlabeled loss) of the weak logits against their own pseudo-labels;
    L = L_s + 0.5 * (L_s1 + L_s2) / 2 + 0.5 * L_fp."""
    trainer = make_trainer("nnUNetTrainerUniMatch", 2)
    trainer.feature_perturbation = SkipFeatureDropout(trainer.network, p=0.0)
    trainer.confidence_threshold = 0.4
    x, target, xu = _inputs(trainer)
    strong, boxes, partner = _fixed_strong_view(trainer, xu)
    total, _, curves = trainer.compute_losses(x, target, xu)
    weak, strong_logits, sup = _forward_again(trainer, x, target, xu, strong)
    q = _softmax(weak)
    b, part = boxes.numpy(), partner.numpy()
    l_s = _masked_dice_numpy(strong_logits, np.where(b, q.argmax(1)[part], q.argmax(1)),
                             np.where(b, q.max(1)[part], q.max(1)) >= 0.4)
    l_fp = _masked_dice_numpy(weak, q.argmax(1), q.max(1) >= 0.4)
    assert curves["unsup_losses"] == pytest.approx(l_s, rel=1e-4)  # both strong views are the fixed one here
    assert curves["fp_losses"] == pytest.approx(l_fp, rel=1e-4)
    assert total.item() == pytest.approx(sup + 0.5 * l_s + 0.5 * l_fp, rel=1e-4)


def test_unimatch_nofp_decodes_no_perturbed_rows(make_trainer):
    trainer = make_trainer("nnUNetTrainerUniMatch_noFP", 2)
    trainer.feature_perturbation = SkipFeatureDropout(trainer.network, p=0.5)
    x, target, xu = _inputs(trainer)
    rows = []
    handle = trainer.network.decoder.register_forward_hook(lambda m, a, out: rows.append(out[0].shape[0]))
    _, _, curves = trainer.compute_losses(x, target, xu)
    handle.remove()
    assert rows == [4 + 3 * 4] and curves["fp_losses"] == 0.0  # labeled + weak + two strong views, no 5th part
