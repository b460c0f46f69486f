"""Crop / flip views with exact correspondence, for dense contrastive pretraining (IDEAL, GlobalLocal).

Views: :func:`random_crop_flip` samples, per image, a crop (offset a multiple of the encoder's total stride) and
flips; :func:`apply_crop_flip` applies them; :func:`crop_flip_correspondence` maps every query feature location to
its key feature location. Because crop offsets and sizes are multiples of the stride, the feature cell ``u`` of a
view covers exactly the image voxels ``[u * stride, (u + 1) * stride)`` of that view, and two cells of two views
correspond exactly when they cover the same voxels of the original patch (flips included).
"""
import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import torch


@dataclass
class CropFlip:
    """Per-image geometry of one view: ``offset`` ``(B, ndim)`` (voxels, start of the crop in the patch), ``flip``
    ``(B, ndim)`` bool (axis flipped after cropping), ``size`` (the crop size, same for all images)."""

    offset: torch.Tensor
    flip: torch.Tensor
    size: Tuple[int, ...]


def default_crop_size(patch_size: Sequence[int], stride: Sequence[int], fraction: float = 0.75) -> Tuple[int, ...]:
    """Per axis ``round(fraction * cells) * stride`` with ``cells = patch // stride``, at least
    ``ceil((cells + 1) / 2)`` cells so that two crops always share at least one feature cell, at most the patch."""
    if not 0 < fraction <= 1:
        raise ValueError(f"crop fraction must be in (0, 1], got {fraction}")
    size = []
    for p, s in zip(patch_size, stride):
        if p % s:
            raise ValueError(f"patch size {list(patch_size)} is not divisible by the stride {list(stride)}")
        cells = p // s
        size.append(min(cells, max(math.ceil((cells + 1) / 2), round(fraction * cells))) * s)
    return tuple(size)


def random_crop_flip(batch_size: int, patch_size: Sequence[int], crop_size: Sequence[int], stride: Sequence[int],
                     flip_axes: Sequence[int] = None, generator: Optional[torch.Generator] = None) -> CropFlip:
    """Sample one view per image: a crop of ``crop_size`` whose offset is a uniform multiple of ``stride`` and a
    flip (probability 1/2) of each axis in ``flip_axes`` (default: all spatial axes; indices into the spatial axes).
    ``crop_size`` must be a multiple of ``stride`` and at most ``patch_size``. Uses torch's random stream."""
    ndim = len(patch_size)
    if not (len(crop_size) == len(stride) == ndim):
        raise ValueError(f"patch {list(patch_size)}, crop {list(crop_size)} and stride {list(stride)} need one entry "
                         f"per spatial axis")
    if any(c % s or c < s or c > p for p, c, s in zip(patch_size, crop_size, stride)):
        raise ValueError(f"crop size {list(crop_size)} must be a positive multiple of the stride {list(stride)} and "
                         f"at most the patch size {list(patch_size)}")
    flip_axes = range(ndim) if flip_axes is None else flip_axes
    positions = torch.tensor([(p - c) // s + 1 for p, c, s in zip(patch_size, crop_size, stride)])
    offset = (torch.rand(batch_size, ndim, generator=generator) * positions).long().clamp_max(positions - 1)
    offset = offset * torch.tensor(list(stride))
    flip = torch.rand(batch_size, ndim, generator=generator) < 0.5
    allowed = torch.zeros(ndim, dtype=torch.bool)
    allowed[list(flip_axes)] = True
    return CropFlip(offset, flip & allowed, tuple(int(c) for c in crop_size))


def apply_crop_flip(x: torch.Tensor, view: CropFlip) -> torch.Tensor:
    """Crop and flip a batch ``(B, C, *patch)`` as ``view`` says; returns ``(B, C, *view.size)``."""
    if x.shape[0] != view.offset.shape[0] or x.ndim - 2 != view.offset.shape[1]:
        raise ValueError(f"batch of shape {tuple(x.shape)} does not fit views for {tuple(view.offset.shape)} "
                         f"(images, spatial axes)")
    out = []
    for b in range(x.shape[0]):
        region = (slice(None),) + tuple(slice(int(o), int(o) + c) for o, c in zip(view.offset[b], view.size))
        crop = x[b][region]
        dims = [1 + ax for ax in range(len(view.size)) if view.flip[b, ax]]
        out.append(crop.flip(dims) if dims else crop)
    return torch.stack(out)


def crop_flip_correspondence(view_q: CropFlip, view_k: CropFlip, stride: Sequence[int]) -> torch.Tensor:
    """For every feature location of the query view, the flat (row-major) index of the key-view feature location
    covering the same voxels of the patch, or ``-1`` outside the overlap. Returns ``(B, L_q)`` int64, where
    ``L_q = prod(view_q.size // stride)``: the layout of ``features.flatten(2)``."""
    stride_t = torch.tensor(list(stride))
    if (view_q.offset % stride_t).any() or (view_k.offset % stride_t).any() or \
            any(c % s for c, s in zip(view_q.size + view_k.size, list(stride) * 2)):
        raise ValueError(f"crop offsets and sizes must be multiples of the stride {list(stride)} for an exact "
                         f"feature correspondence")
    cells_q = torch.tensor([c // s for c, s in zip(view_q.size, stride)])
    cells_k = torch.tensor([c // s for c, s in zip(view_k.size, stride)])
    grid = torch.stack(torch.meshgrid(*[torch.arange(int(n)) for n in cells_q], indexing="ij"), -1).reshape(-1,
                                                                                                            len(stride))
    # query cell -> unflipped query cell -> patch cell -> unflipped key cell -> key cell
    unflipped_q = torch.where(view_q.flip[:, None], cells_q - 1 - grid[None], grid[None])  # (B, L_q, ndim)
    patch_cell = unflipped_q + (view_q.offset // stride_t)[:, None]
    unflipped_k = patch_cell - (view_k.offset // stride_t)[:, None]
    inside = ((unflipped_k >= 0) & (unflipped_k < cells_k)).all(-1)
    cell_k = torch.where(view_k.flip[:, None], cells_k - 1 - unflipped_k, unflipped_k)
    row_major = torch.tensor([int(torch.prod(cells_k[ax + 1:])) for ax in range(len(stride))])
    index = (cell_k * row_major).sum(-1)
    return torch.where(inside, index, torch.full_like(index, -1))
