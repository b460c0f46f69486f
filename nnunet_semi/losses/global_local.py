"""Local (region) contrastive loss of the global+local pretraining of Chaitanya et al., NeurIPS 2020.

Chaitanya, Erdil, Karani, Konukoglu, "Contrastive learning of global and local features for medical image
segmentation with limited annotations", NeurIPS 2020, arXiv:2006.10511: reference [10] of Chaitanya et al.,
"Local contrastive loss with pseudo-label based self-training for semi-supervised medical image segmentation",
Medical Image Analysis 2023, arXiv:2112.09645 (Sec. II-1(b), V-D, Table III "PI."): the local
loss ``L_l`` compares the feature maps ``f~ = g_2(d_l(e(x~)))`` and ``f^ = g_2(d_l(e(x^)))`` of two views of the
same image that differ only in intensity (so that locations correspond). The feature map is split into local regions
``u`` of ``K x K`` (x K) cells; the region vector ``f(u)`` is the flattened block. A region of one view and the same
region of the other view are a positive pair; the other regions of the same image are negatives (the 2020 paper's
random strategy L^R)::

    l(f~(u), f^(u)) = -log exp(sim(f~(u), f^(u))/tau) / sum_{v in both views, v != f~(u)} exp(sim(f~(u), v)/tau)

which is the NT-Xent of :func:`nnunet_semi.losses.contrastive.info_nce` over the ``2 R`` region vectors of one
image (every region of either view an anchor in turn), averaged over the images of the batch. Regions are
non-overlapping and start at the feature map's origin; cells beyond the last whole region are left out.
"""
from typing import Sequence, Union

import torch

from nnunet_semi.losses.contrastive import info_nce


def region_vectors(features: torch.Tensor, region_size: Union[int, Sequence[int]] = 3) -> torch.Tensor:
    """``(B, R, C * prod(K))``: the non-overlapping ``K``-regions of ``(B, C, *spatial)`` features, flattened
    channel-first, in row-major region order. ``K`` larger than an axis is clipped to it."""
    spatial = features.shape[2:]
    k = [region_size] * len(spatial) if isinstance(region_size, int) else list(region_size)
    if len(k) != len(spatial) or any(v < 1 for v in k):
        raise ValueError(f"region size {k} must be positive with one entry per spatial axis ({len(spatial)})")
    k = [min(v, s) for v, s in zip(k, spatial)]
    n = [s // v for s, v in zip(spatial, k)]
    x = features[(slice(None), slice(None)) + tuple(slice(0, a * v) for a, v in zip(n, k))]
    b, c = x.shape[:2]
    shape = [b, c]
    for a, v in zip(n, k):
        shape += [a, v]
    x = x.reshape(shape)
    nd = len(spatial)
    region_axes = [2 + 2 * i for i in range(nd)]
    inner_axes = [3 + 2 * i for i in range(nd)]
    x = x.permute(0, *region_axes, 1, *inner_axes)
    return x.reshape(b, int(torch.tensor(n).prod()), -1)


def local_region_contrastive_loss(f_a: torch.Tensor, f_b: torch.Tensor, region_size: Union[int, Sequence[int]] = 3,
                                  temperature: float = 0.1) -> torch.Tensor:
    """``L_l`` (see the module docstring): mean over the images of NT-Xent over their region vectors.

    Args:
        f_a, f_b: ``(B, C, *spatial)`` feature maps of the two views (same geometry).
        region_size: ``K`` per axis (int or one per axis).
        temperature: ``tau`` (2020 paper: 0.1).
    """
    if f_a.shape != f_b.shape:
        raise ValueError(f"the two views' feature maps differ in shape: {tuple(f_a.shape)} vs {tuple(f_b.shape)}")
    r_a, r_b = region_vectors(f_a, region_size), region_vectors(f_b, region_size)
    if r_a.shape[1] < 2:
        raise ValueError(f"feature map {tuple(f_a.shape[2:])} holds {r_a.shape[1]} region(s) of size {region_size}: "
                         f"a local contrastive loss needs at least 2. Fix: a smaller region size or an earlier "
                         f"(higher-resolution) decoder stage")
    return torch.stack([info_nce(r_a[i], r_b[i], temperature) for i in range(r_a.shape[0])]).mean()
