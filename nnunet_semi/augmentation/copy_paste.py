"""Bidirectional copy-paste (BCP) mixing: Bai et al., "Bidirectional Copy-Paste for Semi-Supervised Medical Image
Segmentation", CVPR 2023, Sec. 3.2-3.3 (tensors in, tensors out).

* :func:`box_mask`: M of the patch shape, ones except a zero box of ``int(2/3 * size)`` voxels per axis at a random
  position (Sec. 3.2: "zero-centered mask M ... of size beta H x beta W (x beta L), beta = 2/3");
* :func:`copy_paste`: X = X_1 * M + X_2 * (1 - M) (Sec. 3.2: X_1 outside the box, the crop of X_2 inside it; the
  labeled / unlabeled roles give the two directions);
* :func:`region_targets`: the mixed label map split into its two regions, each with an ignore value elsewhere, so
  that a loss restricted to one region weights it separately (Sec. 3.3: the pseudo-labeled region weighted by
  alpha);
* :func:`downsample_targets`: a full-resolution target at every deep-supervision scale (nearest-exact, as nnU-Net
  downsamples its own targets), so the mixed targets follow the box at every scale.
"""
from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F


def box_mask(spatial_shape: Sequence[int], ratio: float = 2.0 / 3.0, device=None,
             generator: torch.Generator = None) -> torch.Tensor:
    """Float mask of ``spatial_shape``: 1 everywhere except a box of ``int(ratio * s)`` voxels along each axis
    (0 inside), at a uniformly random position that keeps the box inside the patch."""
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"BCP mask ratio must be in (0, 1), got {ratio}")
    mask = torch.ones(tuple(spatial_shape), device=device)
    box = []
    for s in spatial_shape:
        size = int(s * ratio)
        start = int(torch.randint(0, s - size + 1, (1,), generator=generator))
        box.append(slice(start, start + size))
    mask[tuple(box)] = 0.0
    return mask


def copy_paste(outer: torch.Tensor, inner: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``outer * M + inner * (1 - M)`` for images or one-channel label maps ``(B, C, *spatial)``, M ``(*spatial)``."""
    if outer.shape != inner.shape or outer.shape[2:] != mask.shape:
        raise ValueError(f"copy_paste: shapes {tuple(outer.shape)}, {tuple(inner.shape)} and mask "
                         f"{tuple(mask.shape)} do not match")
    return outer * mask + inner * (1 - mask)


def region_targets(y_outer: torch.Tensor, y_inner: torch.Tensor, mask: torch.Tensor, ignore_value: int
                   ) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(t_out, t_in)``: ``y_outer`` where M = 1 and ``ignore_value`` elsewhere; ``y_inner`` where M = 0 and
    ``ignore_value`` elsewhere. Label maps ``(B, 1, *spatial)``."""
    if y_outer.shape != y_inner.shape or y_outer.shape[2:] != mask.shape:
        raise ValueError(f"region_targets: shapes {tuple(y_outer.shape)}, {tuple(y_inner.shape)} and mask "
                         f"{tuple(mask.shape)} do not match")
    inside = mask == 0
    ignore = torch.full_like(y_outer, ignore_value)
    return torch.where(inside, ignore, y_outer), torch.where(inside, y_inner, ignore)


def downsample_targets(target: torch.Tensor, outputs: Sequence[torch.Tensor]) -> List[torch.Tensor]:
    """``target`` ``(B, 1, *spatial)`` at the spatial size of each output (nearest-exact)."""
    return [target if o.shape[2:] == target.shape[2:] else
            F.interpolate(target.float(), size=tuple(o.shape[2:]), mode="nearest-exact").to(target.dtype)
            for o in outputs]
