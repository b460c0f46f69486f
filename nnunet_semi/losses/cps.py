"""Cross pseudo supervision (CPS).

Chen et al., "Semi-supervised semantic segmentation with cross pseudo supervision", CVPR 2021, arXiv:2106.01226, in
the form of eq. 5 of the CCM paper (Zhou, Gu, Zhang, Wang, "Self-supervised pre-training based on contrastive
complementary masking for semi-supervised cardiac image segmentation"): for an unlabeled image, the argmax
(one-hot) prediction of each network supervises the other network with the pixel-wise cross-entropy::

    L_c = 1 / (2 |D_u|) * sum_{X in D_u} ( l_ce(P_a, Y_b*) + l_ce(P_b, Y_a*) )          (eq. 5)

The Dice form (``kind='dice'``, the trainer's default) replaces each ``l_ce`` by the soft Dice loss of the network's
softmax against the other network's argmax over every voxel of the batch
(:func:`~nnunet_semi.losses.weak_strong.masked_soft_dice` with an all-true mask)::

    l_dice(P, Y*) = 1 - mean_{c in K} (2 sum_v p_vc y*_vc + s) / (sum_v p_vc + sum_v y*_vc + s),   s = 1e-5

with the sums over the whole batch and ``K`` every class, **background included** (default). nnU-Net's own soft
Dice (``MemoryEfficientSoftDiceLoss`` with ``do_bg=False``) leaves the background out: ``include_background=False``
gives that class set. The other differences to nnU-Net's supervised Dice remain: nnU-Net's is ``-mean dice``
rather than ``1 - mean dice`` (the same gradient), sums over the batch only when the plans set ``batch_dice`` (else
one Dice per sample) and then all-gathers the sums over DDP ranks; this loss always sums over the local batch.

Pseudo-labels carry no gradient: argmax is not differentiable (they are also computed under ``no_grad``), so the
gradient of ``l_a`` reaches network a only.
"""

import torch
import torch.nn.functional as F

from nnunet_semi.losses.weak_strong import masked_soft_dice


def cross_pseudo_supervision(logits_a: torch.Tensor, logits_b: torch.Tensor, reduction: str = "mean",
                             kind: str = "ce", include_background: bool = True, present_only: bool = False):
    """Eq. 5 of the CCM paper for a batch of logits ``(B, C, *spatial)`` from networks a and b.

    Returns ``(l_a, l_b)``: ``l_a = l_ce(P_a, argmax P_b)`` (the loss that trains network a) and
    ``l_b = l_ce(P_b, argmax P_a)``; eq. 5 is ``0.5 * (l_a + l_b)``. With ``reduction='mean'`` each term is
    the mean over all pixels of the batch (= the mean over images of the per-image mean, since all images of a
    batch have the same size); ``'none'`` returns the per-pixel maps ``(B, *spatial)``. ``kind='dice'``: the Dice
    form of the module docstring (``reduction='mean'`` only), over every class or, with
    ``include_background=False``, the foreground classes only; ``present_only=True`` keeps, of those, the classes
    that occur in the other network's argmax on the batch (a class the other network does not predict yet teaches
    nothing, instead of teaching its absence; :func:`~nnunet_semi.losses.weak_strong.masked_soft_dice`).
    """
    if logits_a.shape != logits_b.shape:
        raise ValueError(f"logits of the two networks differ in shape: {tuple(logits_a.shape)} vs "
                         f"{tuple(logits_b.shape)}")
    if logits_a.ndim < 3:
        raise ValueError(f"expected logits (B, C, *spatial), got shape {tuple(logits_a.shape)}")
    if kind not in ("ce", "dice"):
        raise ValueError(f"unknown cross pseudo supervision loss {kind!r}; expected 'ce' or 'dice'")
    if kind == "ce" and not include_background:
        raise ValueError("include_background=False (a CPS trainer's cps_dice_include_background) applies to the Dice "
                         "form of cross pseudo supervision only (kind='dice'); the CE form always counts every class. "
                         "Fix: keep include_background=True with cps_loss='ce'.")
    if kind == "ce" and present_only:
        raise ValueError("present_only=True (a CPS trainer's cps_dice_present_only) applies to the Dice form of cross "
                         "pseudo supervision only (kind='dice'). Fix: keep present_only=False with cps_loss='ce'.")
    with torch.no_grad():
        pseudo_a = logits_a.argmax(1)
        pseudo_b = logits_b.argmax(1)
    if kind == "dice":
        if reduction != "mean":
            raise ValueError("the Dice form of cross pseudo supervision is defined for the whole batch only "
                             f"(reduction='mean'), got reduction={reduction!r}")
        everywhere = torch.ones_like(pseudo_a, dtype=torch.bool)
        return (masked_soft_dice(logits_a, pseudo_b, everywhere, include_background=include_background,
                                 present_only=present_only),
                masked_soft_dice(logits_b, pseudo_a, everywhere, include_background=include_background,
                                 present_only=present_only))
    l_a = F.cross_entropy(logits_a, pseudo_b, reduction=reduction)
    l_b = F.cross_entropy(logits_b, pseudo_a, reduction=reduction)
    return l_a, l_b


@torch.no_grad()
def pseudo_label_agreement(logits_a: torch.Tensor, logits_b: torch.Tensor) -> torch.Tensor:
    """Fraction of pixels on which the argmax predictions of the two networks agree (a training curve)."""
    return (logits_a.argmax(1) == logits_b.argmax(1)).float().mean()


@torch.no_grad()
def foreground_agreement(logits_a: torch.Tensor, logits_b: torch.Tensor) -> torch.Tensor:
    """Dice between the two argmax maps' foreground (class > 0), ``2 |F_a & F_b| / (|F_a| + |F_b|)``, with
    ``F_k`` the voxels where ``argmax`` is a foreground class and ``&`` requiring the same class; 1 when neither
    predicts foreground. Unlike :func:`pseudo_label_agreement` it is not dominated by background."""
    a, b = logits_a.argmax(1), logits_b.argmax(1)
    fg_a, fg_b = a > 0, b > 0
    denominator = fg_a.sum() + fg_b.sum()
    if denominator == 0:
        return torch.ones((), device=logits_a.device)
    return 2.0 * (fg_a & (a == b)).sum().float() / denominator.float()
