"""FixMatch / UniMatch pieces: the confident-voxel losses against NumPy recomputations, CutMix boxes (image and
pseudo-labels mixed with the same box), strong views that keep the weak view's geometry, the feature-perturbation
hook on a real nnU-Net UNet, and both trainers' compute_losses against an independent recomputation."""
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch._dynamo.eval_frame import OptimizedModule

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_semi.augmentation.weak_strong import (StrongIntensityConfig, apply_per_sample, crop_flip_weak_transform,
                                                  cutmix, cutmix_boxes, strong_intensity_transform)
from nnunet_semi.losses.weak_strong import (SelfAdaptiveThreshold, confident_pseudo_labels, masked_cross_entropy, masked_soft_dice,
                                            weak_to_strong_loss)
from nnunet_semi.networks.feature_perturbation import SkipFeatureDropout
from nnunet_semi.training import TRAINERS
from tests.unit.test_teacher_family import DATASET_JSON, _plans, make_trainer  # noqa: F401 (fixture: a real trainer)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _masked_ce_numpy(logits, labels, mask):
    p = _softmax(logits)
    ce = -np.log(np.take_along_axis(p, labels[:, None], 1)[:, 0])
    return (ce * mask).sum() / ce.size  # 1/|V| sum over ALL voxels of 1(conf >= tau) * H


def _masked_dice_numpy(logits, labels, mask, smooth=1e-5, squared=False, include_background=True):
    """1 - mean over classes of the soft Dice on the confident voxels (sums over the whole batch); the denominator
    sum p + sum y, or sum p^2 + sum y (``squared``); every class, or classes 1.. only."""
    p = _softmax(logits)
    dice = []
    for c in range(0 if include_background else 1, logits.shape[1]):
        y = (labels == c).astype(float)
        inter = (mask * p[:, c] * y).sum()
        predicted = p[:, c] ** 2 if squared else p[:, c]
        dice.append((2 * inter + smooth) / ((mask * predicted).sum() + (mask * y).sum() + smooth))
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


def test_masked_soft_dice_switches_equal_numpy_recomputation():
    """The alternatives to be decided on a validation split: UniMatch's code's squared denominator, nnU-Net's class
    set without background; each against NumPy, each really another number than the default."""
    rng = np.random.default_rng(2)
    logits, labels = rng.normal(size=(2, 4, 6, 5)) * 2, rng.integers(0, 4, size=(2, 6, 5))
    mask = rng.random((2, 6, 5)) > 0.3
    args = torch.from_numpy(logits), torch.from_numpy(labels), torch.from_numpy(mask)
    default = masked_soft_dice(*args).item()
    for squared in (False, True):
        for background in (True, False):
            got = masked_soft_dice(*args, squared_denominator=squared, include_background=background).item()
            assert got == pytest.approx(_masked_dice_numpy(logits, labels, mask, squared=squared,
                                                           include_background=background), rel=1e-6)
            assert (squared, background) == (False, True) or abs(got - default) > 1e-3
    mixed = weak_to_strong_loss(*args, "ce+dice", squared_denominator=True).item()
    assert mixed == pytest.approx(0.5 * (_masked_ce_numpy(logits, labels, mask) +
                                           _masked_dice_numpy(logits, labels, mask, squared=True)), rel=1e-6)
    with pytest.raises(ValueError, match="at least one foreground class"):
        masked_soft_dice(args[0][:, :1], args[1] * 0, args[2], include_background=False)


def _present_dice_numpy(logits, labels, mask, include_background=True, smooth=1e-5):
    """The soft Dice averaged over the classes that occur in ``labels`` on the masked voxels only."""
    p = _softmax(logits)
    dice = []
    for c in range(0 if include_background else 1, logits.shape[1]):
        y = (labels == c).astype(float)
        if (mask * y).sum() == 0:
            continue
        dice.append((2 * (mask * p[:, c] * y).sum() + smooth) / ((mask * p[:, c]).sum() + (mask * y).sum() + smooth))
    return 1 - np.mean(dice) if dice else 0.0


def test_present_only_dice_skips_the_classes_absent_from_the_pseudo_labels():
    """Pseudo-labels without class 2 and 3: the default scores those classes ~0 (loss ~1 each) however little of them
    is predicted, i.e. it rewards predicting exactly none; present_only averages over classes 0 and 1 (NumPy), and an
    all-background batch predicted as background costs ~0 instead of 3/4."""
    rng = np.random.default_rng(5)
    logits = rng.normal(size=(2, 4, 6, 5)) * 2
    labels = rng.integers(0, 2, size=(2, 6, 5))
    mask = rng.random((2, 6, 5)) > 0.3
    args = torch.from_numpy(logits), torch.from_numpy(labels), torch.from_numpy(mask)
    for background in (True, False):
        got = masked_soft_dice(*args, present_only=True, include_background=background).item()
        assert got == pytest.approx(_present_dice_numpy(logits, labels, mask, background), rel=1e-6)
    assert masked_soft_dice(*args).item() > masked_soft_dice(*args, present_only=True).item() + 0.15
    assert weak_to_strong_loss(*args, "dice", present_only=True).item() == pytest.approx(
        _present_dice_numpy(logits, labels, mask), rel=1e-6)
    # all background, predicted background everywhere (p_fg ~ 0.007 per class): the default still costs
    # (C - 1) / C, present_only nothing; the default only falls to ~0 once the foreground mass drops below the
    # smoothing (p_fg ~ 1e-9 at logit 20): the reward for predicting exactly none of a class
    zeros, everywhere = torch.zeros((1, 6, 5), dtype=torch.long), torch.ones((1, 6, 5), dtype=torch.bool)
    for margin, default_loss in ((5.0, 0.75), (20.0, 0.0)):
        confident_bg = torch.zeros((1, 4, 6, 5), dtype=torch.float64)
        confident_bg[:, 0] = margin
        assert masked_soft_dice(confident_bg, zeros, everywhere).item() == pytest.approx(default_loss, abs=1e-2)
        present = masked_soft_dice(confident_bg, zeros, everywhere, present_only=True).item()
        assert present < 0.011 and present == pytest.approx(  # the background term alone
            _present_dice_numpy(confident_bg.numpy(), zeros.numpy(), everywhere.numpy()), rel=1e-5, abs=1e-7)
    # nothing masked: no class present, a zero loss that still back-propagates (a zero gradient)
    logits_t = torch.from_numpy(logits).requires_grad_(True)
    none = masked_soft_dice(logits_t, args[1], torch.zeros_like(args[2]), present_only=True)
    none.backward()
    assert none.item() == 0.0 and float(logits_t.grad.abs().sum()) == 0.0


def test_pseudo_labels_carry_no_gradient():
    """The confidence max_c softmax(weak) is differentiable: confident_pseudo_labels must cut it off. Used as a soft
    weight of the strong view's CE, the gradient reaches the strong logits only, and equals the hand gradient with
    the weights and labels held constant: confidence * (softmax - one_hot) / N."""
    rng = np.random.default_rng(3)
    weak_np, strong_np = rng.normal(size=(2, 3, 5, 4)) * 2, rng.normal(size=(2, 3, 5, 4)) * 2
    weak, strong = torch.tensor(weak_np, requires_grad=True), torch.tensor(strong_np, requires_grad=True)
    labels, confidence = confident_pseudo_labels(weak)
    assert not labels.requires_grad and not confidence.requires_grad
    ce = torch.nn.functional.cross_entropy(strong, labels, reduction="none")
    grad_weak, grad_strong = torch.autograd.grad((ce * confidence).mean(), (weak, strong), allow_unused=True)
    assert grad_weak is None
    q, p = _softmax(weak_np), _softmax(strong_np)
    one_hot = np.eye(3)[q.argmax(1)].transpose(0, 3, 1, 2)
    expected = q.max(1)[:, None] * (p - one_hot) / q.max(1).size
    np.testing.assert_allclose(grad_strong.numpy(), expected, rtol=1e-6, atol=1e-9)  # confidence in float32


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


# ------------------------------------------------------------------------------------------------- mild weak view
def _flips_of_centre_crop(image: torch.Tensor, patch, axes):
    """Every flip (over subsets of the spatial ``axes``) of the centre ``patch`` crop of ``image`` (C, *spatial)."""
    start = [(s - p) // 2 for s, p in zip(image.shape[1:], patch)]
    crop = image[(slice(None), *[slice(a, a + p) for a, p in zip(start, patch)])]
    flips = []
    for k in range(2 ** len(axes)):
        dims = [a + 1 for i, a in enumerate(axes) if k >> i & 1]
        flips.append(torch.flip(crop, dims) if dims else crop)
    return flips


@pytest.mark.parametrize("patch, initial", [((16, 12), (23, 18)), ((8, 16, 12), (11, 21, 17))])
def test_crop_flip_weak_view_is_a_flipped_centre_crop_with_values_copied(patch, initial):
    """The mild weak view: the output is exactly (bit for bit) the centre crop of the loader's patch under one of the
    2^k flips of the mirror axes, the flips vary over draws, the padding label -1 becomes 0."""
    torch.manual_seed(0)
    np.random.seed(0)
    axes = tuple(range(len(patch)))
    transform = crop_flip_weak_transform(patch, axes)
    image = torch.randn(1, *initial)
    segmentation = torch.full((1, *initial), -1, dtype=torch.int16)
    segmentation[(slice(None), *[slice(0, s // 2) for s in initial])] = 2
    image_flips = _flips_of_centre_crop(image, patch, axes)
    segmentation_flips = [f.clone() for f in _flips_of_centre_crop(segmentation, patch, axes)]
    for f in segmentation_flips:
        f[f == -1] = 0
    seen = set()
    for _ in range(40):
        out = transform(image=image.clone(), segmentation=segmentation.clone())
        assert out["image"].shape == (1, *patch)
        matches = [i for i, f in enumerate(image_flips) if torch.equal(out["image"], f)]
        assert len(matches) == 1
        seen.add(matches[0])
        assert torch.equal(out["segmentation"], segmentation_flips[matches[0]])
    assert len(seen) == 2 ** len(axes)  # every flip combination occurs
    no_mirror = crop_flip_weak_transform(patch, ())(image=image.clone(), segmentation=segmentation.clone())
    assert torch.equal(no_mirror["image"], image_flips[0])


@pytest.mark.parametrize("ndim", [2, 3])
def test_fixmatch_cropflip_uses_the_mild_weak_view_and_the_default_does_not(make_trainer, ndim):
    """``nnUNetTrainerFixMatch_cropflip``'s unlabeled stream only crops and flips (values copied); the default
    trainer's stream is nnU-Net's augmentation (it changes voxel values in some draws); a typo is refused."""
    mild, default = make_trainer("nnUNetTrainerFixMatch_cropflip", ndim), make_trainer("nnUNetTrainerFixMatch", ndim)
    assert mild.unlabeled_augmentation == "crop_flip" and default.unlabeled_augmentation == "nnunet"
    _, _, initial, mirror_axes = mild.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
    patch = tuple(mild.configuration_manager.patch_size)
    image = torch.randn(1, *[int(s) for s in initial])
    segmentation = torch.zeros((1, *image.shape[1:]), dtype=torch.int16)
    torch.manual_seed(0)
    np.random.seed(0)
    flips = _flips_of_centre_crop(image, patch, tuple(mirror_axes))
    mild_transform, default_transform = mild.get_unlabeled_transforms(), default.get_unlabeled_transforms()
    changed = 0
    for _ in range(20):
        out = mild_transform(image=image.clone(), segmentation=segmentation.clone())["image"]
        assert any(torch.equal(out, f) for f in flips)
        out = default_transform(image=image.clone(), segmentation=segmentation.clone())["image"]
        assert out.shape == (1, *patch)
        changed += not any(torch.equal(out, f) for f in flips)
    assert changed > 0
    mild.unlabeled_augmentation = "cropflip"
    with pytest.raises(ValueError, match="unlabeled_augmentation"):
        mild.get_unlabeled_transforms()


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


def _squared_dice_numpy(logits, labels, mask):
    return _masked_dice_numpy(logits, labels, mask, squared=True)


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("trainer_name, squared, recompute", [
    ("nnUNetTrainerFixMatch", False, _masked_ce_numpy),  # the default: the paper's CE
    ("nnUNetTrainerFixMatch_ce", False, _masked_ce_numpy),  # the same under its explicit name
    ("nnUNetTrainerFixMatch_dice", False, _masked_dice_numpy),  # the soft Dice (the default until 2026-12-05)
    ("nnUNetTrainerFixMatch_dice", True, _squared_dice_numpy)])  # unsup_dice_squared: UniMatch's code's denominator
def test_fixmatch_loss_equals_independent_recomputation(make_trainer, ndim, trainer_name, squared, recompute):
    trainer = make_trainer(trainer_name, ndim)
    assert trainer.unsup_dice_squared is False
    trainer.unsup_dice_squared = squared
    trainer.confidence_threshold = 0.4  # an untrained 3-class network is rarely 0.95-confident
    x, target, xu = _inputs(trainer)
    strong, boxes, partner = _fixed_strong_view(trainer, xu)
    passes = []  # (batch size, output requires grad) of every forward pass
    handle = trainer.network.register_forward_hook(lambda m, a, out: passes.append((a[0].shape[0],
                                                                                     out[0].requires_grad)))
    total, logged, curves = trainer.compute_losses(x, target, xu)
    handle.remove()
    assert passes == [(4, False), (8, True)]  # the weak view without gradient, then labeled | strong with it

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
    if squared:
        assert abs(l_u - _masked_dice_numpy(strong_logits, labels, mask)) > 1e-3  # the switch changes the number


#: the FixMatch variants measured with the soft Dice: they keep it (each still is what its benchmark runs measured)
DICE_MEASURED = ("noCutMix", "sqDice", "present", "rampup", "tau80", "tau0", "cropflip", "gate", "SAT", "SAT_lcc")


def test_fixmatch_defaults_to_the_papers_ce_and_the_dice_measured_variants_keep_the_dice(make_trainer):
    """nnUNetTrainerFixMatch's unlabeled loss is FixMatch's per-voxel CE (chosen on validation cases, issue 29),
    ``_ce`` is the same trainer under its name, ``_dice`` the former default; every variant whose benchmark runs
    used the soft Dice keeps it; UniMatch defaults to the CE too (chosen on ACDC's validation patients), ``_dice``
    keeps its medical code's loss; the budget variants inherit."""
    from nnunet_semi.training.fixmatch import nnUNetTrainerFixMatch_dice

    assert make_trainer("nnUNetTrainerFixMatch", 2).unsup_loss == "ce"
    assert make_trainer("nnUNetTrainerFixMatch_ce", 2).unsup_loss == "ce"
    assert make_trainer("nnUNetTrainerFixMatch_dice", 2).unsup_loss == "dice"
    assert make_trainer("nnUNetTrainerUniMatch", 2).unsup_loss == "ce"
    assert make_trainer("nnUNetTrainerUniMatch_ce", 2).unsup_loss == "ce"
    assert make_trainer("nnUNetTrainerUniMatch_dice", 2).unsup_loss == "dice"
    assert make_trainer("nnUNetTrainerUniMatch_noFP", 2).unsup_loss == "ce"
    assert make_trainer("nnUNetTrainerUniMatch_dice_40epochs_50its", 2).unsup_loss == "dice"
    for name in DICE_MEASURED:
        trainer = make_trainer(f"nnUNetTrainerFixMatch_{name}", 2)
        assert trainer.unsup_loss == "dice" and isinstance(trainer, nnUNetTrainerFixMatch_dice), name
    assert make_trainer("nnUNetTrainerFixMatch_40epochs_50its", 2).unsup_loss == "ce"
    assert make_trainer("nnUNetTrainerFixMatch_dice_40epochs_50its", 2).unsup_loss == "dice"


def test_fixmatch_collapse_candidates_set_their_switch_and_reach_the_loss(make_trainer):
    """nnUNetTrainerFixMatch_present passes present_only to the loss (a batch whose confident pseudo-labels lack a
    class: the step's L_u equals the present-class recomputation, not the default's); nnUNetTrainerFixMatch_rampup
    ramps lambda_u with exp(-5 (1 - t / 0.4)^2)."""
    trainer = make_trainer("nnUNetTrainerFixMatch_present", 2)
    assert trainer.unsup_dice_present_only is True and trainer.unsup_rampup_fraction == 0.0
    rng = np.random.default_rng(7)
    logits = torch.from_numpy(rng.normal(size=(2, 3, 6, 5)))
    labels = torch.from_numpy(rng.integers(0, 2, size=(2, 6, 5)))  # class 2 never pseudo-labelled
    mask = torch.ones((2, 6, 5), dtype=torch.bool)
    got = trainer.unsup_loss_of(logits, labels, mask).item()
    assert got == pytest.approx(_present_dice_numpy(logits.numpy(), labels.numpy(), mask.numpy()), rel=1e-6)
    assert abs(got - _masked_dice_numpy(logits.numpy(), labels.numpy(), mask.numpy())) > 0.1
    ramp = make_trainer("nnUNetTrainerFixMatch_rampup", 2)
    assert ramp.unsup_rampup_fraction == 0.4 and ramp.unsup_dice_present_only is False
    total = ramp.num_epochs * ramp.num_iterations_per_epoch
    for step, expected in ((0, np.exp(-5.0)), (int(0.2 * total), np.exp(-5 * 0.25)), (int(0.4 * total), 1.0)):
        ramp.current_epoch, ramp.step_in_epoch = divmod(step, ramp.num_iterations_per_epoch)
        assert ramp.current_unsup_weight() == pytest.approx(expected, rel=1e-3)
    # tau 0.80: a voxel of confidence 0.9 is in the mask (it is not at 0.95), everything else as the default
    tau = make_trainer("nnUNetTrainerFixMatch_tau80", 2)
    assert tau.confidence_threshold == 0.80 and not tau.unsup_dice_present_only and tau.unsup_rampup_fraction == 0
    confidence = torch.tensor([[[0.9, 0.97], [0.5, 0.85]]])
    boxes, partner = torch.zeros((1, 2, 2), dtype=torch.bool), torch.zeros(1, dtype=torch.long)
    _, mask = tau.mixed_pseudo_labels(torch.zeros((1, 2, 2), dtype=torch.long), confidence, boxes, partner)
    assert mask.tolist() == [[[True, True], [False, True]]]
    _, mask = trainer.mixed_pseudo_labels(torch.zeros((1, 2, 2), dtype=torch.long), confidence, boxes, partner)
    assert mask.tolist() == [[[False, True], [False, False]]]
    # tau 0: every voxel counts, the lowest possible argmax confidence (1/C) included
    free = make_trainer("nnUNetTrainerFixMatch_tau0", 2)
    assert free.confidence_threshold == 0.0 and not free.unsup_dice_present_only and free.unsup_rampup_fraction == 0
    _, mask = free.mixed_pseudo_labels(torch.zeros((1, 2, 2), dtype=torch.long), confidence.clamp(max=1 / 3), boxes,
                                       partner)
    assert mask.tolist() == [[[True, True], [True, True]]]


def _sat_numpy(probability_batches, momentum):
    """FreeMatch's Sec. 3.2 recomputed: EMA of the mean max-probability and of the mean class probabilities (both
    from 1/C), thresholds MaxNorm(p) * tau."""
    num_classes = probability_batches[0].shape[1]
    tau, p = 1.0 / num_classes, np.full(num_classes, 1.0 / num_classes)
    for q in probability_batches:
        per_voxel = np.moveaxis(q, 1, -1).reshape(-1, num_classes)
        tau = momentum * tau + (1 - momentum) * per_voxel.max(1).mean()
        p = momentum * p + (1 - momentum) * per_voxel.mean(0)
    return tau, p, p / p.max() * tau


@pytest.mark.parametrize("shape", [(3, 4, 9, 7), (2, 3, 4, 5, 6)])
def test_self_adaptive_threshold_equals_numpy_recomputation(shape):
    rng = np.random.default_rng(3)
    batches = [_softmax(rng.normal(size=shape) * s) for s in (1.0, 3.0, 6.0)]
    sat = SelfAdaptiveThreshold(shape[1], momentum=0.9)
    np.testing.assert_allclose(sat.thresholds().numpy(), 1.0 / shape[1])  # both estimates start at 1/C
    for q in batches:
        sat.update(SelfAdaptiveThreshold.batch_statistics(torch.from_numpy(q)))
    tau, p, thresholds = _sat_numpy(batches, 0.9)
    assert float(sat.global_threshold) == pytest.approx(tau, rel=1e-12)
    np.testing.assert_allclose(sat.class_probability.numpy(), p, rtol=1e-12)
    np.testing.assert_allclose(sat.thresholds().numpy(), thresholds, rtol=1e-12)
    assert thresholds.max() == pytest.approx(tau) and len(set(np.round(thresholds, 9))) == shape[1]  # per class
    q = batches[0]  # the least confident batch
    labels, confidence = confident_pseudo_labels(torch.from_numpy(np.log(q)))
    expected = q.max(1) >= thresholds[q.argmax(1)]
    assert 0.05 < expected.mean() < 0.95  # the class-wise thresholds select a real subset here
    np.testing.assert_array_equal(sat.mask(labels, confidence).numpy(), expected)
    # summed statistics of two halves (two DDP ranks after the all-reduce) equal those of the whole batch
    halves = sum(SelfAdaptiveThreshold.batch_statistics(torch.from_numpy(h)) for h in np.array_split(q, 2))
    np.testing.assert_allclose(halves.numpy(), SelfAdaptiveThreshold.batch_statistics(torch.from_numpy(q)).numpy())
    with pytest.raises(ValueError, match="statistics of 2 classes for a threshold of"):
        sat.update(torch.ones(4, dtype=torch.float64))


def test_fixmatch_sat_masks_with_its_class_thresholds_and_resumes_them(make_trainer, tmp_path):
    """nnUNetTrainerFixMatch_SAT: each step first updates the thresholds with the weak view (momentum 0.999 by
    default, FreeMatch's), then masks each (mixed) voxel with its class's threshold; L_u equals the recomputation
    with that mask. The thresholds travel in the checkpoint state and a resumed trainer continues from them."""
    trainer = make_trainer("nnUNetTrainerFixMatch_SAT", 2)
    assert trainer.sat_momentum == 0.999 and trainer.confidence_threshold == 0.95
    trainer.sat_momentum = 0.5  # large steps, so that one step moves the thresholds measurably
    x, target, xu = _inputs(trainer)
    strong, boxes, partner = _fixed_strong_view(trainer, xu)
    total, _, curves = trainer.compute_losses(x, target, xu)
    weak, strong_logits, sup = _forward_again(trainer, x, target, xu, strong)
    q = _softmax(weak)
    tau, p, thresholds = _sat_numpy([q], 0.5)
    b, part = boxes.numpy(), partner.numpy()
    labels = np.where(b, q.argmax(1)[part], q.argmax(1))
    mask = np.where(b, q.max(1)[part], q.max(1)) >= thresholds[labels]
    assert 0.05 < mask.mean() < 0.95
    assert curves["confident_fraction"] == pytest.approx(mask.mean())
    assert curves["unsup_losses"] == pytest.approx(_masked_dice_numpy(strong_logits, labels, mask), rel=1e-4)
    assert curves["sat_global_threshold"] == pytest.approx(tau, rel=1e-9)
    assert curves["sat_foreground_threshold"] == pytest.approx(thresholds[1:].mean(), rel=1e-9)
    assert total.item() == pytest.approx(sup + _masked_dice_numpy(strong_logits, labels, mask), rel=1e-4)

    torch.save(trainer.extra_checkpoint_state(), tmp_path / "state.pth")
    resumed = make_trainer("nnUNetTrainerFixMatch_SAT", 2)
    resumed.load_extra_checkpoint_state(torch.load(tmp_path / "state.pth", weights_only=False))
    assert torch.equal(resumed.self_adaptive_threshold.thresholds(), trainer.self_adaptive_threshold.thresholds())
    np.testing.assert_allclose(resumed.self_adaptive_threshold.thresholds().numpy(), thresholds, rtol=1e-6)
    assert resumed.self_adaptive_threshold.momentum == 0.5
    for t in (trainer, resumed):  # the next step of both moves the thresholds identically
        t.observe_weak_view(torch.from_numpy(weak).float())
    np.testing.assert_array_equal(resumed.self_adaptive_threshold.thresholds().numpy(),
                                  trainer.self_adaptive_threshold.thresholds().numpy())
    np.testing.assert_allclose(trainer.self_adaptive_threshold.thresholds().numpy(), _sat_numpy([q, q], 0.5)[2],
                               rtol=1e-6)


def _largest_component_numpy(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Per image and foreground class, the largest fully connected component; the rest of the class -> 0."""
    from scipy import ndimage
    out = labels.copy()
    for b in range(out.shape[0]):
        structure = np.ones((3,) * out[b].ndim, dtype=bool)
        for c in range(1, num_classes):
            components, n = ndimage.label(labels[b] == c, structure)
            if n > 1:
                largest = 1 + int(np.argmax([(components == k).sum() for k in range(1, n + 1)]))
                out[b][(components > 0) & (components != largest)] = 0
    return out


def test_fixmatch_sat_lcc_keeps_each_classs_largest_pseudo_label_component(make_trainer):
    """nnUNetTrainerFixMatch_SAT_lcc: the weak view's pseudo-labels keep each foreground class's largest connected
    component before the class-wise mask and CutMix; the other voxels of that class become background (and count
    where background's threshold admits their confidence). Hand case, then the trainer's step recomputed."""
    trainer = make_trainer("nnUNetTrainerFixMatch_SAT_lcc", 2)
    assert trainer.pseudo_label_largest_component is True
    assert make_trainer("nnUNetTrainerFixMatch_SAT", 2).pseudo_label_largest_component is False
    hand = torch.tensor([[[2, 2, 0, 0, 2],
                          [0, 0, 0, 1, 0],
                          [1, 0, 0, 1, 0]]])  # class 2: blobs of 2 and 1 voxels; class 1: of 1 and 2 voxels
    assert trainer.refine_pseudo_labels(hand, 3).tolist() == [[[2, 2, 0, 0, 0], [0, 0, 0, 1, 0], [0, 0, 0, 1, 0]]]
    diagonal = torch.tensor([[[1, 0], [0, 1]]])  # full connectivity: diagonal neighbours are one component
    assert torch.equal(trainer.refine_pseudo_labels(diagonal, 2), diagonal)

    trainer.sat_momentum = 0.5
    x, target, xu = _inputs(trainer)
    strong, boxes, partner = _fixed_strong_view(trainer, xu)
    total, _, curves = trainer.compute_losses(x, target, xu)
    weak, strong_logits, sup = _forward_again(trainer, x, target, xu, strong)
    q = _softmax(weak)
    thresholds = _sat_numpy([q], 0.5)[2]
    refined = _largest_component_numpy(q.argmax(1), 3)
    assert (refined != q.argmax(1)).mean() > 0.01  # an untrained network's pseudo-labels are fragmented
    b, part = boxes.numpy(), partner.numpy()
    labels = np.where(b, refined[part], refined)
    mask = np.where(b, q.max(1)[part], q.max(1)) >= thresholds[labels]
    assert curves["confident_fraction"] == pytest.approx(mask.mean())
    assert curves["unsup_losses"] == pytest.approx(_masked_dice_numpy(strong_logits, labels, mask), rel=1e-4)
    assert total.item() == pytest.approx(sup + _masked_dice_numpy(strong_logits, labels, mask), rel=1e-4)


@pytest.mark.parametrize("trainer_name, largest_component, recompute", [
    ("nnUNetTrainerUniMatch_dice", False, _masked_dice_numpy),
    ("nnUNetTrainerUniMatch_dice", True, _masked_dice_numpy),
    ("nnUNetTrainerUniMatch", False, _masked_ce_numpy),
    ("nnUNetTrainerUniMatch_ce", True, _masked_ce_numpy)])
def test_unimatch_weights_and_feature_stream(make_trainer, trainer_name, largest_component, recompute):
    """With feature dropout 0 the perturbed stream is the weak prediction itself, so L_fp is the unlabeled loss
    (the default's and ``_ce``'s masked per-voxel CE, the paper's; ``_dice``: the medical code's masked soft Dice) of
    the weak logits against their own
    pseudo-labels; L = L_s + 0.5 * (L_s1 + L_s2) / 2 + 0.5 * L_fp. ``pseudo_label_largest_component`` reaches
    UniMatch's pseudo-labels too (each class's largest component, recomputed)."""
    trainer = make_trainer(trainer_name, 2)
    assert trainer.unsup_loss == ("dice" if trainer_name.endswith("_dice") else "ce")
    trainer.feature_perturbation = SkipFeatureDropout(trainer.network, p=0.0)
    trainer.confidence_threshold = 0.4
    trainer.pseudo_label_largest_component = largest_component
    x, target, xu = _inputs(trainer)
    strong, boxes, partner = _fixed_strong_view(trainer, xu)
    total, _, curves = trainer.compute_losses(x, target, xu)
    weak, strong_logits, sup = _forward_again(trainer, x, target, xu, strong)
    q = _softmax(weak)
    labels = _largest_component_numpy(q.argmax(1), 3) if largest_component else q.argmax(1)
    b, part = boxes.numpy(), partner.numpy()
    l_s = recompute(strong_logits, np.where(b, labels[part], labels), np.where(b, q.max(1)[part], q.max(1)) >= 0.4)
    l_fp = recompute(weak, labels, q.max(1) >= 0.4)
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


def _record_strong_views(trainer) -> list:
    """Run the trainer's real strong_view, recording each ``(strong, boxes, partner)`` it returns."""
    views, real = [], trainer.strong_view

    def recording(weak):
        views.append(real(weak))
        return views[-1]

    trainer.strong_view = recording
    return views


def _logits(trainer, *inputs):
    with torch.no_grad():
        return [trainer.network(i)[0].double().numpy() for i in inputs]


def test_unimatch_two_real_strong_views_each_with_its_own_boxes(make_trainer):
    """The real strong_view twice: two different views (perturbations and boxes); L_s1 and L_s2 each recomputed with
    the pseudo-labels mixed by its own view's boxes (with the boxes of the other view the number is another one, so
    exchanging boxes_1 / boxes_2 in the trainer fails here). The weak rows of the joint pass only make pseudo-labels:
    they receive exactly zero gradient."""
    trainer = make_trainer("nnUNetTrainerUniMatch_dice", 2)
    trainer.feature_perturbation = SkipFeatureDropout(trainer.network, p=0.0)  # L_fp recomputable from the weak pass
    trainer.confidence_threshold, trainer.cutmix_probability = 0.4, 1.0
    x, target, xu = _inputs(trainer)
    views = _record_strong_views(trainer)
    joint = []

    def keep_gradient(module, args, out):  # returns None: the output stays the network's
        out[0].retain_grad()
        joint.append(out[0])

    handle = trainer.network.register_forward_hook(keep_gradient)
    torch.manual_seed(11)
    np.random.seed(11)
    total, _, curves = trainer.compute_losses(x, target, xu)
    handle.remove()

    (strong_1, boxes_1, partner_1), (strong_2, boxes_2, partner_2) = views
    assert not torch.allclose(strong_1, strong_2, atol=1e-2) and not torch.equal(boxes_1, boxes_2)
    assert all(b.flatten(1).any(1).all() for b in (boxes_1, boxes_2))  # every sample got a box in both views
    weak, z1, z2 = _logits(trainer, xu, strong_1, strong_2)
    with torch.no_grad():
        sup = trainer.loss(trainer.network(x), target).item()
    q = _softmax(weak)

    def strong_loss(z, boxes, partner):
        b, part = boxes.numpy(), partner.numpy()
        return _masked_dice_numpy(z, np.where(b, q.argmax(1)[part], q.argmax(1)),
                                  np.where(b, q.max(1)[part], q.max(1)) >= 0.4)

    l_s = 0.5 * (strong_loss(z1, boxes_1, partner_1) + strong_loss(z2, boxes_2, partner_2))
    swapped = 0.5 * (strong_loss(z1, boxes_2, partner_2) + strong_loss(z2, boxes_1, partner_1))
    assert abs(swapped - l_s) > 1e-3  # 10 x the tolerance below: the test tells the two assignments apart
    l_fp = _masked_dice_numpy(weak, q.argmax(1), q.max(1) >= 0.4)
    assert curves["unsup_losses"] == pytest.approx(l_s, rel=1e-4)
    assert total.item() == pytest.approx(sup + 0.5 * l_s + 0.5 * l_fp, rel=1e-4)

    total.backward()
    grad = joint[0].grad  # rows: labeled | weak | strong 1 | strong 2 | perturbed weak
    assert torch.count_nonzero(grad[4:8]) == 0
    assert all(torch.count_nonzero(grad[r]) > 0 for r in (0, 8, 12, 16))


# ------------------------------------------------------------------------------------------------- a batch of 1
def _identity_strong(trainer) -> None:
    """No intensity perturbation: the strong view is the CutMix of the weak patches itself."""
    trainer.strong_config = StrongIntensityConfig(p_brightness=0, p_contrast=0, p_gamma=0, p_blur=0, p_noise=0)


@pytest.mark.parametrize("trainer_name", ["nnUNetTrainerFixMatch", "nnUNetTrainerUniMatch"])
def test_a_batch_of_one_mixes_with_the_previous_steps_patch(make_trainer, trainer_name):
    """Unlabeled batch of 1: the first step has no partner (no box, one log line); the next step's strong view(s)
    carry the previous patch inside the box and the current one outside, and the loss uses the previous patch's
    pseudo-labels and confidences inside the same box."""
    trainer = make_trainer(trainer_name, 2)
    if trainer_name == "nnUNetTrainerUniMatch":
        trainer.feature_perturbation = SkipFeatureDropout(trainer.network, p=0.0)
    trainer.confidence_threshold, trainer.cutmix_probability = 0.4, 1.0
    _identity_strong(trainer)
    x, target, xu = _inputs(trainer, n=2)
    x1, target1 = x[:1], [t[:1] for t in target]
    previous, current = xu[:1] * 0.2 + 3, xu[1:]  # a brighter patch: other pseudo-labels than the current one
    views = _record_strong_views(trainer)
    message = "CutMix: an unlabeled batch of 1 has no partner on the first step"

    trainer.compute_losses(x1, target1, previous)
    assert views and all(not b.any() and torch.equal(s, previous) for s, b, _ in views)
    assert Path(trainer.log_file).read_text().count(message) == 1
    views.clear()
    _, _, curves = trainer.compute_losses(x1, target1, current)

    q_previous, q_current = (_softmax(z) for z in _logits(trainer, previous, current))
    recompute = {"ce": _masked_ce_numpy, "dice": _masked_dice_numpy}[trainer.unsup_loss]
    losses, unmixed = [], []
    for strong, boxes, partner in views:
        inside = boxes[0]
        assert 0 < inside.sum() < inside.numel() and partner.tolist() == [1]
        assert torch.equal(strong[0][:, inside], previous[0][:, inside])
        assert torch.equal(strong[0][:, ~inside], current[0][:, ~inside])
        b = inside.numpy()[None]
        labels = np.where(b, q_previous.argmax(1), q_current.argmax(1))
        mask = np.where(b, q_previous.max(1), q_current.max(1)) >= 0.4
        z, = _logits(trainer, strong)
        losses.append(recompute(z, labels, mask))
        unmixed.append(recompute(z, q_current.argmax(1), q_current.max(1) >= 0.4))
        # the mixed pseudo-labels are really another target: apart by more than 10x the tolerance checked below
        assert abs(losses[-1] - unmixed[-1]) > 10 * 1e-4 * abs(losses[-1])
    assert len(views) == (2 if trainer_name == "nnUNetTrainerUniMatch" else 1)
    assert curves["unsup_losses"] == pytest.approx(np.mean(losses), rel=1e-4)
    assert Path(trainer.log_file).read_text().count(message) == 1  # logged once


def test_a_batch_above_one_keeps_todays_strong_view_and_no_partner(make_trainer):
    """n > 1: the strong view is exactly the per-sample perturbation then CutMix with the next patch of the batch,
    from the same random streams (the numerics the benchmarks ran); no partner is kept or checkpointed."""
    trainer = make_trainer("nnUNetTrainerFixMatch", 2)
    x, target, xu = _inputs(trainer)
    for seed in (0, 1):
        torch.manual_seed(seed)
        np.random.seed(seed)
        strong, boxes, partner = trainer.strong_view(xu)
        torch.manual_seed(seed)
        np.random.seed(seed)
        expected = apply_per_sample(strong_intensity_transform(trainer.strong_config), xu)
        expected_boxes = cutmix_boxes(4, xu.shape[2:], p=0.5)
        assert partner.tolist() == [1, 2, 3, 0] and torch.equal(boxes, expected_boxes)
        assert torch.equal(strong, cutmix(expected, expected_boxes, partner))
    trainer.compute_losses(x, target, xu)
    assert trainer.extra_checkpoint_state() == {"unsup_loss": "ce", "cutmix_partner": [None]}


def test_the_kept_partner_travels_in_the_checkpoint_state(make_trainer, tmp_path):
    """A resumed run continues with the same partner: the state written after a step, loaded into a fresh trainer,
    gives the same strong view from the same random streams. A checkpoint of another number of ranks restores none
    (logged)."""
    trainer = make_trainer("nnUNetTrainerFixMatch", 2)
    trainer.cutmix_probability = 1.0
    x, target, xu = _inputs(trainer, n=2)
    trainer.compute_losses(x[:1], [t[:1] for t in target], xu[:1])
    torch.save(trainer.extra_checkpoint_state(), tmp_path / "state.pth")
    state = torch.load(tmp_path / "state.pth", weights_only=False)
    kept = state["cutmix_partner"][0]
    assert torch.equal(kept["image"], xu[:1])
    q, = (_softmax(z) for z in _logits(trainer, xu[:1]))
    assert np.array_equal(kept["labels"].numpy(), q.argmax(1))
    np.testing.assert_allclose(kept["confidence"].numpy(), q.max(1), rtol=1e-6)

    resumed = make_trainer("nnUNetTrainerFixMatch", 2)
    resumed.cutmix_probability = 1.0
    resumed.load_extra_checkpoint_state(state)
    views = []
    for t in (trainer, resumed):
        torch.manual_seed(7)
        np.random.seed(7)
        views.append(t.strong_view(xu[1:]))
    assert views[0][1].any() and all(torch.equal(a, b) for a, b in zip(*views))

    other = make_trainer("nnUNetTrainerFixMatch", 2)
    other.load_extra_checkpoint_state({"cutmix_partner": state["cutmix_partner"] * 2})
    assert other._cutmix_partner is None
    assert "written by 2 rank(s), this run has 1: the kept CutMix partner is not restored" in \
        Path(other.log_file).read_text()
    other.load_extra_checkpoint_state({})  # a checkpoint from before the partner existed
    assert other._cutmix_partner is None


def test_the_unlabeled_loss_travels_in_the_checkpoint_and_old_checkpoints_keep_the_soft_dice(make_trainer):
    """``--c`` continues with the loss the checkpoint was trained with: recorded since the default became the CE,
    and for a checkpoint without the record (written before) the loss its trainer had then: the soft Dice for
    ``nnUNetTrainerFixMatch`` and its budget variants, the CE for ``_ce``. A change is logged, no change is not."""
    message = "the run continues with"
    trainer = make_trainer("nnUNetTrainerFixMatch", 2)
    assert trainer.extra_checkpoint_state()["unsup_loss"] == "ce"
    trainer.load_extra_checkpoint_state({"unsup_loss": "ce", "cutmix_partner": [None]})
    assert trainer.unsup_loss == "ce" and message not in Path(trainer.log_file).read_text()

    for name, recorded, expected in (("nnUNetTrainerFixMatch", None, "dice"),
                                     ("nnUNetTrainerFixMatch_40epochs_50its", None, "dice"),
                                     ("nnUNetTrainerFixMatch", "dice", "dice"),
                                     ("nnUNetTrainerFixMatch_ce", None, "ce"),
                                     ("nnUNetTrainerFixMatch_dice", None, "dice"),
                                     ("nnUNetTrainerFixMatch_dice", "ce", "ce"),
                                     ("nnUNetTrainerUniMatch", None, "dice"),
                                     ("nnUNetTrainerUniMatch", "ce", "ce"),
                                     ("nnUNetTrainerUniMatch_ce", None, "ce"),
                                     ("nnUNetTrainerUniMatch_dice", None, "dice")):
        resumed = make_trainer(name, 2)
        default = resumed.unsup_loss
        resumed.load_extra_checkpoint_state({"cutmix_partner": [None]} if recorded is None else
                                            {"unsup_loss": recorded, "cutmix_partner": [None]})
        assert resumed.unsup_loss == expected, (name, recorded)
        logged = Path(resumed.log_file).read_text() if Path(resumed.log_file).exists() else ""
        assert (f"trained with unsup_loss '{expected}'" in logged) == (expected != default), (name, recorded)
        assert resumed.extra_checkpoint_state()["unsup_loss"] == expected  # and the next checkpoint records it


# ------------------------------------------------------------------------------------------------- torch.compile
def _nnunet_would_compile(self) -> bool:
    """nnU-Net's _do_i_compile past its CPU refusal (its CUDA branch): ``nnUNet_compile`` unset or true."""
    return os.environ.get("nnUNet_compile", "true").lower() in ("true", "1", "t")


@pytest.mark.parametrize("trainer_name", ["nnUNetTrainerFixMatch", "nnUNetTrainerUniMatch"])
def test_unimatch_turns_torch_compile_off(tmp_path, monkeypatch, trainer_name):
    """nnU-Net's real initialize() with nnUNet_compile=1 and its compile decision as on CUDA (CPU here): FixMatch's
    network and Dice term are compiled (the control: the set-up really asks for compilation), UniMatch's are not,
    one log line says why, and its feature perturbation works on the network it trains (perturbed rows differ from
    the clean rows)."""
    monkeypatch.setenv("nnUNet_results", str(tmp_path))
    monkeypatch.setenv("nnUNet_compile", "1")
    monkeypatch.delenv("nnUNet_semi_seed", raising=False)
    monkeypatch.setattr(nnUNetTrainer, "_do_i_compile", _nnunet_would_compile)
    trainer = TRAINERS[trainer_name](_plans(2), "cfg", 0, dict(DATASET_JSON), device=torch.device("cpu"))
    trainer.preprocessed_dataset_folder = str(tmp_path / "preprocessed")
    os.makedirs(trainer.preprocessed_dataset_folder)
    (tmp_path / "preprocessed" / "case.b2nd").touch()  # nnU-Net infers its dataset class from the file ending
    trainer.initialize()
    log = Path(trainer.log_file).read_text()
    compiled = isinstance(trainer.network, OptimizedModule)
    if trainer_name == "nnUNetTrainerFixMatch":
        assert compiled and isinstance(trainer.loss.loss.dc, OptimizedModule) and "Using torch.compile" in log
        return
    assert not compiled and not isinstance(trainer.loss.loss.dc, OptimizedModule)
    assert "Using torch.compile" not in log and log.count("torch.compile disabled for UniMatch") == 1
    x = torch.randn(2, 1, *trainer.configuration_manager.patch_size)
    torch.manual_seed(0)
    with torch.no_grad(), trainer.feature_perturbation.active(0, 2):
        out = trainer.network(x)[0]
    assert out.shape[0] == 4 and not torch.allclose(out[2:], out[:2], atol=1e-3)
