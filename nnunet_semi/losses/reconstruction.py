"""Reconstruction loss of CCM pre-training.

Eq. 1 of CCM (Zhou, Gu, Zhang, Wang, "Self-supervised pre-training based on contrastive complementary masking for
semi-supervised cardiac image segmentation", Sec. 2.1): each network reconstructs the whole image ``X_i`` from its
complementary masked version, ``X^_i^a = g_a(f_a(M^a X_i))`` and ``X^_i^b = g_b(f_b(M^b X_i))``::

    L_rec = 1 / (2N) * sum_{i=1}^N ( ||X_i - X^_i^a||_2^2 + ||X_i - X^_i^b||_2^2 )               (eq. 1)

The error is taken over the whole image (visible and masked voxels alike), as eq. 1 is written.
"""
import torch

_REDUCTIONS = ("mean", "sum_per_image")


def masked_pair_reconstruction_loss(x: torch.Tensor, rec_a: torch.Tensor, rec_b: torch.Tensor,
                                    reduction: str = "mean") -> torch.Tensor:
    """Eq. 1 of the CCM paper for images ``x`` and the two reconstructions, all ``(B, C, *spatial)`` (2D or 3D).

    ``reduction``:
        * ``'mean'`` (default): the per-image squared norm is divided by the number of elements per image
          (``C * prod(spatial)``), i.e. the "Mean Square Error loss" of the paper's text; the result is
          ``0.5 * (mse(x, rec_a) + mse(x, rec_b))``. Default because the literal sum grows with the patch size
          and would swamp ``lambda * L_con`` with ``lambda = 1`` (eq. 3, Sec. 3.1) on nnU-Net patches.
        * ``'sum_per_image'``: the literal eq. 1, squared L2 norm summed over all voxels and channels of each
          image, averaged over the ``N`` images and the two reconstructions.
    """
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if x.ndim < 3:
        raise ValueError(f"expected images (B, C, *spatial), got shape {tuple(x.shape)}")
    if rec_a.shape != x.shape or rec_b.shape != x.shape:
        raise ValueError(f"reconstructions must match the image shape {tuple(x.shape)}, got "
                         f"{tuple(rec_a.shape)} and {tuple(rec_b.shape)}")
    per_image = ((x - rec_a) ** 2).flatten(1).sum(1) + ((x - rec_b) ** 2).flatten(1).sum(1)  # (N,)
    if reduction == "mean":
        per_image = per_image / x[0].numel()
    return per_image.sum() / (2 * x.shape[0])


def restoration_loss(restored: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """Models Genesis' restoration loss (Zhou et al., MedIA 2021, Sec. 2.1): the mean squared error between the
    network's restoration of the transformed patch and the original patch, over all voxels, channels and images."""
    if restored.shape != original.shape:
        raise ValueError(f"restoration {tuple(restored.shape)} must match the original {tuple(original.shape)}")
    return ((restored - original) ** 2).mean()
