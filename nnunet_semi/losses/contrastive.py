"""Contrastive loss of CCM pre-training: InfoNCE / NT-Xent as in SimCLR.

Eq. 2 of CCM (Zhou, Gu, Zhang, Wang, "Self-supervised pre-training based on contrastive complementary masking for
semi-supervised cardiac image segmentation", Sec. 2.1): ``Z_i^a`` and ``Z_i^b`` are the projector outputs of the two
networks for the complementary masked versions of image ``X_i``; they form a positive pair, and the other ``2(N - 1)``
features of the mini-batch are negatives::

    L_con = -log( exp(sim(Z_i^a, Z_i^b) / tau) / sum_{z in N, z != Z_i^a} exp(sim(Z_i^a, z) / tau) )     (eq. 2)

with ``sim`` the cosine similarity, ``N`` the set of the ``2N`` features of the mini-batch and ``tau = 0.07``
(Sec. 3.1, after SimCLR). As in SimCLR, every one of the ``2N`` features is an anchor in turn (``Z_i^b`` with
positive ``Z_i^a`` too) and the loss is the mean over the ``2N`` anchors. The denominator contains the positive.
"""
import warnings

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


def gather_candidates(features: torch.Tensor):
    """``(all_features, rank)``: the ``features`` of every rank concatenated in rank order (autograd-aware, the
    backward sums the gradients of all ranks into each rank's slot), or ``(features, 0)`` outside a
    multi-process group."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return features, 0
    from torch.distributed.nn.functional import all_gather

    with warnings.catch_warnings():  # deprecated in recent torch in favour of functional collectives; still exact
        warnings.filterwarnings("ignore", message=".*all_gather is deprecated.*", category=FutureWarning)
        gathered = all_gather(features)
    return torch.cat(gathered, 0), dist.get_rank()


def info_nce(z_a: torch.Tensor, z_b: torch.Tensor, temperature: float = 0.07,
             gather_distributed: bool = False) -> torch.Tensor:
    """Eq. 2 of the CCM paper (NT-Xent), averaged over the ``2N`` anchors of the batch.

    Args:
        z_a, z_b: ``(N, D)`` projector outputs of the two networks; row ``i`` of both comes from image ``i``.
            They need not be normalised (the similarity is the cosine). ``N = 1`` is accepted, but then each
            anchor's denominator holds only its positive and the loss is exactly 0 (no negatives, no signal).
        temperature: ``tau`` of eq. 2 (paper: 0.07).
        gather_distributed: if True and ``torch.distributed`` is initialised with world size > 1, the
            candidates (positives and negatives) are the features of all ranks, gathered with the autograd-aware
            ``torch.distributed.nn.functional.all_gather``; the anchors stay the local ``2N`` features and the
            value returned is the mean over them. Every rank must pass the same ``N`` and ``D``. Then the mean over
            ranks of the returned values equals the single-process loss of the concatenated global batch, and
            each rank's input gradient is ``world_size`` times the corresponding rows of the single-process
            gradient (the gather's backward sums all ranks' losses), so DDP's gradient averaging yields exactly
            the single-process parameter gradient.

    Returns:
        A scalar: ``mean over anchors k of [logsumexp_{j != k} s_kj / tau - s_k,pos(k) / tau]`` (computed with
        ``cross_entropy`` on logits whose self-similarity is masked to ``-inf``). Half-precision inputs are
        computed in float32.
    """
    if z_a.ndim != 2 or z_b.ndim != 2:
        raise ValueError(f"expected features of shape (N, D), got {tuple(z_a.shape)} and {tuple(z_b.shape)}")
    if z_a.shape != z_b.shape:
        raise ValueError(f"z_a and z_b differ in shape: {tuple(z_a.shape)} vs {tuple(z_b.shape)}")
    n, d = z_a.shape
    if n < 1 or d < 1:
        raise ValueError(f"need N >= 1 images and D >= 1 feature dims, got shape {tuple(z_a.shape)}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")

    local = torch.cat([z_a, z_b], 0)
    if local.dtype in (torch.float16, torch.bfloat16):
        local = local.float()
    local = F.normalize(local, dim=1)
    candidates, rank = gather_candidates(local) if gather_distributed else (local, 0)

    logits = local @ candidates.t() / temperature  # (2N, 2N * world_size)
    own = torch.arange(2 * n, device=local.device) + rank * 2 * n  # index of each anchor among the candidates
    logits = logits.masked_fill(F.one_hot(own, candidates.shape[0]).bool(), float("-inf"))
    positive = (torch.arange(2 * n, device=local.device) + n) % (2 * n) + rank * 2 * n
    return F.cross_entropy(logits, positive)


class InfoNCELoss(nn.Module):
    """Module form of :func:`info_nce` (eq. 2 of the CCM paper), holding ``temperature`` and ``gather_distributed``.

    Example::

        criterion = InfoNCELoss(temperature=0.07, gather_distributed=True)
        z_a = proj_a(enc_a(x * m_a))          # (N, D)
        z_b = proj_b(enc_b(x * m_b))          # (N, D)
        loss = criterion(z_a, z_b)
    """

    def __init__(self, temperature: float = 0.07, gather_distributed: bool = False):
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)
        self.gather_distributed = bool(gather_distributed)

    def forward(self, z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
        return info_nce(z_a, z_b, self.temperature, self.gather_distributed)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, gather_distributed={self.gather_distributed}"
