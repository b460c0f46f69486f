"""Trainers: the semi-supervised base and one module per method.

``TRAINERS`` maps every public trainer name to its class; the nnUNet_extTrainer shim re-exports exactly these.
"""
from nnunet_semi.training.bcp import BCP_VARIANTS, nnUNetTrainerBCP
from nnunet_semi.training.ccm_cps import CCMCPS_VARIANTS, nnUNetTrainerCCMCPS
from nnunet_semi.training.cps import CPS_VARIANTS, nnUNetTrainerCPS
from nnunet_semi.training.dual_stream import DUAL_STREAM_VARIANTS, nnUNetTrainerDualStreamCL
from nnunet_semi.training.ema_teacher import nnUNetTrainerEMATeacherBase
from nnunet_semi.training.entmin import ENTMIN_VARIANTS, nnUNetTrainerEntMin
from nnunet_semi.training.ideal import IDEAL_VARIANTS, nnUNetTrainerIDEAL
from nnunet_semi.training.mean_teacher import MEAN_TEACHER_VARIANTS, nnUNetTrainerMeanTeacher
from nnunet_semi.training.semi_base import nnUNetTrainerSemiSupervised
from nnunet_semi.training.uamt import UAMT_VARIANTS, nnUNetTrainerUAMT

TRAINERS = {"nnUNetTrainerCPS": nnUNetTrainerCPS, **CPS_VARIANTS,
            "nnUNetTrainerCCMCPS": nnUNetTrainerCCMCPS, **CCMCPS_VARIANTS,
            "nnUNetTrainerIDEAL": nnUNetTrainerIDEAL, **IDEAL_VARIANTS,
            "nnUNetTrainerDualStreamCL": nnUNetTrainerDualStreamCL, **DUAL_STREAM_VARIANTS,
            "nnUNetTrainerMeanTeacher": nnUNetTrainerMeanTeacher, **MEAN_TEACHER_VARIANTS,
            "nnUNetTrainerUAMT": nnUNetTrainerUAMT, **UAMT_VARIANTS,
            "nnUNetTrainerEntMin": nnUNetTrainerEntMin, **ENTMIN_VARIANTS,
            "nnUNetTrainerBCP": nnUNetTrainerBCP, **BCP_VARIANTS}

__all__ = ["TRAINERS", "nnUNetTrainerBCP", "nnUNetTrainerCCMCPS", "nnUNetTrainerCPS", "nnUNetTrainerEMATeacherBase",
           "nnUNetTrainerEntMin", "nnUNetTrainerMeanTeacher", "nnUNetTrainerSemiSupervised", "nnUNetTrainerUAMT"]
