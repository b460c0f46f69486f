"""Dense local contrastive loss of IDEAL pre-training.

Basak et al., "IDEAL: Improved dense local contrastive learning for semi-supervised medical image segmentation",
ICASSP 2023, arXiv:2210.15075, Sec. 2.2. A query view ``x_q`` and a key view
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

The two views and their exact correspondence (which key location shows a query location):
:mod:`nnunet_semi.augmentation.crop_flip`.
"""
import math

import torch
import torch.nn.functional as F

from nnunet_semi.losses.contrastive import gather_candidates


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
