"""The GPU kit's one trainer: UniMatch compiled the way nnU-Net compiles every other trainer.

``nnUNetTrainerUniMatch`` refuses ``torch.compile`` for itself (its feature perturbation is a forward pre-hook
registered on the decoder after nnU-Net's ``initialize`` compiled the network, not yet verified under compilation;
one log line says so). ``nnUNetTrainerUniMatch_kitCompile`` is that trainer with nnU-Net's own decision back
(``nnUNetTrainer._do_i_compile``: on CUDA unless ``nnUNet_compile`` says no), so that the kit can check on a GPU
that the perturbed stream is still perturbed when compiled, and time it. It is found by nnU-Net through
``benchmarks/gpu/ext`` (which ``check.py`` appends to ``nnUNet_extTrainer``); it is not one of the package's
trainers.

On the CPU nnU-Net never compiles. With ``KIT_CPU_COMPILE_BACKEND=<backend>`` (the kit's ``--cpu`` mode sets
``aot_eager``: TorchDynamo's graph capture, guards and hooks and AOTAutograd, without Inductor's code generation,
which takes minutes on two cores) this class compiles there too, with that backend, at the very place nnU-Net
compiles (its ``initialize``).
"""
import contextlib
import functools
import os

import torch

from nnunet_semi.training.unimatch import nnUNetTrainerUniMatch

CPU_BACKEND_ENV = "KIT_CPU_COMPILE_BACKEND"


@contextlib.contextmanager
def compile_backend(backend):
    """Within the block, ``torch.compile(...)`` uses ``backend`` (None: unchanged)."""
    if not backend:
        yield
        return
    original = torch.compile
    torch.compile = functools.partial(original, backend=backend)
    try:
        yield
    finally:
        torch.compile = original


class nnUNetTrainerUniMatch_kitCompile(nnUNetTrainerUniMatch):
    """UniMatch with nnU-Net's ``torch.compile`` decision (see the module docstring)."""

    def _do_i_compile(self) -> bool:
        if self.device.type == "cpu":
            return bool(os.environ.get(CPU_BACKEND_ENV))
        return super(nnUNetTrainerUniMatch, self)._do_i_compile()  # nnU-Net's decision, without UniMatch's refusal

    def initialize(self):
        with compile_backend(os.environ.get(CPU_BACKEND_ENV) if self.device.type == "cpu" else None):
            super().initialize()
