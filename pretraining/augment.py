"""Random augmentations of 2D batches for contrastive pretraining (MMGL, SimCLR), in torch, per image.

MMGL (Zhao et al., "MMGL: Multi-scale multi-view global-local contrastive learning for semi-supervised cardiac image
segmentation", ICIP 2022, arXiv:2207.01883; Sec. 4.1): "brightness transform, Gamma transform, Gaussian
noise transform, and spatial transforms, like rotation and crop". The paper gives no ranges; we use nnU-Net's
default ranges for the intensity transforms (multiplicative brightness U(0.75, 1.25), gamma U(0.7, 1.5) on the
image's min-max range, Gaussian noise with variance U(0, 0.1)) and a rotation by U(-20, 20) degrees combined with a
random crop of U(0.7, 1.0) of the side (resized back to the patch: "random resized crop"). The same geometry is
applied to the segmentation (nearest neighbour; pixels from outside the image become -1, i.e. ignored).
Random numbers come from torch's global generator (seeded by the runner), so runs are reproducible.
"""
import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

ROTATION_DEGREES = 20.0
CROP_SCALE = (0.7, 1.0)
BRIGHTNESS = (0.75, 1.25)
GAMMA = (0.7, 1.5)
NOISE_VARIANCE = (0.0, 0.1)


def _uniform(n: int, low: float, high: float) -> torch.Tensor:
    return torch.empty(n).uniform_(low, high)


def random_affine(n: int) -> torch.Tensor:
    """``(n, 2, 3)`` affine matrices (normalised coordinates): rotation, zoom into a crop, translation inside."""
    angle = _uniform(n, -ROTATION_DEGREES, ROTATION_DEGREES) * math.pi / 180
    scale = _uniform(n, *CROP_SCALE)
    shift = (1 - scale)[:, None] * (torch.rand(n, 2) * 2 - 1)
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    return torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)


def augment_2d(data: torch.Tensor, seg: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """One random augmentation of every image of ``data`` ``(B, C, H, W)`` (and its segmentation ``(B, 1, H, W)``)."""
    if data.ndim != 4:
        raise ValueError(f"MMGL / SimCLR augmentations are 2D: expected (B, C, H, W), got {tuple(data.shape)}. "
                         f"Fix: pretrain with a 2d configuration (-c 2d).")
    b = data.shape[0]
    theta = random_affine(b).to(data.device, data.dtype)
    grid = F.affine_grid(theta, list(data.shape), align_corners=False)
    out = F.grid_sample(data, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    # intensity: brightness, gamma (on the image's own min-max range), Gaussian noise
    shape = (b,) + (1,) * (data.ndim - 1)
    out = out * _uniform(b, *BRIGHTNESS).view(shape).to(out)
    low = out.flatten(1).min(1)[0].view(shape)
    span = (out.flatten(1).max(1)[0].view(shape) - low).clamp(min=1e-8)
    gamma = _uniform(b, *GAMMA).view(shape).to(out)
    out = ((out - low) / span).clamp(0, 1) ** gamma * span + low
    sigma = _uniform(b, *NOISE_VARIANCE).sqrt().view(shape).to(out)
    out = out + sigma * torch.randn(out.shape).to(out)
    if seg is None:
        return out, None
    seg_grid = F.affine_grid(theta, [b, 1, *data.shape[2:]], align_corners=False)
    seg_out = F.grid_sample(seg.to(out.dtype) + 1, seg_grid, mode="nearest", padding_mode="zeros",
                            align_corners=False) - 1
    return out, seg_out.round().to(seg.dtype)
