"""Losses: pure tensor-in / tensor-out functions and modules, each naming the equation it implements."""
from nnunet_semi.losses.contrastive import InfoNCELoss, info_nce
from nnunet_semi.losses.cps import cross_pseudo_supervision, pseudo_label_agreement
from nnunet_semi.losses.dtc import dual_task_consistency, sdf_to_probability, signed_distance_map
from nnunet_semi.losses.reconstruction import masked_pair_reconstruction_loss
from nnunet_semi.losses.sharpening import mutual_consistency, sharpen
from nnunet_semi.losses.urpc import uncertainty_rectified_pyramid_consistency, upsample_pyramid

__all__ = ["cross_pseudo_supervision", "pseudo_label_agreement", "info_nce", "InfoNCELoss",
           "masked_pair_reconstruction_loss", "sharpen", "mutual_consistency",
           "uncertainty_rectified_pyramid_consistency", "upsample_pyramid", "signed_distance_map", "sdf_to_probability",
           "dual_task_consistency"]
