"""Weak-to-strong consistency losses (FixMatch, Sohn et al. NeurIPS 2020; UniMatch, Yang et al. CVPR 2023).

For an unlabeled voxel v with weak-view class probabilities ``q_v`` (no gradient), the pseudo-label is
``argmax q_v`` and it counts only where the model is confident::

    L_u = 1 / |V| * sum_v 1(max_c q_v,c >= tau) * H(argmax q_v, p_v)          (FixMatch's unlabeled loss, per voxel)

``p_v`` is the prediction on the strong view, ``H`` the cross-entropy, ``|V|`` all unlabeled voxels of the batch
(confident or not, as in FixMatch's ``1 / (mu B)`` and UniMatch's segmentation code). The Dice variant is a soft
Dice over the confident voxels only (:func:`masked_soft_dice`); by default its denominator is ``sum p + sum y``
(nnU-Net's soft Dice form) and it averages over every class, background included. UniMatch's medical code
(``DiceLoss`` of its ACDC scripts) squares the prediction in the denominator, ``sum p^2 + sum y``
(``squared_denominator=True``); nnU-Net's own Dice leaves the background class out (``include_background=False``).
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


def masked_soft_dice(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, smooth: float = 1e-5,
                     squared_denominator: bool = False, include_background: bool = True,
                     present_only: bool = False) -> torch.Tensor:
    """Soft Dice loss of ``softmax(logits)`` against integer ``labels`` on the voxels where ``mask`` is true::

        1 - mean_{c in K} (2 sum_v m_v p_vc y_vc + s) / (sum_v m_v p_vc^e + sum_v m_v y_vc + s)

    sums over every voxel of the batch (one Dice per class for the whole batch, "batch Dice"), ``m`` the
    confidence mask, ``y`` the one-hot labels, ``s`` the smoothing (a class neither predicted nor labelled on the
    masked voxels scores 1). ``e = 1`` (default; nnU-Net's soft Dice denominator) or ``e = 2`` with
    ``squared_denominator=True`` (UniMatch's medical code; ``y^2 = y``). ``K`` is every class, background (class 0)
    included, by default; ``include_background=False`` averages over the classes 1..C-1 only (nnU-Net's
    ``do_bg=False``). ``present_only=True`` keeps, of those, only the classes that occur in ``labels`` on the
    masked voxels (``sum_v m_v y_vc > 0``); with none the loss is 0. Why: with pseudo-labels, a class missing from a
    batch's pseudo-labels (because the network does not predict it yet) scores ``s / (sum m p_c + s)``, which only
    leaves 0 when the predicted mass of that class drops to the order of ``s``: the loss then rewards predicting
    exactly none of it on unlabeled images, a self-reinforcing collapse of that class (measured on ACDC: FixMatch's
    right ventricle, ``benchmarks/results/acdc3-cpu``). Over present classes only, an absent class costs nothing."""
    if not include_background and logits.shape[1] < 2:
        raise ValueError(f"masked_soft_dice: include_background=False needs at least one foreground class, got "
                         f"{logits.shape[1]} class(es)")
    probabilities = torch.softmax(logits.float(), 1)
    one_hot = F.one_hot(labels.long(), logits.shape[1]).movedim(-1, 1).to(probabilities.dtype)
    m = mask.to(probabilities.dtype).unsqueeze(1)
    axes = [0] + list(range(2, logits.ndim))
    intersection = (m * probabilities * one_hot).sum(axes)
    predicted = probabilities * probabilities if squared_denominator else probabilities
    denominator = (m * predicted).sum(axes) + (m * one_hot).sum(axes)
    dice = (2 * intersection + smooth) / (denominator + smooth)
    if not present_only:
        return 1 - (dice if include_background else dice[1:]).mean()
    keep = (m * one_hot).sum(axes) > 0
    if not include_background:
        keep[0] = False
    if not bool(keep.any()):
        return (probabilities * 0).sum()  # nothing pseudo-labelled on the masked voxels: no loss, same graph
    return 1 - dice[keep].mean()


def weak_to_strong_loss(logits_strong: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor,
                        kind: str = "ce", squared_denominator: bool = False, present_only: bool = False) -> torch.Tensor:
    """The unlabeled loss of a strong view: ``'ce'`` (FixMatch, :func:`masked_cross_entropy`), ``'dice'``
    (:func:`masked_soft_dice` over every class; ``squared_denominator`` and ``present_only`` as there) or
    ``'ce+dice'`` (their mean, nnU-Net's supervised weighting)."""
    if kind == "ce":
        return masked_cross_entropy(logits_strong, labels, mask)
    if kind == "dice":
        return masked_soft_dice(logits_strong, labels, mask, squared_denominator=squared_denominator,
                                present_only=present_only)
    if kind == "ce+dice":
        return 0.5 * (masked_cross_entropy(logits_strong, labels, mask) +
                      masked_soft_dice(logits_strong, labels, mask, squared_denominator=squared_denominator,
                                       present_only=present_only))
    raise ValueError(f"unknown unlabeled loss {kind!r}; expected 'ce', 'dice' or 'ce+dice'")


class SelfAdaptiveThreshold:
    """FreeMatch's self-adaptive thresholds (Wang et al., "FreeMatch: Self-adaptive Thresholding for Semi-supervised
    Learning", ICLR 2023, arXiv:2205.07246, Sec. 3.2), over voxels instead of images. Both estimates start at
    ``1 / C`` and follow exponential moving averages (momentum ``lambda``, FreeMatch's default 0.999) of each
    unlabeled batch's weak-view probabilities ``q_v`` (``V`` = every voxel of the batch, every DDP rank)::

        tau_t      = lambda tau_{t-1}      + (1 - lambda) 1/|V| sum_v max_c q_v,c     (global: the mean confidence)
        p_t(c)     = lambda p_{t-1}(c)     + (1 - lambda) 1/|V| sum_v q_v,c           (local: the mean class probability)
        tau_t(c)   = p_t(c) / max_c' p_t(c') * tau_t                                 (MaxNorm of the local estimate)
        m_v        = 1(max_c q_v,c >= tau_t(argmax_c q_v,c))

    With the class imbalance of segmentation (background holds most voxels), ``p_t`` of a structure is small, so its
    threshold stays far below the background's: the network's foreground pseudo-labels count while it is unsure of
    them, and background counts once it is confident. A fixed tau = 0.95 admitted no foreground voxel on ACDC with 3
    labeled patients (``benchmarks/results/acdc3-cpu``). FreeMatch's fairness term (its Sec. 3.3) is not used.

    The state (``tau_t``, ``p_t``, float64) is checkpointed through :meth:`state_dict` / :meth:`load_state_dict`. Under
    DDP, :meth:`batch_statistics` is summed over the ranks (one all-reduce) before :meth:`update`, so every rank holds
    the same thresholds."""

    def __init__(self, num_classes: int, momentum: float = 0.999):
        if num_classes < 2:
            raise ValueError(f"SelfAdaptiveThreshold needs at least 2 classes, got {num_classes}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"SelfAdaptiveThreshold: momentum must lie in [0, 1), got {momentum}")
        self.momentum = momentum
        self.global_threshold = torch.tensor(1.0 / num_classes, dtype=torch.float64)
        self.class_probability = torch.full((num_classes,), 1.0 / num_classes, dtype=torch.float64)

    @staticmethod
    @torch.no_grad()
    def batch_statistics(probabilities: torch.Tensor) -> torch.Tensor:
        """``[sum_v max_c q_v, sum_v q_v,0, ..., sum_v q_v,C-1, |V|]`` (float64) of probabilities ``(B, C, *spatial)``:
        sums, so that ranks add up by one all-reduce."""
        q = probabilities.detach().double()
        axes = [0] + list(range(2, q.ndim))
        count = q.new_tensor([q.numel() / q.shape[1]])
        return torch.cat((q.max(1)[0].sum().reshape(1), q.sum(axes), count))

    @torch.no_grad()
    def update(self, statistics: torch.Tensor) -> None:
        """One EMA step with the summed :meth:`batch_statistics` of a step (all ranks)."""
        statistics = statistics.detach().to("cpu", torch.float64)
        if statistics.numel() != self.class_probability.numel() + 2:
            raise ValueError(f"SelfAdaptiveThreshold: statistics of {statistics.numel() - 2} classes for a threshold "
                             f"of {self.class_probability.numel()}")
        count = statistics[-1]
        lam = self.momentum
        self.global_threshold = lam * self.global_threshold + (1 - lam) * statistics[0] / count
        self.class_probability = lam * self.class_probability + (1 - lam) * statistics[1:-1] / count

    def thresholds(self) -> torch.Tensor:
        """``tau_t(c)`` for every class, ``(C,)`` float64."""
        return self.class_probability / self.class_probability.max() * self.global_threshold

    def mask(self, labels: torch.Tensor, confidence: torch.Tensor) -> torch.Tensor:
        """``confidence >= tau_t(labels)`` voxel-wise (``labels``: argmax classes, ``confidence``: their probability)."""
        per_voxel = self.thresholds().to(confidence.device, torch.float32)[labels.long()]
        return confidence >= per_voxel

    def state_dict(self) -> dict:
        return {"global_threshold": self.global_threshold.clone(), "class_probability": self.class_probability.clone(),
                "momentum": self.momentum}

    def load_state_dict(self, state: dict) -> None:
        if state["class_probability"].numel() != self.class_probability.numel():
            raise ValueError(f"SelfAdaptiveThreshold: the checkpoint's thresholds cover "
                             f"{state['class_probability'].numel()} classes, this dataset has "
                             f"{self.class_probability.numel()}")
        self.global_threshold = state["global_threshold"].clone().double()
        self.class_probability = state["class_probability"].clone().double()
        self.momentum = float(state["momentum"])
