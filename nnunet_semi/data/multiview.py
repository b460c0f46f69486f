"""Multi-view 2D data for MMGL (Zhao et al., "MMGL: Multi-scale multi-view global-local contrastive learning for
semi-supervised cardiac image segmentation", ICIP 2022, arXiv:2207.01883; Sec. 4.1: "slices from the transaxial, coronal
and sagittal planes were extracted, and the transaxial view is set as the main view").

How the 2D configuration receives the other views: nnU-Net's 2d configuration stores each case as a preprocessed
volume ``(C, Z, Y, X)`` and trains on slices along its first axis -- that is the main (transaxial) view. This dataset
re-slices the same preprocessed volumes (same normalisation, same cases) along the second (coronal) and third
(sagittal) axis by permuting the volume so that the slicing axis comes first::

    transaxial: (C, Z, Y, X)   slices along Z, in-plane (Y, X)
    coronal:    (C, Y, Z, X)   slices along Y, in-plane (Z, X)
    sagittal:   (C, X, Z, Y)   slices along X, in-plane (Z, Y)

and resampling the two in-plane axes (linear for images, nearest for segmentations) to the 2d configuration's
in-plane spacing, so that a pixel covers the same physical size in every view and nnU-Net's 2D loader cuts patches
of the 2d patch size from any of them (padding smaller slices, as for transaxial slices). The volume's spacing is
``(spacing[0] of the case, *configuration spacing)`` (the 2d configuration resamples the in-plane axes only).
The paper resizes every slice to 160 x 160 instead; we keep nnU-Net's fixed-spacing patches so that the views match
the fine-tuning network's scale.

Each identifier ``'<view>|<case>'`` is one (view, case) pair; the loader samples them uniformly. Resliced volumes are
computed on first access and kept in a small per-process cache (``cache_size`` volumes).
"""
from collections import OrderedDict
from typing import Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from nnunetv2.training.dataloading.nnunet_dataset import nnUNetBaseDataset

VIEWS = ("transaxial", "coronal", "sagittal")
#: axis order of each view: the slicing axis first, then the two in-plane axes (of the (Z, Y, X) volume)
VIEW_AXES = {"transaxial": (0, 1, 2), "coronal": (1, 0, 2), "sagittal": (2, 0, 1)}


def _resample_in_plane(volume: torch.Tensor, size: Tuple[int, int], is_seg: bool) -> torch.Tensor:
    """``(C, S, H, W)`` -> ``(C, S, *size)``: each slice resampled (bilinear, corners aligned / nearest)."""
    if tuple(volume.shape[2:]) == tuple(size):
        return volume
    slices = volume.permute(1, 0, 2, 3).float()  # slices as the batch
    if is_seg:
        out = F.interpolate(slices, size=size, mode="nearest-exact")
    else:
        out = F.interpolate(slices, size=size, mode="bilinear", align_corners=True)
    return out.permute(1, 0, 2, 3).to(volume.dtype)


def reslice(volume: np.ndarray, view: str, spacing: Sequence[float], target_in_plane_spacing: Sequence[float],
            is_seg: bool = False) -> np.ndarray:
    """Volume ``(C, Z, Y, X)`` with voxel ``spacing`` (Z, Y, X) as seen in ``view``: ``(C, S, H, W)``, slices along
    the first spatial axis, in-plane axes resampled to ``target_in_plane_spacing`` (2 values). The transaxial view
    of a volume whose in-plane spacing is already the target one is the volume itself."""
    if view not in VIEW_AXES:
        raise ValueError(f"unknown view '{view}'; choose one of {VIEWS}")
    if volume.ndim != 4 or len(spacing) != 3 or len(target_in_plane_spacing) != 2:
        raise ValueError(f"expected a (C, Z, Y, X) volume with 3 spacings and 2 target spacings, got shape "
                         f"{volume.shape}, spacing {list(spacing)}, target {list(target_in_plane_spacing)}")
    axes = VIEW_AXES[view]
    permuted = torch.from_numpy(np.ascontiguousarray(np.asarray(volume).transpose(0, *(a + 1 for a in axes))))
    size = tuple(max(1, int(round(permuted.shape[2 + i] * spacing[axes[1 + i]] / target_in_plane_spacing[i])))
                 for i in range(2))
    return _resample_in_plane(permuted, size, is_seg).numpy()


class MultiViewDataset(nnUNetBaseDataset):
    """The cases of ``source`` (an nnU-Net dataset of 2d-configuration volumes) in several views; see the module
    docstring. ``load_case`` returns ``(data, seg, None, properties)`` like nnU-Net's datasets (``class_locations`` is
    emptied for the resliced views: foreground oversampling is not supported there)."""

    def __init__(self, source: nnUNetBaseDataset, target_in_plane_spacing: Sequence[float],
                 views: Sequence[str] = VIEWS, cache_size: int = 16):
        unknown = [v for v in views if v not in VIEW_AXES]
        if unknown or not views:
            raise ValueError(f"views must be a non-empty subset of {VIEWS}, got {list(views)}")
        self.source = source
        self.views = tuple(views)
        self.target_in_plane_spacing = tuple(float(s) for s in target_in_plane_spacing)
        self.cache_size = cache_size
        self._cache: "OrderedDict[str, tuple]" = OrderedDict()
        super().__init__("", [f"{v}|{i}" for v in self.views for i in source.identifiers])

    def load_case(self, identifier):
        if identifier in self._cache:
            self._cache.move_to_end(identifier)
            return self._cache[identifier]
        view, case = identifier.split("|", 1)
        data, seg, _, properties = self.source.load_case(case)
        spacing = (float(properties["spacing"][0]), *self.target_in_plane_spacing)
        properties = dict(properties)
        if view != "transaxial":
            properties["class_locations"] = {}
        data, seg = np.asarray(data[:]), np.asarray(seg[:])  # [:] reads blosc2 arrays into memory
        result = (reslice(data, view, spacing, self.target_in_plane_spacing),
                  reslice(seg, view, spacing, self.target_in_plane_spacing, is_seg=True), None,
                  properties)
        self._cache[identifier] = result
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return result

    @staticmethod
    def save_case(data, seg, properties, output_filename_truncated):
        raise NotImplementedError("MultiViewDataset is read-only")

    @staticmethod
    def get_identifiers(folder: str):
        raise NotImplementedError("MultiViewDataset identifiers come from its source dataset")
