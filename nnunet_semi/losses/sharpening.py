"""Pseudo-label sharpening and the mutual consistency of MC-Net.

Wu, Xu, Ge, Cai, Zhang, "Semi-supervised left atrium segmentation with mutual consistency training", MICCAI 2021,
Sec. 2 (eq. 1-3). The probability map of one decoder is sharpened into a soft pseudo-label with temperature ``T``::

    sPL = P^{1/T} / (P^{1/T} + (1 - P)^{1/T})                    (eq. 1; T = 0.1)

and each decoder's probability map is pulled towards the other decoder's sharpened pseudo-label::

    L_c = D(P_A, sPL_B) + D(P_B, sPL_A),   D = mean squared error (eq. 2)

Multi-class: the formula is applied to every channel of the softmax output independently, as MC-Net's released
code does (its ``sharpening`` acts on the whole softmax tensor); the result is then no longer a distribution over
classes (for two classes it is: ``P_0 = 1 - P_1`` gives ``sPL_0 = 1 - sPL_1``). ``renormalise=True`` divides by
the sum over classes instead.

Equation numbers follow our reading of the published paper (cited above); the equations are written out in full here
so that they can be checked against it.
"""
from typing import Tuple

import torch


def sharpen(probs: torch.Tensor, temperature: float = 0.1, renormalise: bool = False) -> torch.Tensor:
    """Eq. 1 of MC-Net per channel of ``probs`` ``(B, C, *spatial)`` (probabilities in [0, 1]); computed in
    float32. ``renormalise`` rescales the sharpened channels to sum to 1 over axis 1."""
    if not temperature > 0:
        raise ValueError(f"sharpening temperature must be > 0, got {temperature}")
    p = probs.float()
    power = 1.0 / temperature
    num = p ** power
    sharpened = num / (num + (1.0 - p) ** power)
    if renormalise:
        sharpened = sharpened / sharpened.sum(1, keepdim=True)
    return sharpened


def mutual_consistency(probs_a: torch.Tensor, probs_b: torch.Tensor, temperature: float = 0.1,
                       detach_pseudo_labels: bool = True, renormalise: bool = False
                       ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Eq. 2 of MC-Net for the softmax outputs of decoders A and B ``(B, C, *spatial)``.

    Returns ``(l_a, l_b)`` with ``l_a = mean((P_A - sPL_B)^2)`` (trains decoder A) and
    ``l_b = mean((P_B - sPL_A)^2)``; the means run over all voxels and classes (``L_c = l_a + l_b``). The
    pseudo-labels are targets without gradient by default; ``detach_pseudo_labels=False`` lets gradients flow
    through them too (what MC-Net's released code does)."""
    if probs_a.shape != probs_b.shape:
        raise ValueError(f"decoder outputs differ in shape: {tuple(probs_a.shape)} vs {tuple(probs_b.shape)}")
    spl_a = sharpen(probs_a, temperature, renormalise)
    spl_b = sharpen(probs_b, temperature, renormalise)
    if detach_pseudo_labels:
        spl_a, spl_b = spl_a.detach(), spl_b.detach()
    return ((probs_a.float() - spl_b) ** 2).mean(), ((probs_b.float() - spl_a) ** 2).mean()
