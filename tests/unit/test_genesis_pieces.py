"""Models Genesis pieces on small arrays: every transformation checked voxel by voxel, the loss recomputed."""
import numpy as np
import pytest
import torch

from nnunet_semi.losses.reconstruction import restoration_loss
from pretraining.genesis_transforms import (bezier_mapping, genesis_pair, in_painting, local_pixel_shuffle,
                                            nonlinear_transform, out_painting)


def _union(shape, boxes):
    mask = np.zeros(shape, dtype=bool)
    for box in boxes:
        mask[box] = True
    return mask


@pytest.mark.parametrize("flip", [False, True])
def test_bezier_mapping_is_monotone_and_hits_the_end_points(flip):
    rng = np.random.RandomState(0)
    for _ in range(50):
        xs, ys = bezier_mapping(rng, flip=flip)
        assert xs[0] == 0.0 and xs[-1] == 1.0
        assert np.all(np.diff(xs) >= 0)
        assert (ys[0], ys[-1]) == ((1.0, 0.0) if flip else (0.0, 1.0))
        assert np.all(np.diff(ys) <= 0) if flip else np.all(np.diff(ys) >= 0)
    # the curve is the cubic Bezier of its control points: recompute one point with the Bernstein form
    rng_a, rng_b = np.random.RandomState(3), np.random.RandomState(3)
    xs, ys = bezier_mapping(rng_a, samples=5)
    p1, p2 = rng_b.rand(2), rng_b.rand(2)
    t = np.linspace(0, 1, 5)
    bx = 3 * (1 - t) ** 2 * t * p1[0] + 3 * (1 - t) * t ** 2 * p2[0] + t ** 3
    by = 3 * (1 - t) ** 2 * t * p1[1] + 3 * (1 - t) * t ** 2 * p2[1] + t ** 3
    np.testing.assert_allclose(xs, np.sort(bx))
    np.testing.assert_allclose(ys, np.sort(by))


def test_nonlinear_transform_preserves_the_intensity_order():
    rng = np.random.RandomState(1)
    x = rng.rand(1, 6, 7).astype(np.float32)
    x[0, 0, 0], x[0, 0, 1] = 0.0, 1.0
    for _ in range(20):
        out, (xs, ys) = nonlinear_transform(x, rng)
        flipped = ys[0] > ys[-1]
        order = np.argsort(x.ravel())
        steps = np.diff(out.ravel()[order])
        assert np.all(steps <= 1e-7) if flipped else np.all(steps >= -1e-7)
        assert out[0, 0, 0] == pytest.approx(1.0 if flipped else 0.0)
        assert out[0, 0, 1] == pytest.approx(0.0 if flipped else 1.0)
        assert out.dtype == x.dtype and out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("shape", [(2, 40, 30), (1, 20, 30, 10)])
def test_local_shuffle_permutes_within_windows_only(shape):
    rng = np.random.RandomState(2)
    x = rng.rand(*shape)  # distinct values: a voxel's origin is identifiable
    out, windows = local_pixel_shuffle(x, rng, num_blocks=200)
    assert len(windows) == 200
    touched = _union(shape[1:], windows)
    assert np.array_equal(out[:, ~touched], x[:, ~touched])
    for w in windows:
        assert all(1 <= b.stop - b.start <= max(1, s // 10) and 0 <= b.start and b.stop <= s
                   for b, s in zip(w, shape[1:]))
    # the last window is written last: its voxels are a permutation of the original window's, the same for all
    # channels
    last = (slice(None),) + windows[-1]
    assert np.array_equal(np.sort(out[last].reshape(shape[0], -1)), np.sort(x[last].reshape(shape[0], -1)))
    perm = [np.argsort(x[last][c].ravel())[np.argsort(np.argsort(out[last][c].ravel()))] for c in range(shape[0])]
    assert all(np.array_equal(perm[0], p) for p in perm)
    # every voxel comes from a window containing it (windows are read from the untransformed patch)
    for index in zip(*np.nonzero(touched)):
        sources = [w for w in windows if all(b.start <= i < b.stop for b, i in zip(w, index))]
        assert any(out[(0,) + index] in x[(0,) + w] for w in sources)


def test_local_shuffle_single_window_keeps_the_multiset():
    rng = np.random.RandomState(5)
    x = rng.rand(1, 50, 50)
    out, (window,) = local_pixel_shuffle(x, rng, num_blocks=1)
    assert np.array_equal(np.sort(out[(0,) + window].ravel()), np.sort(x[(0,) + window].ravel()))
    outside = ~_union(x.shape[1:], [window])
    assert np.array_equal(out[0][outside], x[0][outside])


@pytest.mark.parametrize("shape", [(1, 60, 42), (2, 30, 28, 21)])
def test_in_painting_fills_exactly_the_boxes(shape):
    rng = np.random.RandomState(4)
    x = np.full(shape, 7.0)  # outside [0, 1]: noise is distinguishable
    counts = set()
    for _ in range(30):
        out, boxes = in_painting(x, rng)
        counts.add(len(boxes))
        assert 1 <= len(boxes) <= 5
        mask = _union(shape[1:], boxes)
        assert np.all(out[:, ~mask] == 7.0)
        assert np.all((out[:, mask] >= 0) & (out[:, mask] < 1))
        for box in boxes:
            for b, s in zip(box, shape[1:]):
                assert s // 6 <= b.stop - b.start <= s // 3 and b.start >= 3 and b.stop <= s - 3
    assert max(counts) > 1  # further boxes are drawn (p = 0.95 each)


@pytest.mark.parametrize("shape", [(1, 60, 42), (2, 30, 28, 21)])
def test_out_painting_keeps_exactly_the_boxes(shape):
    rng = np.random.RandomState(6)
    x = np.full(shape, 7.0)
    for _ in range(30):
        out, boxes = out_painting(x, rng)
        assert 1 <= len(boxes) <= 5
        mask = _union(shape[1:], boxes)
        assert np.all(out[:, mask] == 7.0)
        assert np.all((out[:, ~mask] >= 0) & (out[:, ~mask] < 1))
        for box in boxes:
            for b, s in zip(box, shape[1:]):
                assert s - 4 * s // 7 <= b.stop - b.start <= s - 3 * s // 7 and b.start >= 3 and b.stop <= s - 3


def test_genesis_pair_works_in_the_patch_intensity_range():
    rng = np.random.RandomState(7)
    patch = (rng.randn(2, 32, 24) * 3 + 5).astype(np.float32)
    patch[1] = 2.5  # a constant channel stays constant-scaled
    identity, target = genesis_pair(patch, rng, 0.0, 0.0, 0.0, flip_probability=0.0)
    np.testing.assert_allclose(identity, patch, rtol=1e-6, atol=1e-5)
    np.testing.assert_array_equal(target, patch)
    for _ in range(10):
        x, target = genesis_pair(patch, rng)
        assert x.shape == patch.shape and x.dtype == np.float32
        # the target is the (possibly flipped) patch; the input stays in the patch's own range
        assert np.array_equal(np.sort(target[0].ravel()), np.sort(patch[0].ravel()))
        assert x[0].min() >= patch[0].min() - 1e-4 and x[0].max() <= patch[0].max() + 1e-4
    # painting only: out-painting with probability 1 keeps the boxes' original values, noise elsewhere in range
    x, target = genesis_pair(patch, rng, 0.0, 0.0, 1.0, 1.0, 0.0)
    assert np.isclose(x[0], patch[0], atol=1e-5).mean() > 0.05 and not np.allclose(x[0], patch[0])


def test_restoration_loss_is_the_mean_squared_error():
    g = torch.Generator().manual_seed(0)
    restored, original = torch.randn(2, 3, 5, 6, generator=g), torch.randn(2, 3, 5, 6, generator=g)
    expected = sum(float((a - b) ** 2) for a, b in zip(restored.numpy().ravel(), original.numpy().ravel())) / 180
    assert restoration_loss(restored, original).item() == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="must match"):
        restoration_loss(restored, original[:, :1])


class _OneImageDataset:
    """A one-case stand-in for nnU-Net's dataset (``load_case`` as nnU-Net's loader calls it); module level, so the
    loader pickles into worker processes."""
    identifiers = ["case"]

    def __init__(self, image: np.ndarray):
        self.image = image

    def load_case(self, identifier):
        seg = np.zeros((1,) + self.image.shape[1:], dtype=np.int16)
        return self.image, seg, None, {"class_locations": {1: np.zeros((0, 4), dtype=np.int64)}}


def test_genesis_transform_is_genesis_pair_and_pickles():
    import pickle

    from pretraining.genesis import GenesisTransform

    patch = np.random.RandomState(0).normal(size=(1, 16, 12)).astype(np.float32)
    transform = pickle.loads(pickle.dumps(GenesisTransform(0.9, 0.5, 0.9, 0.8, 0.4, 50)))
    np.random.seed(7)
    out = transform(image=torch.from_numpy(patch), segmentation=torch.zeros(1, 16, 12, dtype=torch.int16))
    expected_x, expected_target = genesis_pair(patch, np.random.RandomState(7), 0.9, 0.5, 0.9, 0.8, 0.4, 50)
    assert torch.equal(out["image"], torch.from_numpy(expected_x))
    assert torch.equal(out["segmentation"], torch.from_numpy(expected_target))


@pytest.mark.parametrize("workers", [0, 2])
def test_genesis_runs_in_nnunet_loader_workers(workers):
    """Through nnU-Net's own data loader, in the main process (0) or in augmentation worker processes (2): the batch
    carries transformed inputs as 'data' and the untransformed (possibly flipped) patches as float 'target'."""
    from batchgenerators.dataloading.nondet_multi_threaded_augmenter import NonDetMultiThreadedAugmenter
    from batchgenerators.dataloading.single_threaded_augmenter import SingleThreadedAugmenter
    from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
    from nnunetv2.utilities.label_handling.label_handling import LabelManager

    from pretraining.genesis import GenesisTransform

    image = np.arange(1 * 1 * 16 * 12, dtype=np.float32).reshape(1, 1, 16, 12)  # (C, Z, Y, X), a 2D slice
    loader = nnUNetDataLoader(_OneImageDataset(image), 4, (16, 12), (16, 12),
                              LabelManager({"background": 0, "x": 1}, regions_class_order=None),
                              transforms=GenesisTransform(1.0, 1.0, 1.0, 0.5, 0.4, 20))
    augmenter = SingleThreadedAugmenter(loader, None) if workers == 0 else \
        NonDetMultiThreadedAugmenter(loader, None, workers, 2)
    try:
        batch = next(augmenter)
    finally:
        if workers:
            augmenter._finish()
    data, target = batch["data"], batch["target"]
    assert data.shape == target.shape == (4, 1, 16, 12) and target.dtype == torch.float32
    for x, y in zip(data, target):
        assert np.array_equal(np.sort(y.numpy().ravel()), image.ravel())  # the patch itself, at most flipped
        assert not torch.equal(x, y)  # every transformation on: the input differs from its target
