"""Label-based local (pixel-wise) contrastive loss of Chaitanya et al. 2023, eq. 3-4.

Chaitanya, Erdil, Karani, Konukoglu, "Local contrastive loss with pseudo-label based self-training for
semi-supervised medical image segmentation", Medical Image Analysis 2023, arXiv:2112.09645, Sec. III.
``z = h_phi(c_theta(x))`` are the dense features of an image
``x`` (``D`` channels, the resolution of the input) and ``y`` its label map (a true label or a pseudo-label). For two
samples ``(x, y)`` and ``(x', y')``::

    L_cont((x,y),(x',y')) = 1/C sum_c 1/|S~_c(x)| sum_{i in S~_c(x)} L_ic([z(x)]_i, zbar_c(x'))            (eq. 3)
    L_ic(a, zbar_c)       = -log  exp(sim(a, zbar_c)/tau) / (exp(sim(a, zbar_c)/tau) + sum_{k != c}
                                                              exp(sim(a, zbar_k)/tau))                      (eq. 4)

with ``zbar_c(x')`` the mean feature of the pixels of class ``c`` in ``x'``, ``sim`` the cosine similarity,
``S~_c(x)`` a random subset of ``|S~_c|`` (paper: 3) pixels of class ``c`` in ``x`` and ``tau = 0.1``.

Reading of what the paper leaves implicit (documented, switchable where it matters):

* eq. 4 prints the softmax probability; the loss minimised is its negative logarithm (as in [10], the InfoNCE form);
* anchors ``c`` are the foreground classes (eq. 3: ``1 <= c <= C``); the negatives ``k != c`` are all other classes
  present in ``x'``, background included (``background_negative=False`` leaves the background out);
* a term exists only where it is defined: anchor classes present in ``x`` with their class present in ``x'``;
  negative classes absent from ``x'`` drop out of the denominator; ``1/C`` averages over the defined classes;
* the class means use every pixel of the class (``S_c(x')``, cheap); only the anchors are subsampled (Sec. III);
* intra-image matching (``mode="intra"``): the pairs ``(x, x)``; inter-image matching (``mode="inter"``): every
  pair ``(x, x')`` of the batch, ``x' = x`` included ("computed from within the same image as well as from
  different images in the batch"). The loss is the mean of eq. 3 over the pairs (eq. 2's ``1/|X| sum``).

Pixels labelled :data:`IGNORE` (``-1``) belong to no class: they are neither anchors nor in any mean.
"""
from typing import Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F

from nnunet_semi.losses.contrastive import gather_candidates

IGNORE = -1
MODES = ("intra", "inter")
#: logit given to absent classes: exp(-1e4 + 10) underflows to exactly 0 in float32 and float64
_ABSENT = -1.0e4


def sample_anchor_pixels(labels: torch.Tensor, num_classes: int, pixels_per_class: int = 3,
                         foreground_only: bool = True) -> torch.Tensor:
    """``S~_c(x)``: per image and class, ``pixels_per_class`` pixels drawn uniformly without replacement (all of
    them where the class has fewer), from torch's global random stream.

    Args:
        labels: ``(B, *spatial)`` integer labels, :data:`IGNORE` for excluded pixels.
    Returns:
        ``(M, 3)`` long tensor of rows ``(image, class, flat pixel index)``, ordered by image then class.
    """
    if pixels_per_class < 1:
        raise ValueError(f"pixels_per_class must be >= 1, got {pixels_per_class}")
    flat = labels.reshape(labels.shape[0], -1)
    rows = []
    for b in range(flat.shape[0]):
        for c in range(1 if foreground_only else 0, num_classes):
            where = torch.nonzero(flat[b] == c).squeeze(1)
            if where.numel() == 0:
                continue
            pick = where[torch.randperm(where.numel(), device=where.device)[:pixels_per_class]]
            rows.append(torch.stack([torch.full_like(pick, b), torch.full_like(pick, c), pick], 1))
    if not rows:
        return torch.zeros((0, 3), dtype=torch.long, device=labels.device)
    return torch.cat(rows).long()


def class_means(z: torch.Tensor, labels: torch.Tensor, num_classes: int):
    """``(means (B, K, D), present (B, K))``: ``zbar_k(x)`` of every image and class, and whether it exists."""
    zf = z.reshape(z.shape[0], z.shape[1], -1)
    flat = labels.reshape(labels.shape[0], -1).long()
    one_hot = F.one_hot(flat.clamp(min=0), num_classes).to(zf.dtype) * (flat >= 0)[..., None].to(zf.dtype)
    counts = one_hot.sum(1)  # (B, K)
    sums = torch.einsum("bnk,bdn->bkd", one_hot, zf)
    return sums / counts.clamp(min=1)[..., None], counts > 0


def _gather_means(means: torch.Tensor, present: torch.Tensor):
    """Class means of every rank (autograd-aware; ranks may hold different batch sizes: padded to the largest,
    padded rows have no class present). Returns ``(means, present, index of the first local image)``."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return means, present, 0
    b, k, d = means.shape
    size = torch.tensor([b], device=means.device)
    dist.all_reduce(size, op=dist.ReduceOp.MAX)
    pad = int(size.item()) - b
    if pad:
        means = torch.cat([means, means.new_zeros(pad, k, d)])
        present = torch.cat([present, present.new_zeros(pad, k)])
    all_means, rank = gather_candidates(means.reshape(b + pad, k * d))
    all_present, _ = gather_candidates(present.to(means.dtype))
    return all_means.reshape(-1, k, d), all_present > 0.5, rank * (b + pad)


def local_contrastive_loss(z: torch.Tensor, labels: torch.Tensor, num_classes: int,
                           anchors: Optional[torch.Tensor] = None, pixels_per_class: int = 3,
                           temperature: float = 0.1, mode: str = "inter", background_negative: bool = True,
                           gather_distributed: bool = False) -> torch.Tensor:
    """Eq. 3-4 averaged over the pairs of the batch (see the module docstring).

    Args:
        z: ``(B, D, *spatial)`` features (2D or 3D), e.g. ``h_phi`` of the last decoder stage.
        labels: ``(B, *spatial)`` integer labels / pseudo-labels in ``[0, num_classes)``, or :data:`IGNORE`.
        num_classes: ``K``, background included.
        anchors: ``(M, 3)`` rows ``(image, class, flat index)``; default :func:`sample_anchor_pixels`.
        pixels_per_class: ``|S~_c(x)|`` (paper: 3), used when ``anchors`` is None.
        temperature: ``tau`` (paper: 0.1).
        mode: ``"intra"`` or ``"inter"`` image matching (Sec. III).
        background_negative: whether the background mean is a negative of eq. 4.
        gather_distributed: inter mode under ``torch.distributed``: the candidates ``x'`` are the images of all
            ranks (their class means gathered with the autograd-aware all-gather), the anchors stay local; each
            rank returns the mean over its own anchor images' pairs.
    Returns:
        A scalar (float32 or wider); exactly 0 (still attached to ``z``) when no term is defined.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got '{mode}'")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if z.ndim < 3 or labels.shape != (z.shape[0],) + tuple(z.shape[2:]):
        raise ValueError(f"expected z (B, D, *spatial) and labels (B, *spatial), got {tuple(z.shape)} and "
                         f"{tuple(labels.shape)}")
    if anchors is None:
        anchors = sample_anchor_pixels(labels, num_classes, pixels_per_class)
    if z.dtype in (torch.float16, torch.bfloat16):
        z = z.float()
    zero = z.sum() * 0.0
    means, present = class_means(z, labels, num_classes)
    if not background_negative:
        present = present.clone()
        present[:, 0] = False
    n_local = z.shape[0]
    own = torch.arange(n_local, device=z.device)
    if mode == "inter" and gather_distributed:
        means, present, first = _gather_means(means, present)
        own = own + first
    if anchors.shape[0] == 0:
        return zero
    img, cls, pix = anchors[:, 0], anchors[:, 1], anchors[:, 2]
    zf = z.reshape(z.shape[0], z.shape[1], -1)
    a = F.normalize(zf[img, :, pix], dim=1)  # (M, D) anchor features [z(x)]_i
    logits = torch.einsum("md,pkd->mpk", a, F.normalize(means, dim=-1)) / temperature  # (M, P, K)
    logits = logits.masked_fill(~present[None], _ABSENT)
    per_pair = torch.logsumexp(logits, -1) - logits.gather(
        2, cls[:, None, None].expand(-1, logits.shape[1], 1)).squeeze(2)  # -log eq. 4, (M, P)

    # which (anchor, x') terms exist: the anchor's class is present in x' (and x' = x in intra mode)
    valid = present[:, cls].t()  # (M, P)
    if mode == "intra":
        valid = valid & (torch.arange(means.shape[0], device=z.device)[None] == own[img][:, None])
    # eq. 3 weights: 1/|S~_c(x)| per anchor, 1/C over the classes defined for the pair (x, x'), mean over pairs
    group = img * num_classes + cls
    n_anchor = torch.bincount(group, minlength=n_local * num_classes)[group].to(logits.dtype)  # (M,)
    has_anchor = torch.zeros(n_local, num_classes, dtype=torch.bool, device=z.device)
    has_anchor[img, cls] = True
    pair_classes = (has_anchor[:, None, :] & present[None]).sum(-1)  # (B_local, P): classes defined per pair
    if mode == "intra":
        pair_classes = pair_classes * (torch.arange(means.shape[0], device=z.device)[None] == own[:, None])
    n_pairs = (pair_classes > 0).sum()
    if n_pairs == 0:
        return zero
    weights = valid.to(logits.dtype) / n_anchor[:, None] / pair_classes[img].clamp(min=1).to(logits.dtype)
    return (weights * per_pair).sum() / n_pairs
