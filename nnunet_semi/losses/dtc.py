"""Dual-task consistency (DTC).

Luo, Chen, Song, Wang, "Semi-supervised medical image segmentation through dual-task consistency", AAAI 2021,
Sec. 3 (eq. 1-5). Besides the segmentation, the network regresses a level-set function: the signed distance map
(SDF) of the object, with a tanh output in [-1, 1]. The transform from segmentation to SDF is (eq. 1)::

    T(x) = -inf_{y in dS} ||x - y||   x inside S,    0   x on dS,    +inf_{y in dS} ||x - y||   x outside S

and its smooth approximate inverse, from a predicted SDF z back to a foreground probability, is (eq. 2)::

    T^{-1}(z) = 1 / (1 + exp(k z)) = sigmoid(-k z),    k = 1500

The dual-task consistency loss between the segmentation probability f_1(x) and T^{-1}(f_2(x)) is (eq. 4)::

    L_DTC = sum_x || f_1(x) - T^{-1}(f_2(x)) ||^2      (a mean over voxels here)

The ground-truth SDF of a labeled image is normalised to [-1, 1] per image (as in the released code's
``compute_sdf``): the interior distance (to the nearest background voxel) and the exterior distance (to the nearest
foreground voxel) are each min-max normalised over the image, SDF = exterior - interior, and the voxels of the
object's inner boundary (foreground voxels with a face-neighbouring background voxel) are set to 0. Distances are
Euclidean in voxel units (the released code ignores the spacing too).

Images without foreground (or without background) have no boundary: the released code leaves their SDF at 0 (which
T^{-1} maps to probability 0.5); we use +1 everywhere (all outside) and -1 everywhere (all inside) instead, which
T^{-1} maps to the labels themselves. This matters in 2D and with small patches, where many slices are empty.

Equation numbers follow our reading of the published paper (cited above); the equations are written out in full here
so that they can be checked against it.
"""
from typing import Sequence

import numpy as np
import torch
from scipy import ndimage


def inner_boundary(mask: np.ndarray) -> np.ndarray:
    """Foreground voxels of ``mask`` (bool, any dimensionality) with at least one face-neighbouring background voxel
    inside the array (voxels beyond the border do not count as background)."""
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=1)


def signed_distance_map(mask: np.ndarray) -> np.ndarray:
    """Normalised SDF of one binary image ``mask`` (bool, 2D or 3D): negative inside, positive outside, 0 on the
    inner boundary, in [-1, 1] (float32). See the module docstring for empty and full masks."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return np.ones(mask.shape, dtype=np.float32)
    if mask.all():
        return -np.ones(mask.shape, dtype=np.float32)
    inside = ndimage.distance_transform_edt(mask)  # distance of foreground voxels to the background
    outside = ndimage.distance_transform_edt(~mask)  # distance of background voxels to the foreground
    sdf = (outside - outside.min()) / (outside.max() - outside.min()) \
        - (inside - inside.min()) / (inside.max() - inside.min())
    sdf[inner_boundary(mask)] = 0.0
    return sdf.astype(np.float32)


def class_signed_distance_maps(labels: torch.Tensor, classes: Sequence[int]) -> torch.Tensor:
    """SDF targets for a label batch ``(B, 1, *spatial)`` (or ``(B, *spatial)``): one channel per entry of
    ``classes`` (the foreground labels), ``(B, len(classes), *spatial)`` float32 on the labels' device."""
    if labels.ndim >= 3 and labels.shape[1] == 1:
        labels = labels[:, 0]
    array = labels.detach().cpu().numpy()
    sdf = np.stack([np.stack([signed_distance_map(image == c) for c in classes]) for image in array])
    return torch.from_numpy(sdf).to(labels.device)


def sdf_to_probability(sdf: torch.Tensor, k: float = 1500.0) -> torch.Tensor:
    """Eq. 2: T^{-1}(z) = sigmoid(-k z)."""
    return torch.sigmoid(-k * sdf)


def dual_task_consistency(probs: torch.Tensor, sdf: torch.Tensor, k: float = 1500.0) -> torch.Tensor:
    """Eq. 4: mean over voxels and channels of ``(probs - sigmoid(-k sdf))^2``; ``probs`` are the segmentation's
    foreground probabilities and ``sdf`` the regressed SDF, both ``(B, n_foreground, *spatial)``."""
    if probs.shape != sdf.shape:
        raise ValueError(f"segmentation probabilities {tuple(probs.shape)} and SDF {tuple(sdf.shape)} differ in "
                         f"shape")
    return ((probs.float() - sdf_to_probability(sdf.float(), k)) ** 2).mean()
