"""Trainers: the semi-supervised base and one module per method.

``TRAINERS`` maps every public trainer name to its class; the nnUNet_extTrainer shim re-exports exactly these.
"""
from nnunet_semi.training.cps import CPS_VARIANTS, nnUNetTrainerCPS
from nnunet_semi.training.semi_base import nnUNetTrainerSemiSupervised

TRAINERS = {"nnUNetTrainerCPS": nnUNetTrainerCPS, **CPS_VARIANTS}

__all__ = ["TRAINERS", "nnUNetTrainerCPS", "nnUNetTrainerSemiSupervised"]
