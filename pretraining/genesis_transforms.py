"""The image transformations of Models Genesis (Zhou et al., "Models Genesis", MedIA 2021, Sec. 2.1 / Fig. 1),
on one patch ``x`` of shape ``(C, *spatial)`` (2D or 3D), pure NumPy.

Each function takes the patch with intensities in [0, 1] (the paper's input range; see :func:`genesis_pair` for
how nnU-Net-normalised patches are brought there and back), a random source ``rng`` (``np.random.RandomState`` or
the ``np.random`` module, whose global state the pretraining runner seeds and checkpoints) and returns the
transformed copy plus what it did (curve, windows, boxes), so that tests can check every voxel.

* non-linear intensity transformation (Sec. 2.1.2): a monotone mapping drawn as a cubic Bezier curve through the
  end points P0 = (0, 0), P3 = (1, 1) with two random control points P1, P2 in [0, 1]^2; with probability 1/2 the
  curve is flipped (decreasing: P0 -> 1, P3 -> 0);
* local pixel shuffling (Sec. 2.1.3): ``num_blocks`` (10000) random windows, each at most 1/10 of the patch per
  axis, whose voxels are permuted (windows are read from the untransformed patch; a later window overwrites
  an earlier overlapping one);
* in-painting (Sec. 2.1.4): up to 5 boxes of 1/6 .. 1/3 of the patch per axis, at least 3 voxels from the border,
  filled with uniform noise; after the first, each further box is added with probability 0.95;
* out-painting (Sec. 2.1.4): the patch is replaced by uniform noise except up to 5 boxes (the first always,
  each further one with probability 0.95) whose size per axis is the patch size minus 3/7 .. 4/7 of it, which keep
  the original voxels.

The numbers are those of the authors' public configuration (MrGiovanni/ModelsGenesis, pytorch/config.py):
non-linear p = 0.9, local shuffling p = 0.5, painting p = 0.9 of which out-painting 0.8 and in-painting 0.2, and a
flip of input and target (p = 0.4 per step, at most 3 flips) as data augmentation.
"""
from typing import List, Sequence, Tuple

import numpy as np

Box = Tuple[slice, ...]

#: number of samples of the Bezier curve used as the look-up table of the intensity mapping
BEZIER_SAMPLES = 10000


def bezier_mapping(rng=np.random, flip: bool = False, samples: int = BEZIER_SAMPLES):
    """The sampled curve ``(xs, ys)`` of the non-linear transformation: cubic Bezier curve B(t) = sum_i
    C(3, i) (1 - t)^(3 - i) t^i P_i with P0 = (0, 0), P3 = (1, 1), P1, P2 ~ U[0, 1]^2. ``xs`` and ``ys`` are each
    sorted, so the mapping is monotone (non-decreasing) even where the control points make the curve itself
    non-monotone; ``flip`` reverses ``ys`` (non-increasing, mapping 0 -> 1 and 1 -> 0)."""
    points = np.array([[0.0, 0.0], rng.rand(2), rng.rand(2), [1.0, 1.0]])
    t = np.linspace(0.0, 1.0, samples)[:, None]
    curve = ((1 - t) ** 3 * points[0] + 3 * (1 - t) ** 2 * t * points[1] + 3 * (1 - t) * t ** 2 * points[2]
             + t ** 3 * points[3])
    xs, ys = np.sort(curve[:, 0]), np.sort(curve[:, 1])
    return xs, (ys[::-1] if flip else ys)


def nonlinear_transform(x: np.ndarray, rng=np.random, flip_probability: float = 0.5):
    """Map every intensity of ``x`` (in [0, 1]) through one random Bezier mapping; returns ``(out, (xs, ys))``."""
    xs, ys = bezier_mapping(rng, flip=rng.rand() < flip_probability)
    return np.interp(x, xs, ys).astype(x.dtype), (xs, ys)


def local_pixel_shuffle(x: np.ndarray, rng=np.random, num_blocks: int = 10000, max_fraction: float = 0.1):
    """Permute the voxels inside ``num_blocks`` random windows (size per axis 1 .. max(1, floor(s * max_fraction)),
    anywhere inside the patch; all channels with the same permutation). Returns ``(out, windows)``."""
    spatial = x.shape[1:]
    max_size = [max(1, int(s * max_fraction)) for s in spatial]
    sizes = np.stack([rng.randint(1, m + 1, size=num_blocks) for m in max_size], axis=1)
    starts = np.stack([rng.randint(0, s - sizes[:, a] + 1) for a, s in enumerate(spatial)], axis=1)
    out = x.copy()
    windows: List[Box] = []
    for size, start in zip(sizes, starts):
        box = tuple(slice(int(b), int(b + n)) for b, n in zip(start, size))
        window = x[(slice(None),) + box].reshape(x.shape[0], -1)
        out[(slice(None),) + box] = window[:, rng.permutation(window.shape[1])].reshape(
            (x.shape[0],) + tuple(int(n) for n in size))
        windows.append(box)
    return out, windows


def _random_box(spatial: Sequence[int], rng, low_sizes: Sequence[int], high_sizes: Sequence[int],
                margin: int = 3) -> Box:
    """A box with size per axis in [low, high] (inclusive), ``margin`` voxels from the border where it fits."""
    box = []
    for s, lo, hi in zip(spatial, low_sizes, high_sizes):
        size = int(np.clip(rng.randint(lo, hi + 1), 1, s))
        first = min(margin, s - size)
        last = max(first, s - size - margin)
        start = rng.randint(first, last + 1)
        box.append(slice(start, start + size))
    return tuple(box)


def in_painting(x: np.ndarray, rng=np.random, max_boxes: int = 5, continue_probability: float = 0.95):
    """Fill up to ``max_boxes`` boxes (1/6 .. 1/3 of the patch per axis) with U[0, 1] noise: the first box always,
    each further one with probability ``continue_probability``. Returns ``(out, boxes)``."""
    spatial = x.shape[1:]
    out = x.copy()
    boxes: List[Box] = []
    while len(boxes) < max_boxes and (not boxes or rng.rand() < continue_probability):
        box = _random_box(spatial, rng, [s // 6 for s in spatial], [s // 3 for s in spatial])
        out[(slice(None),) + box] = rng.rand(x.shape[0], *[b.stop - b.start for b in box])
        boxes.append(box)
    return out, boxes


def out_painting(x: np.ndarray, rng=np.random, max_boxes: int = 5, continue_probability: float = 0.95):
    """U[0, 1] noise everywhere except up to ``max_boxes`` boxes (size per axis: s minus 3/7 .. 4/7 of s), which
    keep the original voxels: the first box always, each further one with probability ``continue_probability``.
    Returns ``(out, boxes)``."""
    spatial = x.shape[1:]
    out = rng.rand(*x.shape).astype(x.dtype)
    boxes: List[Box] = []
    while len(boxes) < max_boxes and (not boxes or rng.rand() < continue_probability):
        box = _random_box(spatial, rng, [s - 4 * s // 7 for s in spatial], [s - 3 * s // 7 for s in spatial])
        out[(slice(None),) + box] = x[(slice(None),) + box]
        boxes.append(box)
    return out, boxes


def random_flips(x: np.ndarray, y: np.ndarray, rng=np.random, probability: float = 0.4, max_flips: int = 3):
    """Data augmentation of the authors' code: flip input and target along a random spatial axis, repeated while
    U[0, 1] < ``probability`` (at most ``max_flips`` times)."""
    for _ in range(max_flips):
        if rng.rand() >= probability:
            break
        axis = 1 + rng.randint(0, x.ndim - 1)
        x, y = np.flip(x, axis), np.flip(y, axis)
    return np.ascontiguousarray(x), np.ascontiguousarray(y)


def genesis_pair(patch: np.ndarray, rng=np.random, nonlinear_probability: float = 0.9,
                 local_shuffle_probability: float = 0.5, paint_probability: float = 0.9,
                 outpaint_probability: float = 0.8, flip_probability: float = 0.4, num_blocks: int = 10000):
    """``(transformed input, restoration target)`` for one nnU-Net-normalised patch ``(C, *spatial)``.

    nnU-Net's intensities are not in [0, 1] (z-scores, CT windows): each channel is min-max scaled to [0, 1] with
    its own patch minimum and maximum, transformed exactly as in the paper (flip -> local shuffling -> non-linear
    -> in-/out-painting, in the order of the authors' code), and scaled back with the same minimum and maximum, so
    the noise of the painting boxes spans the patch's own intensity range and the target is the untouched
    (flipped) patch in nnU-Net's normalisation. A constant channel (max = min) is left unscaled.
    """
    target = patch.astype(np.float32)
    x, target = random_flips(target, target, rng, flip_probability)
    lo = x.reshape(x.shape[0], -1).min(1).reshape((-1,) + (1,) * (x.ndim - 1))
    hi = x.reshape(x.shape[0], -1).max(1).reshape((-1,) + (1,) * (x.ndim - 1))
    scale = np.where(hi > lo, hi - lo, 1.0).astype(np.float32)
    x = (x - lo) / scale
    if rng.rand() < local_shuffle_probability:
        x, _ = local_pixel_shuffle(x, rng, num_blocks=num_blocks)
    if rng.rand() < nonlinear_probability:
        x, _ = nonlinear_transform(x, rng)
    if rng.rand() < paint_probability:
        x, _ = (out_painting if rng.rand() < outpaint_probability else in_painting)(x, rng)
    return (x * scale + lo).astype(np.float32), target
