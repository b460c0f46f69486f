"""Losses: pure tensor-in / tensor-out functions and modules, each naming the equation it implements."""
from nnunet_semi.losses.contrastive import InfoNCELoss, info_nce
from nnunet_semi.losses.cps import cross_pseudo_supervision, pseudo_label_agreement, sigmoid_rampup
from nnunet_semi.losses.reconstruction import masked_pair_reconstruction_loss

__all__ = ["cross_pseudo_supervision", "pseudo_label_agreement", "sigmoid_rampup", "info_nce", "InfoNCELoss",
           "masked_pair_reconstruction_loss"]
