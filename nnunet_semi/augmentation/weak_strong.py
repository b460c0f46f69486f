"""Strong views for weak-to-strong consistency (FixMatch, UniMatch).

The *weak* view of an unlabeled patch is what nnU-Net's training augmentation makes of it (the unlabeled stream of
:class:`~nnunet_semi.training.semi_base.nnUNetTrainerSemiSupervised`). The *strong* view is built on top of the
weak view and keeps its geometry exactly, so a pseudo-label made on the weak view lies on the same voxels of the
strong view:

* :func:`strong_intensity_transform`: intensity perturbations only (brightness, contrast, gamma, blur, noise),
  stronger and more frequent than nnU-Net's, each applied per sample with a probability. They are batchgeneratorsv2
  transforms, the ones nnU-Net itself uses, with wider ranges (:class:`StrongIntensityConfig`).
* :func:`cutmix_boxes` / :func:`cutmix`: CutMix between the unlabeled patches of a batch (Yun et al. 2019, as
  UniMatch uses it): a random box of sample ``partner[i]`` is pasted into sample ``i``; the same boxes mix the
  pseudo-labels and confidences, so image and label stay aligned. This is the part batchgeneratorsv2 lacks.

A milder weak view is available for the unlabeled stream: :func:`crop_flip_weak_transform` (a crop of the loader's
patch and random mirroring only, no rotation, scaling or intensity change; UniMatch's weak view is random crop and
flip), switched on with the trainer attribute ``unlabeled_augmentation = "crop_flip"``.

Strong views are made in the training process on the CPU (nnU-Net's loader returns only ``image`` and
``segmentation`` per sample, so a second view cannot come out of its augmentation workers).
"""
import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import torch
from batchgeneratorsv2.transforms.base.basic_transform import BasicTransform
from batchgeneratorsv2.transforms.intensity.brightness import MultiplicativeBrightnessTransform
from batchgeneratorsv2.transforms.intensity.contrast import BGContrast, ContrastTransform
from batchgeneratorsv2.transforms.intensity.gamma import GammaTransform
from batchgeneratorsv2.transforms.intensity.gaussian_noise import GaussianNoiseTransform
from batchgeneratorsv2.transforms.noise.gaussian_blur import GaussianBlurTransform
from batchgeneratorsv2.transforms.spatial.mirroring import MirrorTransform
from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
from batchgeneratorsv2.transforms.utils.nnunet_masking import MaskImageTransform
from batchgeneratorsv2.transforms.utils.random import RandomTransform
from batchgeneratorsv2.transforms.utils.remove_label import RemoveLabelTansform


@dataclass(frozen=True)
class StrongIntensityConfig:
    """Ranges and per-sample probabilities of the strong intensity perturbations.

    Defaults follow UniMatch's strong view (colour jitter 0.5 with p 0.8, blur with p 0.5) translated to
    nnU-Net's normalised single-channel intensities; nnU-Net's own weak pipeline uses brightness/contrast
    0.75-1.25 (p 0.15), gamma 0.7-1.5 (p 0.3), blur sigma 0.5-1 (p 0.2), noise variance 0-0.1 (p 0.1).
    A probability of 0 switches a perturbation off.
    """
    brightness: Tuple[float, float] = (0.5, 1.5)
    p_brightness: float = 0.8
    contrast: Tuple[float, float] = (0.5, 1.5)
    p_contrast: float = 0.8
    gamma: Tuple[float, float] = (0.5, 2.0)
    p_gamma: float = 0.5
    blur_sigma: Tuple[float, float] = (0.5, 1.5)
    p_blur: float = 0.5
    noise_variance: Tuple[float, float] = (0.0, 0.2)
    p_noise: float = 0.5


def strong_intensity_transform(config: StrongIntensityConfig = StrongIntensityConfig()) -> BasicTransform:
    """batchgeneratorsv2 transform of one sample ``{'image': (C, *spatial)}``: the strong intensity perturbations,
    each drawn independently with its probability. Geometry is never changed."""
    steps = [
        (config.p_brightness, MultiplicativeBrightnessTransform(
            multiplier_range=BGContrast(config.brightness), synchronize_channels=False, p_per_channel=1)),
        (config.p_contrast, ContrastTransform(
            contrast_range=BGContrast(config.contrast), preserve_range=False, synchronize_channels=False,
            p_per_channel=1)),
        (config.p_gamma, GammaTransform(
            gamma=BGContrast(config.gamma), p_invert_image=0, synchronize_channels=False, p_per_channel=1,
            p_retain_stats=1)),
        (config.p_blur, GaussianBlurTransform(
            blur_sigma=config.blur_sigma, synchronize_channels=False, synchronize_axes=False, p_per_channel=1)),
        (config.p_noise, GaussianNoiseTransform(
            noise_variance=config.noise_variance, p_per_channel=1, synchronize_channels=True)),
    ]
    return ComposeTransforms([RandomTransform(t, apply_probability=p) for p, t in steps if p > 0])


def crop_flip_weak_transform(patch_size: Sequence[int], mirror_axes: Optional[Sequence[int]],
                             use_mask_for_norm: Optional[Sequence[bool]] = None) -> BasicTransform:
    """A mild weak view for the unlabeled stream: the centre ``patch_size`` crop of the loader's (larger, randomly
    placed) patch, then a random flip of each axis in ``mirror_axes``; voxel values are copied, never interpolated
    or rescaled (nnU-Net's ``SpatialTransform`` crops without resampling when it neither rotates, scales nor
    deforms). nnU-Net's own closing steps follow: the mask of ``use_mask_for_norm`` channels and the padding label
    -1 -> 0, as in ``nnUNetTrainer.get_training_transforms``."""
    transforms = [SpatialTransform(tuple(patch_size), patch_center_dist_from_border=0, random_crop=False,
                                   p_elastic_deform=0, p_rotation=0, p_scaling=0, border_mode_seg="constant",
                                   padding_value_seg=-1)]
    if mirror_axes:
        transforms.append(MirrorTransform(allowed_axes=tuple(mirror_axes)))
    if use_mask_for_norm is not None and any(use_mask_for_norm):
        transforms.append(MaskImageTransform(apply_to_channels=[i for i, m in enumerate(use_mask_for_norm) if m],
                                             channel_idx_in_seg=0, set_outside_to=0))
    transforms.append(RemoveLabelTansform(-1, 0))
    return ComposeTransforms(transforms)


def apply_per_sample(transform: BasicTransform, images: torch.Tensor) -> torch.Tensor:
    """``transform`` applied to every sample of ``images`` ``(B, C, *spatial)`` independently (own random draws);
    returns a new tensor on the input's device (the transforms run on the CPU); ``images`` is not modified."""
    source = images.detach().to("cpu", torch.float32)
    out = torch.stack([transform(image=source[b].clone())["image"] for b in range(source.shape[0])])
    return out.to(images.device, images.dtype)


def cutmix_boxes(batch_size: int, spatial_shape: Sequence[int], p: float = 0.5,
                 area: Tuple[float, float] = (0.02, 0.4), ratio: Tuple[float, float] = (0.3, 1 / 0.3),
                 generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Boolean masks ``(B, *spatial)``: for each sample, with probability ``p``, one axis-aligned box covering a
    fraction ``U(area)`` of the patch, inside the patch; else no box.

    Box shape (UniMatch's ``obtain_cutmix_box`` in 2D, generalised to n axes): the side fraction along axis k is
    ``a^(1/n) * exp(e_k - mean(e))`` with ``e_k ~ U(ln ratio_min, ln ratio_max) / 2``, so the sides multiply to the
    drawn area ``a`` and, in 2D, their ratio lies in ``ratio``. Sides are clipped to the patch.
    """
    n = len(spatial_shape)
    masks = torch.zeros((batch_size, *spatial_shape), dtype=torch.bool)
    lo, hi = math.log(ratio[0]) / 2, math.log(ratio[1]) / 2
    for b in range(batch_size):
        if torch.rand(1, generator=generator).item() >= p:
            continue
        a = area[0] + (area[1] - area[0]) * torch.rand(1, generator=generator).item()
        e = lo + (hi - lo) * torch.rand(n, generator=generator)
        fractions = (a ** (1.0 / n)) * torch.exp(e - e.mean())
        index = []
        for k in range(n):
            size = int(min(spatial_shape[k], max(1, round(float(fractions[k]) * spatial_shape[k]))))
            start = int(torch.randint(0, spatial_shape[k] - size + 1, (1,), generator=generator).item())
            index.append(slice(start, start + size))
        masks[(b, *index)] = True
    return masks


def cutmix(x: torch.Tensor, boxes: torch.Tensor, partner: torch.Tensor, source: Optional[torch.Tensor] = None
           ) -> torch.Tensor:
    """Sample ``i`` of ``x`` with the voxels of ``boxes[i]`` taken from sample ``partner[i]`` of ``source``.

    ``x``: images ``(B, C, *spatial)`` or label / confidence maps ``(B, *spatial)``; ``boxes``: ``(B, *spatial)``
    booleans (:func:`cutmix_boxes`); ``partner``: ``(B,)`` indices into ``source``, which is ``x`` itself by default
    (the partners are other samples of the batch) or any batch of the same per-sample shape (e.g. ``x`` with a
    patch from elsewhere appended). Images, pseudo-labels and confidences mixed with the same ``boxes`` and
    ``partner`` stay aligned voxel for voxel.
    """
    if x.shape[0] != boxes.shape[0] or tuple(x.shape[-boxes.ndim + 1:]) != tuple(boxes.shape[1:]):
        raise ValueError(f"cutmix: boxes {tuple(boxes.shape)} do not fit tensor {tuple(x.shape)}")
    if source is None:
        source = x
    elif tuple(source.shape[1:]) != tuple(x.shape[1:]):
        raise ValueError(f"cutmix: partner source {tuple(source.shape)} does not fit tensor {tuple(x.shape)}")
    boxes = boxes.to(x.device)
    mask = boxes if x.ndim == boxes.ndim else boxes.unsqueeze(1)
    return torch.where(mask, source[partner.to(source.device)].to(x.device), x)
