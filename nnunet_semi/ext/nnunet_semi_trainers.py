"""nnUNet_extTrainer shim: re-exports the trainers of the installed ``nnunet_semi`` package, defines nothing.

nnU-Net imports every module of the directories listed in ``nnUNet_extTrainer`` under a throw-away name; a class
defined here would not pickle. Re-exported classes keep their real module (``nnunet_semi.training.*``).
"""
from nnunet_semi.training import TRAINERS

globals().update(TRAINERS)
