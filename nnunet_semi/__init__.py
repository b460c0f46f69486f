"""nnunet-semi: semi- and self-supervised training for nnU-Net v2.

Trainers are found by nnU-Net's own commands through the ``nnUNet_extTrainer`` environment variable, which must
point at :func:`ext_trainer_dir` (``nnunet_semi_ext_trainer`` prints the ``export`` line).
"""
import os

__version__ = "0.1.0"


def ext_trainer_dir() -> str:
    """Directory to put into ``nnUNet_extTrainer``: it holds one shim module that re-exports our trainer classes.

    The shim only re-exports, so the classes keep their real module names (picklable, found again by every DDP rank
    and by ``nnUNetv2_predict``).
    """
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "ext")
