"""Losses of MMGL (Zhao et al., "MMGL: Multi-scale multi-view global-local contrastive learning for semi-supervised
cardiac image segmentation", ICIP 2022, arXiv:2207.01883; Sec. 3.1-3.2).

* :func:`multi_scale_global_loss` -- eq. L_g^M = sum_e lambda_g^e L_g^e (Sec. 3.1), where L_g^e is the NT-Xent loss
  of SimCLR on the projections ``z = h_e(E_e(x))`` of two augmentations of each image at encoder stage ``e``
  (:func:`~nnunet_semi.losses.contrastive.info_nce`). The paper's printed denominator runs over ``k in I - {j}``
  (it would drop the positive and keep the constant self-similarity ``exp(1/tau)``); we read it as SimCLR's
  ``k != i`` [14], which the paper cites for this loss.
* :func:`local_supervised_contrastive_loss` -- L_f and L_l^d of Sec. 3.2, exactly as printed::

      L_f(x) = -1/|Omega| sum_{i in Omega} 1/|P(i)| log( sum_{p in P(i)} exp(f_i . f_p / tau)
                                                         / sum_{n in N(i)} exp(f_i . f_n / tau) )
      L_l^d  = 1/|A| sum_{a_j in A} L_f(a_j)

  within each image: ``P(i)`` = the other points of the (sub-sampled) feature map with the label of ``i``, ``N(i)``
  = the points with another label. Features are L2-normalised (so ``f_i . f_p`` is the cosine, as in the
  supervised contrastive loss of Hu et al. [17] that the paper takes it from). Points with a negative label
  (nnU-Net's padding / outside-mask value -1) take no part; ``Omega`` holds the points with at least one positive
  and one negative, and an image without such a point contributes 0 (it still counts in ``|A|``).
* :func:`multi_scale_local_loss` -- L_l^M = sum_d lambda_l^d L_l^d.

tau = 0.07 for both (Sec. 4.1).
"""
from typing import Sequence

import torch
import torch.nn.functional as F

from nnunet_semi.losses.contrastive import info_nce

#: Sec. 4.1: lambda_g^e and lambda_l^d on the last three encoder / decoder stages, in network order (the deepest
#: encoder stage and the full-resolution decoder stage get 0.6; pretraining.mmgl.scale_stages)
PAPER_SCALE_WEIGHTS = (0.2, 0.2, 0.6)
PAPER_TEMPERATURE = 0.07
#: "The extracted feature maps were downsampled with fixed stride 4"
PAPER_LOCAL_STRIDE = 4


def _check_weights(weights: Sequence[float], n: int) -> None:
    if len(weights) != n:
        raise ValueError(f"need one weight per scale: {len(weights)} weights for {n} scales")
    if any(w < 0 for w in weights) or not any(w > 0 for w in weights):
        raise ValueError(f"scale weights must be >= 0 with at least one > 0, got {list(weights)}")


def multi_scale_global_loss(z_1: Sequence[torch.Tensor], z_2: Sequence[torch.Tensor], weights: Sequence[float],
                            temperature: float = PAPER_TEMPERATURE, gather_distributed: bool = False):
    """``sum_e weights[e] * NT-Xent(z_1[e], z_2[e])``; ``z_k[e]``: ``(B, D)`` projections of augmentation ``k`` at
    scale ``e``. Returns ``(total, [L_g^e per scale])``."""
    if len(z_1) != len(z_2):
        raise ValueError(f"{len(z_1)} and {len(z_2)} scales for the two augmentations")
    _check_weights(weights, len(z_1))
    per_scale = [info_nce(a, b, temperature, gather_distributed) for a, b in zip(z_1, z_2)]
    return sum(w * l for w, l in zip(weights, per_scale)), per_scale


def local_supervised_contrastive_loss(features: torch.Tensor, labels: torch.Tensor,
                                      temperature: float = PAPER_TEMPERATURE) -> torch.Tensor:
    """L_l^d of Sec. 3.2 for one scale: mean over the ``B`` images of L_f.

    Args:
        features: ``(B, D, *spatial)`` projected features (already sub-sampled); normalised here.
        labels: ``(B, *spatial)`` or ``(B, 1, *spatial)`` integer labels at the same resolution; < 0 = ignored.
    """
    if labels.ndim == features.ndim:
        labels = labels[:, 0]
    if labels.shape[0] != features.shape[0] or labels.shape[1:] != features.shape[2:]:
        raise ValueError(f"labels {tuple(labels.shape)} do not match features {tuple(features.shape)}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if features.dtype in (torch.float16, torch.bfloat16):
        features = features.float()
    f = F.normalize(features.flatten(2), dim=1)  # (B, D, n)
    y = labels.flatten(1).long()  # (B, n)
    sim = f.transpose(1, 2) @ f / temperature  # (B, n, n)
    valid = y >= 0
    pair = valid[:, :, None] & valid[:, None, :]
    same = (y[:, :, None] == y[:, None, :]) & pair
    eye = torch.eye(y.shape[1], dtype=torch.bool, device=y.device)[None]
    positive, negative = same & ~eye, pair & ~same
    n_pos = positive.sum(2)
    anchor = valid & (n_pos > 0) & negative.any(2)  # Omega
    very_negative = -1e4  # finite stand-in for log(0): keeps gradients finite for rows without members
    lse_pos = torch.logsumexp(sim.masked_fill(~positive, very_negative), 2)
    lse_neg = torch.logsumexp(sim.masked_fill(~negative, very_negative), 2)
    per_point = (lse_neg - lse_pos) / n_pos.clamp(min=1)  # -1/|P(i)| log(sum_P / sum_N)
    per_point = torch.where(anchor, per_point, torch.zeros_like(per_point))
    per_image = per_point.sum(1) / anchor.sum(1).clamp(min=1)
    return per_image.mean()


def multi_scale_local_loss(features: Sequence[torch.Tensor], labels: Sequence[torch.Tensor],
                           weights: Sequence[float], temperature: float = PAPER_TEMPERATURE):
    """``sum_d weights[d] * L_l^d``; returns ``(total, [L_l^d per scale])``."""
    if len(features) != len(labels):
        raise ValueError(f"{len(features)} feature maps but {len(labels)} label maps")
    _check_weights(weights, len(features))
    per_scale = [local_supervised_contrastive_loss(f, y, temperature) for f, y in zip(features, labels)]
    return sum(w * l for w, l in zip(weights, per_scale)), per_scale


def subsample_with_labels(feature: torch.Tensor, segmentation: torch.Tensor, stride: int = PAPER_LOCAL_STRIDE):
    """The feature map sub-sampled with ``stride`` and the segmentation ``(B, 1, *patch)`` brought to the feature
    map's resolution (nearest) and sub-sampled the same way: ``(feature[..., ::s, ::s], labels[..., ::s, ::s])``."""
    labels = F.interpolate(segmentation.float(), size=feature.shape[2:], mode="nearest-exact").long()
    index = (slice(None), slice(None)) + (slice(None, None, stride),) * (feature.ndim - 2)
    return feature[index], labels[index]
