"""Augmentations that nnU-Net's own pipeline does not have: the strong views of weak-to-strong consistency."""
from nnunet_semi.augmentation.weak_strong import (StrongIntensityConfig, apply_per_sample, cutmix, cutmix_boxes,
                                                  strong_intensity_transform)

__all__ = ["StrongIntensityConfig", "apply_per_sample", "cutmix", "cutmix_boxes", "strong_intensity_transform"]
