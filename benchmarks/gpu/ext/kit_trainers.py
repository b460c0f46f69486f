"""nnUNet_extTrainer shim of the GPU kit: re-exports :mod:`benchmarks.gpu.trainers`, defines nothing (nnU-Net imports
this folder's modules under a throw-away name; the class keeps its real module, so it pickles)."""
from benchmarks.gpu.trainers import nnUNetTrainerUniMatch_kitCompile  # noqa: F401
