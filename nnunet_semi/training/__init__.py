"""Trainers: the semi-supervised base and one module per method.

``TRAINERS`` maps every public trainer name to its class; the nnUNet_extTrainer shim re-exports exactly these.
"""
from nnunet_semi.training.ccm_cps import CCMCPS_VARIANTS, nnUNetTrainerCCMCPS
from nnunet_semi.training.cps import CPS_VARIANTS, nnUNetTrainerCPS
from nnunet_semi.training.dual_stream import DUAL_STREAM_VARIANTS, nnUNetTrainerDualStreamCL
from nnunet_semi.training.ideal import IDEAL_VARIANTS, nnUNetTrainerIDEAL
from nnunet_semi.training.mmgl import MMGL_VARIANTS, nnUNetTrainerMMGL
from nnunet_semi.training.semi_base import nnUNetTrainerSemiSupervised

TRAINERS = {"nnUNetTrainerCPS": nnUNetTrainerCPS, **CPS_VARIANTS,
            "nnUNetTrainerCCMCPS": nnUNetTrainerCCMCPS, **CCMCPS_VARIANTS,
            "nnUNetTrainerIDEAL": nnUNetTrainerIDEAL, **IDEAL_VARIANTS,
            "nnUNetTrainerDualStreamCL": nnUNetTrainerDualStreamCL, **DUAL_STREAM_VARIANTS,
            "nnUNetTrainerMMGL": nnUNetTrainerMMGL, **MMGL_VARIANTS}

__all__ = ["TRAINERS", "nnUNetTrainerCCMCPS", "nnUNetTrainerCPS", "nnUNetTrainerSemiSupervised"]
