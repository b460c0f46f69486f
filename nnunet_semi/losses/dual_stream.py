"""Losses of the dual-stream contrastive method (Karimijafarbigloo, Azad, Velichko, Bagci, Merhof, "Leveraging
unlabeled data for 3D medical image segmentation through self-supervised contrastive learning", arXiv:2311.12617).

Two subnetworks A and B segment every image; on unlabeled images (superscript u)::

    L_u   = l_ce(f(x^u), y_hat^u) + Dice(f(x^u), y_hat^u) + L_reg   on reliable voxels        (eq. 2)
    L     = L_s + lambda_u L_u + lambda_c L_c                                                    (eq. 3)
    M_diff = argmax(max(Y_A^u) > T) != argmax(max(Y_B^u) > T)                                    (eq. 4)
    L_reg = sum |M_diff * Y_A^u - M_diff * Y_B^u|                                                (eq. 5)
    c_k   = 1/|S_k| sum_{(v^r_i, y_i) in S_k} f(v^r_i)                                           (eq. 6)
    p(y = k | v^u) = exp(-d(f(v^u), c_k)) / sum_k' exp(-d(f(v^u), c_k'))                         (eq. 7)

This module holds the pieces as pure tensor functions; CE + Dice itself is nnU-Net's ``DC_and_CE_loss`` (the
trainer passes it the pseudo-labels with the unreliable voxels set to an ignore value).

Ambiguities of the paper and how they are resolved here (each function repeats the part it implements):

* eq. 2, "pixel-level entropy-based filtering": no threshold is given. We follow U2PL's rule, which the wording
  mirrors: per batch, the ``unreliable_fraction`` (default 20 %) voxels of highest prediction entropy are
  unreliable, the others reliable (a percentile, so both sets are non-empty at every stage of training; a fixed
  entropy threshold would leave L_c without unreliable voxels once the networks are confident everywhere).
* eq. 4 written literally compares the argmax of two boolean maps; we read it as the prose says: both networks
  are confident (max softmax ``> T``) and their argmax classes differ.
* eq. 5 is a plain sum, whose size grows with the patch volume (~10^4 for a 112x112x80 patch with 1 % of voxels
  in M_diff) although it is weighted like the CE + Dice terms (lambda_u = 1). Default: the mean over the M_diff
  voxels of the per-voxel L1 distance (sum over classes); ``reduction='sum'`` is eq. 5 verbatim.
* T "is adjusted dynamically during training" without a schedule:
  :func:`nnunet_semi.schedules.confidence_threshold` rises linearly from ``start`` to ``end`` (defaults 0.6 -> 0.9)
  over training. Rationale: networks grow (over)confident as they train, so a rising threshold keeps M_diff
  restricted to *highly* confident disagreements.
* eq. 6-7 do not say which feature map f is, nor how d is defined, whether prototypes carry gradients, or how
  "prototypes are pushed apart" is written. Here: f = the subnetwork's voxel features (the trainer uses the last
  decoder stage), L2-normalised over channels; d = squared Euclidean distance; the pull term is the cross-entropy
  of eq. 7 at the voxel's pseudo-label with the prototypes detached (the unreliable voxels move, not the
  prototypes); the push term is the mean over prototype pairs of ``exp(-d(c_k, c_k'))`` (the kernel of eq. 7,
  bounded, so it cannot be won by scaling features) with gradients through the prototypes.
* lambda_c = 0.1 * e^{4 (1 - t / t_max)^2} as printed *decreases* from 0.1 e^4 = 5.46 to 0.1; the usual
  ramp-up of consistency weights is ``e^{-5 (1 - t/t_max)^2}`` (rising).
  :func:`nnunet_semi.schedules.contrastive_weight` implements the printed formula with the exponent factor as a
  knob: ``exponent=-4`` gives the rising reading (0.0018 -> 0.1).

The authors' public code (xmindflow/SSL-contrastive) differs from the paper in several places (a fixed T = 0.6,
M_diff on labeled images, the contrastive term computed without gradient); we implement the paper.
"""
import math
from typing import Sequence, Tuple

import torch
import torch.nn.functional as F


def _check_probs_pair(probs_a: torch.Tensor, probs_b: torch.Tensor) -> None:
    if probs_a.shape != probs_b.shape:
        raise ValueError(f"probabilities of the two subnetworks differ in shape: {tuple(probs_a.shape)} vs "
                         f"{tuple(probs_b.shape)}")
    if probs_a.ndim < 3:
        raise ValueError(f"expected probabilities (B, C, *spatial), got shape {tuple(probs_a.shape)}")


# ---------------------------------------------------------------------------------------------- pseudo-labels (eq. 2)
def pseudo_label_source(supervised_losses: Sequence[float]) -> int:
    """Index of the subnetwork whose pseudo-labels are used (Fig. 1): the one with the lower supervised loss L_s
    (eq. 1) in this step; ties go to the first subnetwork."""
    values = [float(v) for v in supervised_losses]
    if not values:
        raise ValueError("need at least one supervised loss")
    return min(range(len(values)), key=lambda i: values[i])


def normalized_entropy(probs: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Per-voxel entropy ``-sum_k p_k log p_k / log C`` of probabilities ``(B, C, *spatial)``, in [0, 1]."""
    if probs.ndim < 2 or probs.shape[1] < 2:
        raise ValueError(f"expected probabilities (B, C >= 2, ...), got shape {tuple(probs.shape)}")
    p = probs.float()
    return -(p * torch.log(p.clamp_min(eps))).sum(1) / math.log(probs.shape[1])


@torch.no_grad()
def reliable_mask(probs: torch.Tensor, unreliable_fraction: float = 0.2) -> torch.Tensor:
    """Entropy filter of eq. 2: ``True`` where the pseudo-label of a voxel is reliable.

    Over the whole batch, the ``floor(unreliable_fraction * N)`` voxels of highest (normalised) entropy are
    unreliable: with ``n_r = N - floor(unreliable_fraction * N)`` and ``h*`` the ``n_r``-th smallest entropy, a
    voxel is reliable iff its entropy is ``<= h*`` (voxels tied with ``h*`` count as reliable, so at least ``n_r``
    voxels are). The paper gives no threshold; this is U2PL's percentile rule (see the module docstring).

    Args:
        probs: softmax output ``(B, C, *spatial)`` of the pseudo-label source.
        unreliable_fraction: in [0, 1); 0 marks every voxel reliable.
    Returns:
        bool ``(B, *spatial)``.
    """
    if not 0.0 <= unreliable_fraction < 1.0:
        raise ValueError(f"unreliable_fraction must be in [0, 1), got {unreliable_fraction}")
    entropy = normalized_entropy(probs)
    n = entropy.numel()
    n_reliable = n - int(math.floor(unreliable_fraction * n))
    if n_reliable >= n:
        return torch.ones_like(entropy, dtype=torch.bool)
    threshold = entropy.flatten().kthvalue(n_reliable).values  # kthvalue: no input-size limit (unlike quantile)
    return entropy <= threshold


# ------------------------------------------------------------------------------------ consistency regularisation
def confident_disagreement_mask(probs_a: torch.Tensor, probs_b: torch.Tensor, threshold: float) -> torch.Tensor:
    """M_diff of eq. 4: voxels where both subnetworks are confident (max softmax ``> threshold``) and their
    argmax classes differ. Probabilities ``(B, C, *spatial)``; returns bool ``(B, *spatial)`` (no gradient)."""
    _check_probs_pair(probs_a, probs_b)
    with torch.no_grad():
        conf_a, cls_a = probs_a.max(1)
        conf_b, cls_b = probs_b.max(1)
        return (conf_a > threshold) & (conf_b > threshold) & (cls_a != cls_b)


def disagreement_l1_loss(probs_a: torch.Tensor, probs_b: torch.Tensor, mask: torch.Tensor,
                         reduction: str = "masked_mean") -> torch.Tensor:
    """L_reg of eq. 5: ``|M_diff * Y_A - M_diff * Y_B|``, the L1 distance over classes, on the voxels of ``mask``.

    Gradients reach both subnetworks (each is pulled towards the other on M_diff).

    Args:
        probs_a, probs_b: softmax outputs ``(B, C, *spatial)``.
        mask: bool ``(B, *spatial)``, usually :func:`confident_disagreement_mask`.
        reduction: ``'masked_mean'`` (default): sum over classes, mean over the voxels of ``mask`` (0 if empty);
            ``'mean'``: sum over classes, mean over all voxels; ``'sum'``: eq. 5 verbatim.
    """
    _check_probs_pair(probs_a, probs_b)
    if mask.shape != probs_a.shape[:1] + probs_a.shape[2:]:
        raise ValueError(f"mask shape {tuple(mask.shape)} does not match probabilities {tuple(probs_a.shape)}")
    per_voxel = ((probs_a - probs_b).abs().sum(1)) * mask.to(probs_a.dtype)
    if reduction == "sum":
        return per_voxel.sum()
    if reduction == "mean":
        return per_voxel.mean()
    if reduction == "masked_mean":
        return per_voxel.sum() / mask.sum().clamp_min(1)
    raise ValueError(f"reduction must be 'masked_mean', 'mean' or 'sum', got {reduction!r}")


# ---------------------------------------------------------------------------------------- prototypes (eq. 6-7)
def _voxels(features: torch.Tensor) -> torch.Tensor:
    """``(B, D, *spatial)`` -> ``(N, D)`` with N = B * prod(spatial), in the order of ``labels.flatten()``."""
    return features.movedim(1, -1).reshape(-1, features.shape[1])


def class_prototypes(features: torch.Tensor, labels: torch.Tensor, reliable: torch.Tensor, num_classes: int
                     ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Eq. 6: ``c_k`` = mean feature of the reliable voxels whose (pseudo-)label is ``k``.

    Args:
        features: ``(B, D, *spatial)`` voxel features ``f(v)``.
        labels: integer ``(B, *spatial)`` in ``[0, num_classes)``.
        reliable: bool ``(B, *spatial)``.
    Returns:
        ``(prototypes (K, D), present (K,) bool)``; a class without reliable voxels has ``present = False`` and a
        zero row. Differentiable w.r.t. ``features``.
    """
    if features.shape[:1] + features.shape[2:] != labels.shape or labels.shape != reliable.shape:
        raise ValueError(f"features {tuple(features.shape)}, labels {tuple(labels.shape)} and reliable mask "
                         f"{tuple(reliable.shape)} do not match")
    f = _voxels(features)[reliable.flatten()]
    labels_r = labels.flatten()[reliable.flatten()]
    # per-class sums, not a one-hot matrix product: MKL's GEMM result depends on the number of threads it picks
    # (dynamically, with the machine's load), which would break bit-identical resumes on CPU
    members = [labels_r == k for k in range(num_classes)]
    sums = torch.stack([f[m].sum(0) for m in members])
    counts = torch.stack([m.sum() for m in members]).to(f.dtype)
    return sums / counts.clamp_min(1)[:, None], counts > 0


def squared_distances(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """``d(x_i, c_k) = ||x_i - c_k||^2`` for ``x (N, D)`` and ``c (K, D)`` -> ``(N, K)``, one class at a time (no
    N x K x D intermediate, no thread-count-dependent GEMM)."""
    return torch.stack([((x - ck) ** 2).sum(1) for ck in c], 1)


def prototype_log_probs(features: torch.Tensor, prototypes: torch.Tensor, present: torch.Tensor,
                        temperature: float = 1.0) -> torch.Tensor:
    """Eq. 7: ``log p(y = k | v) = log softmax_k(-d(f(v), c_k) / temperature)`` over the present prototypes.

    ``features (N, D)``; returns ``(N, K)`` with ``-inf`` for absent classes. ``temperature = 1`` is eq. 7.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    logits = -squared_distances(features, prototypes) / temperature
    logits = logits.masked_fill(~present[None], float("-inf"))
    return torch.log_softmax(logits, 1)


def prototype_separation(prototypes: torch.Tensor, present: torch.Tensor, temperature: float = 1.0
                         ) -> torch.Tensor:
    """Push-apart term: mean over pairs ``k < k'`` of present prototypes of ``exp(-d(c_k, c_k') / temperature)``;
    0 with fewer than two prototypes."""
    c = prototypes[present]
    if c.shape[0] < 2:
        return prototypes.sum() * 0.0
    i, j = torch.triu_indices(c.shape[0], c.shape[0], offset=1, device=c.device)
    d = ((c[i] - c[j]) ** 2).sum(1)
    return torch.exp(-d / temperature).mean()


def prototype_loss(features: torch.Tensor, pseudo_labels: torch.Tensor, reliable: torch.Tensor,
                   num_classes: int, temperature: float = 1.0, separation_weight: float = 1.0,
                   normalize: bool = True) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """L_c of Sec. 2.3 (eq. 6-7): unreliable voxels are pulled towards the prototype of their pseudo-label class,
    prototypes are pushed apart.

    ``L_c = pull + separation_weight * push`` with

    * ``pull = mean over unreliable voxels v (whose class has a prototype) of -log p(y = y_hat(v) | v)`` (eq. 7),
      prototypes from the reliable voxels (eq. 6), detached;
    * ``push = mean_{k < k'} exp(-d(c_k, c_k') / temperature)`` with gradients through the prototypes.

    Args:
        features: ``(B, D, *spatial)`` voxel features.
        pseudo_labels: integer ``(B, *spatial)``, the pseudo-labels (for every voxel, reliable or not).
        reliable: bool ``(B, *spatial)`` from :func:`reliable_mask`.
        num_classes: ``K`` (background included).
        temperature: divides the distances in eq. 7 and the push term (paper: none, i.e. 1).
        separation_weight: weight of the push term.
        normalize: L2-normalise the features over channels first (default; distances then lie in [0, 4]).
    Returns:
        ``(L_c, pull, push)``, scalars; zero (still attached to ``features``) where a term has nothing to act on.
        Half-precision features are computed in float32.
    """
    if separation_weight < 0:
        raise ValueError(f"separation_weight must be >= 0, got {separation_weight}")
    features = features.float()
    if normalize:
        features = F.normalize(features, dim=1)
    prototypes, present = class_prototypes(features, pseudo_labels, reliable, num_classes)
    unreliable = ~reliable.flatten()
    labels_u = pseudo_labels.flatten()[unreliable].long()
    keep = present[labels_u]
    f_u = _voxels(features)[unreliable][keep]
    labels_u = labels_u[keep]
    if f_u.shape[0] > 0:
        log_p = prototype_log_probs(f_u, prototypes.detach(), present, temperature)
        pull = F.nll_loss(log_p, labels_u)
    else:
        pull = features.sum() * 0.0
    push = prototype_separation(prototypes, present, temperature)
    return pull + separation_weight * push, pull, push
