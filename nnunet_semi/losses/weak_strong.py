"""Weak-to-strong consistency losses (FixMatch, Sohn et al. NeurIPS 2020; UniMatch, Yang et al. CVPR 2023).

For an unlabeled voxel v with weak-view class probabilities ``q_v`` (no gradient), the pseudo-label is
``argmax q_v`` and it counts only where the model is confident::

    L_u = 1 / |V| * sum_v 1(max_c q_v,c >= tau) * H(argmax q_v, p_v)          (FixMatch's unlabeled loss, per voxel)

``p_v`` is the prediction on the strong view, ``H`` the cross-entropy, ``|V|`` all unlabeled voxels of the batch
(confident or not, as in FixMatch's ``1 / (mu B)`` and UniMatch's segmentation code). The optional Dice variant
(UniMatch's medical code) is a soft Dice over the confident voxels only.
"""
from typing import Tuple

import torch
import torch.nn.functional as F


@torch.no_grad()
def confident_pseudo_labels(logits_weak: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(pseudo_labels, confidence)`` of weak-view logits ``(B, C, *spatial)``: argmax class and its softmax
    probability, both ``(B, *spatial)``, detached."""
    probabilities = torch.softmax(logits_weak.detach().float(), 1)
    confidence, labels = probabilities.max(1)
    return labels, confidence


def masked_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """FixMatch's unlabeled loss: mean over all voxels of ``mask * CE(logits, labels)``; ``mask`` is the boolean
    (or 0/1) confidence mask ``(B, *spatial)``."""
    ce = F.cross_entropy(logits.float(), labels.long(), reduction="none")
    return (ce * mask.to(ce.dtype)).mean()


def masked_soft_dice(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, smooth: float = 1e-5
                     ) -> torch.Tensor:
    """``1 - mean_c (2 sum_v m_v p_vc y_vc + s) / (sum_v m_v p_vc + sum_v m_v y_vc + s)`` over all classes c, sums
    over every voxel of the batch, ``m`` the confidence mask (a class neither predicted nor pseudo-labeled on the
    confident voxels scores 1 through the smoothing ``s``)."""
    probabilities = torch.softmax(logits.float(), 1)
    one_hot = F.one_hot(labels.long(), logits.shape[1]).movedim(-1, 1).to(probabilities.dtype)
    m = mask.to(probabilities.dtype).unsqueeze(1)
    axes = [0] + list(range(2, logits.ndim))
    intersection = (m * probabilities * one_hot).sum(axes)
    denominator = (m * probabilities).sum(axes) + (m * one_hot).sum(axes)
    dice = (2 * intersection + smooth) / (denominator + smooth)
    return 1 - dice.mean()


def weak_to_strong_loss(logits_strong: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor,
                        kind: str = "ce") -> torch.Tensor:
    """The unlabeled loss of a strong view: ``'ce'`` (FixMatch), ``'dice'`` (UniMatch's medical code) or
    ``'ce+dice'`` (their mean, nnU-Net's supervised weighting)."""
    if kind == "ce":
        return masked_cross_entropy(logits_strong, labels, mask)
    if kind == "dice":
        return masked_soft_dice(logits_strong, labels, mask)
    if kind == "ce+dice":
        return 0.5 * (masked_cross_entropy(logits_strong, labels, mask) + masked_soft_dice(logits_strong, labels, mask))
    raise ValueError(f"unknown unlabeled loss {kind!r}; expected 'ce', 'dice' or 'ce+dice'")
