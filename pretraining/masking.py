"""Complementary block masks of CCM pre-training.

Sec. 2.1 of CCM (Zhou, Gu, Zhang, Wang, "Self-supervised pre-training based on contrastive complementary masking for
semi-supervised cardiac image segmentation"): "we first obtain a binary mask M^a by
randomly setting half of all the blocks in the image as 0 and the other half as 1 [...] a complementary mask M^b is
obtained by M^b = 1 - M^a", and the two networks see ``X^a = M^a X`` and ``X^b = M^b X``. The block size is
16 x 16 (Sec. 3.1, 2D slices of 256 x 256).
"""
import math
from typing import Optional, Sequence, Tuple

import torch

PAPER_BLOCK = 16


def default_block_size(patch_size: Sequence[int]) -> Tuple[int, ...]:
    """Block size for a patch: 16 per axis (the paper's 16 x 16), capped at ``ceil(patch_size[i] / 2)``.

    The paper only gives the 2D value; the cap is our rule for (3D) nnU-Net patches with short axes, so that every
    axis of size >= 2 is cut into at least 2 blocks (an axis of size 1 gets a single block of size 1).
    """
    if len(patch_size) < 1 or any(int(p) != p or p < 1 for p in patch_size):
        raise ValueError(f"patch_size must be a non-empty sequence of positive integers, got {patch_size}")
    return tuple(min(PAPER_BLOCK, math.ceil(int(p) / 2)) for p in patch_size)


def complementary_block_masks(shape: Sequence[int], block_size: Sequence[int],
                              generator: Optional[torch.Generator] = None,
                              device=None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Random complementary block masks ``(m_a, m_b)``, float32 tensors of shape ``(B, 1, *spatial)``.

    Args:
        shape: the image batch shape ``(B, C, *spatial)`` (``C`` is ignored: all channels share the mask).
        block_size: one block edge per spatial axis. The spatial grid is tiled from the origin by blocks of this
            size; the last block along an axis may be partial (``grid = ceil(size / block)``).
        generator: optional ``torch.Generator`` for reproducible masks; the random draw happens on its device.
        device: device of the returned masks (default: CPU).

    For every image independently exactly ``floor(n_blocks / 2)`` blocks, chosen uniformly at random, are 0 in
    ``m_a`` and the others 1; ``m_b = 1 - m_a``. (With an odd number of blocks ``m_b`` keeps one block more; with a
    single block ``m_a`` is all ones.)
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) < 3 or any(s < 1 for s in shape):
        raise ValueError(f"shape must be (B, C, *spatial) with positive sizes, got {shape}")
    spatial = shape[2:]
    block_size = tuple(block_size)
    if len(block_size) != len(spatial):
        raise ValueError(f"block_size {block_size} needs one entry per spatial axis of {spatial}")
    if any(int(b) != b or b < 1 for b in block_size):
        raise ValueError(f"block_size entries must be integers >= 1, got {block_size}")
    block_size = tuple(int(b) for b in block_size)

    grid = tuple(math.ceil(s / b) for s, b in zip(spatial, block_size))
    n_blocks = math.prod(grid)
    draw_device = generator.device if generator is not None else torch.device("cpu")
    order = torch.rand(shape[0], n_blocks, generator=generator, device=draw_device).argsort(1)
    blocks = torch.ones(shape[0], n_blocks, device=draw_device)
    blocks.scatter_(1, order[:, :n_blocks // 2], 0.0)  # a uniformly random subset of floor(n/2) blocks per image

    m_a = blocks.reshape(shape[0], *grid)
    for axis, (size, b) in enumerate(zip(spatial, block_size), start=1):
        m_a = m_a.repeat_interleave(b, dim=axis).narrow(axis, 0, size)
    m_a = m_a.unsqueeze(1).to(device if device is not None else "cpu").contiguous()
    return m_a, 1.0 - m_a
