"""Uncertainty-rectified pyramid consistency (URPC).

Luo, Wang, Liao, Song, Zhang et al., "Efficient semi-supervised gross target volume of nasopharyngeal carcinoma
segmentation via uncertainty rectified pyramid consistency", MICCAI 2021, and the journal version "Semi-supervised
medical image segmentation via uncertainty rectified pyramid consistency", Medical Image Analysis 80 (2022),
Sec. 3.2 - 3.3. The network predicts at ``S`` scales; every prediction is up-sampled to the input resolution,
``p_s`` (softmax), and their average is ``p_c = 1/S sum_s p_s``. Per voxel ``v`` and scale ``s``::

    D_s^v = sum_j p_s^{v,j} log(p_s^{v,j} / p_c^{v,j})           KL(p_s || p_c): the scale's uncertainty
    w_s^v = exp(-D_s^v)
    L_unsup = 1/S sum_s [ sum_v w_s^v ||p_s^v - p_c^v||_2^2 / sum_v w_s^v ]  +  1/S sum_s [ 1/V sum_v D_s^v ]

The first term is the uncertainty-rectified consistency (voxels where scale ``s`` disagrees with the pyramid
average count less), the second minimises the uncertainty itself. ``||.||_2^2`` sums over the classes; the sums over
voxels run over one image, and the loss is averaged over the images of the batch. Nothing is detached (as in the
paper: ``p_c`` and the weights are part of the graph).

Notes on the released code (SSL4MIS ``train_uncertainty_rectified_pyramid_consistency_2D.py``), which differs in
small ways that we do not follow: it computes ``KL(p_c || p_s)`` (``nn.KLDivLoss(log p_s, p_c)``), averages the
squared difference over classes instead of summing it, and normalises the weights over the whole batch.

Equation numbers follow our reading of the published paper (cited above); the equations are written out in full here
so that they can be checked against it.
"""
from typing import Dict, Sequence

import torch
import torch.nn.functional as F

_LINEAR_MODES = {1: "linear", 2: "bilinear", 3: "trilinear"}


def upsample_pyramid(logits: Sequence[torch.Tensor], mode: str = "linear") -> list:
    """Up-sample every scale's logits ``(B, C, *spatial_s)`` to the spatial size of ``logits[0]`` (the full
    resolution in nnU-Net's deep-supervision order). ``mode='linear'`` means bilinear (2D) / trilinear (3D); any
    ``F.interpolate`` mode (e.g. ``'nearest'``) may be given."""
    size = logits[0].shape[2:]
    if mode == "linear":
        mode = _LINEAR_MODES[len(size)]
    align = False if mode in ("linear", "bilinear", "trilinear", "bicubic") else None
    return [logits[0]] + [F.interpolate(lg, size=size, mode=mode, align_corners=align) for lg in logits[1:]]


def uncertainty_rectified_pyramid_consistency(logits: Sequence[torch.Tensor]) -> Dict[str, torch.Tensor]:
    """``L_unsup`` of URPC for the up-sampled logits of ``S >= 2`` scales, each ``(B, C, *spatial)`` (2D or 3D).

    Returns ``{'loss': rectified + uncertainty, 'rectified': ..., 'uncertainty': mean D}`` (scalars)."""
    if len(logits) < 2:
        raise ValueError(f"URPC needs predictions at >= 2 scales, got {len(logits)}")
    shapes = {tuple(lg.shape) for lg in logits}
    if len(shapes) != 1:
        raise ValueError(f"all scales must be up-sampled to one shape first (upsample_pyramid), got {sorted(shapes)}")
    log_p = torch.stack([torch.log_softmax(lg.float(), 1) for lg in logits])  # (S, B, C, *spatial)
    log_pc = torch.logsumexp(log_p, 0) - torch.log(torch.tensor(float(len(logits)), device=log_p.device))
    p, pc = log_p.exp(), log_pc.exp()
    divergence = (p * (log_p - log_pc)).sum(2)  # D_s^v: (S, B, *spatial)
    weight = torch.exp(-divergence)
    squared = ((p - pc) ** 2).sum(2)  # ||p_s - p_c||^2 per voxel
    rectified = (weight * squared).flatten(2).sum(-1) / weight.flatten(2).sum(-1)  # (S, B)
    rectified = rectified.mean()
    uncertainty = divergence.mean()
    return {"loss": rectified + uncertainty, "rectified": rectified, "uncertainty": uncertainty}
