"""Dense local contrastive loss of IDEAL pre-training, and two-view geometry with exact correspondence.

Basak et al., IDEAL (``papers/ideal-dense-local-contrastive.md``, Sec. 2.2). A query view ``x_q`` and a key view
``x_k`` of the same image go through the encoder and a 1x1-convolution projection head, giving dense features of
``D_h x D_w (x D_d)`` locations. For query location ``i``, the positive ``k_i^+`` is the key feature at the *same
image location* in the other view, the negatives ``k_i^-`` are the key features of views of *other images*::

    L_loc = -1/(D_h D_w) sum_i log( e(q_i, k_i^+) / (e(q_i, k_i^+) + sum_{k_i^-} e(q_i, k_i^-)) ),
    e(q, k) = exp(q . k / tau)                                                                        (eq. 2)

and the global loss (eq. 1, MoCo-style dictionary look-up; optional here) is the same expression for one global
feature per view (the spatial mean of the dense features): ``q`` the pooled query, ``k^+`` the pooled key of the
same image, ``k^-`` the pooled keys of the other images.

Conventions (the paper leaves them open): features are L2-normalised over channels (``q . k`` is the cosine), the
negatives of a query location are *all* key locations of every other image of the batch (of all ranks with
``gather_distributed``); query locations without a corresponding key location (outside the views' overlap) are left
out, so the ``1/(D_h D_w)`` of eq. 2 becomes one over the number of corresponding locations of the image; the loss
of a batch is the mean over its images.

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
import torch.nn.functional as F

from nnunet_semi.losses.contrastive import gather_candidates


# ------------------------------------------------------------------------------------------- views / geometry

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


# ------------------------------------------------------------------------------------------------- losses

def dense_local_contrastive_loss(q: torch.Tensor, k: torch.Tensor, positive_index: torch.Tensor,
                                 temperature: float = 0.1, gather_distributed: bool = False) -> torch.Tensor:
    """Eq. 2 of the IDEAL paper (see the module docstring for the conventions).

    Args:
        q: query-view features ``(B, C, *grid_q)`` (the projection head's dense output).
        k: key-view features ``(B, C, *grid_k)``; image ``b`` of ``q`` and ``k`` is the same image.
        positive_index: ``(B, L_q)`` int64, for each query location (row-major over ``grid_q``) the flat index of
            its positive among the key locations of the same image, ``-1`` for none (from
            :func:`crop_flip_correspondence`). Each image needs at least one positive.
        temperature: ``tau`` (the paper gives no value; default 0.1 as in Chaitanya et al. [13], whom it follows).
        gather_distributed: negatives are the key features of the other images of *all* ranks (autograd-aware
            all_gather, as :func:`nnunet_semi.losses.contrastive.info_nce`); anchors stay local. With equal local
            batches, the mean over ranks of the returned values equals the single-process loss of the global batch.

    Returns:
        A scalar: the mean over images of the mean over their corresponding query locations of
        ``logsumexp([s_pos, s_neg...]) - s_pos`` with ``s = q_i . k / tau``. With a single image in the (global)
        batch there are no negatives and the loss is exactly 0. Half-precision inputs are computed in float32.
    """
    if q.ndim < 3 or k.ndim != q.ndim or q.shape[:2] != k.shape[:2]:
        raise ValueError(f"expected features (B, C, *grid) with equal B and C, got {tuple(q.shape)} and "
                         f"{tuple(k.shape)}")
    n, c = q.shape[:2]
    lq, lk = math.prod(q.shape[2:]), math.prod(k.shape[2:])
    if positive_index.shape != (n, lq):
        raise ValueError(f"positive_index must have shape (B, L_q) = {(n, lq)}, got {tuple(positive_index.shape)}")
    if (positive_index >= lk).any() or (positive_index < -1).any():
        raise ValueError(f"positive_index must be in [-1, {lk}) (key locations), got values outside")
    valid = positive_index >= 0
    if not valid.any(1).all():
        raise ValueError("every image needs at least one query location with a corresponding key location")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if q.dtype in (torch.float16, torch.bfloat16):
        q, k = q.float(), k.float()

    q = F.normalize(q.flatten(2), dim=1).transpose(1, 2)  # (B, L_q, C)
    k = F.normalize(k.flatten(2), dim=1).transpose(1, 2)  # (B, L_k, C)
    index = positive_index.clamp_min(0).to(q.device)
    positives = torch.gather(k, 1, index[..., None].expand(-1, -1, c))  # (B, L_q, C)
    s_pos = (q * positives).sum(-1) / temperature  # (B, L_q)

    candidates, rank = gather_candidates(k.reshape(n * lk, c)) if gather_distributed else (k.reshape(n * lk, c), 0)
    s_neg = q.reshape(n * lq, c) @ candidates.t() / temperature  # (B * L_q, B_global * L_k)
    owner = torch.arange(candidates.shape[0], device=q.device) // lk  # global image index of each candidate
    own = torch.arange(n, device=q.device).repeat_interleave(lq) + rank * n  # global image index of each anchor
    s_neg = s_neg.masked_fill(owner[None] == own[:, None], float("-inf"))  # same image: neither positive nor negative

    logits = torch.cat([s_pos.reshape(n * lq, 1), s_neg], 1)
    per_location = (torch.logsumexp(logits, 1) - logits[:, 0]).reshape(n, lq)
    valid = valid.to(q.device)
    per_image = (per_location * valid).sum(1) / valid.sum(1)
    return per_image.mean()


def global_contrastive_loss(q: torch.Tensor, k: torch.Tensor, temperature: float = 0.1,
                            gather_distributed: bool = False) -> torch.Tensor:
    """Eq. 1 of the IDEAL paper on the spatial means of dense features ``(B, C, *grid)`` of the two views: the
    positive of image ``b``'s query is its own key, the negatives are the keys of the other images (all ranks with
    ``gather_distributed``). Computed as eq. 2 with one location per view."""
    if q.ndim < 3 or k.ndim != q.ndim:
        raise ValueError(f"expected features (B, C, *grid), got {tuple(q.shape)} and {tuple(k.shape)}")
    pooled_q, pooled_k = q.flatten(2).mean(-1, keepdim=True), k.flatten(2).mean(-1, keepdim=True)
    index = torch.zeros(q.shape[0], 1, dtype=torch.long, device=q.device)
    return dense_local_contrastive_loss(pooled_q, pooled_k, index, temperature, gather_distributed)
