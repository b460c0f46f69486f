"""Trainers: the semi-supervised base and one module per method.

``TRAINERS`` maps every public trainer name to its class; the nnUNet_extTrainer shim re-exports exactly these.
"""
from nnunet_semi.training.baseline import LABELED_ONLY_VARIANTS, nnUNetTrainerLabeledOnly
from nnunet_semi.training.bcp import BCP_VARIANTS, nnUNetTrainerBCP
from nnunet_semi.training.ccm_cps import CCMCPS_VARIANTS, nnUNetTrainerCCMCPS
from nnunet_semi.training.cps import CPS_VARIANTS, nnUNetTrainerCPS
from nnunet_semi.training.dtc import DTC_VARIANTS, nnUNetTrainerDTC
from nnunet_semi.training.dual_stream import DUAL_STREAM_VARIANTS, nnUNetTrainerDualStreamCL
from nnunet_semi.training.ema_teacher import nnUNetTrainerEMATeacherBase
from nnunet_semi.training.entmin import ENTMIN_VARIANTS, nnUNetTrainerEntMin
from nnunet_semi.training.fixmatch import FIXMATCH_VARIANTS, nnUNetTrainerFixMatch
from nnunet_semi.training.ideal import IDEAL_VARIANTS, nnUNetTrainerIDEAL
from nnunet_semi.training.mcnet import MCNET_VARIANTS, nnUNetTrainerMCNet
from nnunet_semi.training.mean_teacher import MEAN_TEACHER_VARIANTS, nnUNetTrainerMeanTeacher
from nnunet_semi.training.mmgl import MMGL_VARIANTS, nnUNetTrainerMMGL
from nnunet_semi.training.paired_cps import PAIRED_CPS_VARIANTS
from nnunet_semi.training.pl_contrast import PL_CONTRAST_VARIANTS, nnUNetTrainerPLContrast
from nnunet_semi.training.pretrained_weights import install as _install_pretrained_weights_hook
from nnunet_semi.training.semi_base import nnUNetTrainerSemiSupervised
from nnunet_semi.training.uamt import UAMT_VARIANTS, nnUNetTrainerUAMT
from nnunet_semi.training.unimatch import UNIMATCH_VARIANTS, nnUNetTrainerUniMatch
from nnunet_semi.training.urpc import URPC_VARIANTS, nnUNetTrainerURPC

TRAINERS = {"nnUNetTrainerLabeledOnly": nnUNetTrainerLabeledOnly, **LABELED_ONLY_VARIANTS,
            # the seed papers' methods
            "nnUNetTrainerCPS": nnUNetTrainerCPS, **CPS_VARIANTS,
            "nnUNetTrainerCCMCPS": nnUNetTrainerCCMCPS, **CCMCPS_VARIANTS,
            "nnUNetTrainerIDEAL": nnUNetTrainerIDEAL, **IDEAL_VARIANTS,
            "nnUNetTrainerDualStreamCL": nnUNetTrainerDualStreamCL, **DUAL_STREAM_VARIANTS,
            "nnUNetTrainerPLContrast": nnUNetTrainerPLContrast, **PL_CONTRAST_VARIANTS,
            "nnUNetTrainerMMGL": nnUNetTrainerMMGL, **MMGL_VARIANTS,
            # the CCM paper's baselines: CPS from two single-network pretrainings
            **PAIRED_CPS_VARIANTS,
            # the comparison methods
            "nnUNetTrainerMeanTeacher": nnUNetTrainerMeanTeacher, **MEAN_TEACHER_VARIANTS,
            "nnUNetTrainerUAMT": nnUNetTrainerUAMT, **UAMT_VARIANTS,
            "nnUNetTrainerEntMin": nnUNetTrainerEntMin, **ENTMIN_VARIANTS,
            "nnUNetTrainerURPC": nnUNetTrainerURPC, **URPC_VARIANTS,
            "nnUNetTrainerMCNet": nnUNetTrainerMCNet, **MCNET_VARIANTS,
            "nnUNetTrainerDTC": nnUNetTrainerDTC, **DTC_VARIANTS,
            "nnUNetTrainerBCP": nnUNetTrainerBCP, **BCP_VARIANTS,
            # weak-to-strong consistency
            **FIXMATCH_VARIANTS, **UNIMATCH_VARIANTS}

# nnUNetv2_train -pretrained_weights: the trainers load the file themselves (see pretrained_weights.py)
_install_pretrained_weights_hook()

# every base trainer (no budget or ablation suffix) as a name of this package, so that
# ``from nnunet_semi.training import nnUNetTrainerGenesisCPS`` and ``import *`` work for the families registered only
# through their variant dicts (paired CPS, FixMatch, UniMatch); the variants live in their modules, found through TRAINERS
_BASE_TRAINERS = {name: cls for name, cls in TRAINERS.items() if "_" not in name}
globals().update(_BASE_TRAINERS)
__all__ = ["TRAINERS", "nnUNetTrainerEMATeacherBase", "nnUNetTrainerSemiSupervised", *sorted(_BASE_TRAINERS)]
