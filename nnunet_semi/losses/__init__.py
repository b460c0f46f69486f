"""Losses: pure tensor-in / tensor-out functions and modules, each naming the equation it implements."""
from nnunet_semi.losses.cps import cross_pseudo_supervision, pseudo_label_agreement, sigmoid_rampup

__all__ = ["cross_pseudo_supervision", "pseudo_label_agreement", "sigmoid_rampup"]
