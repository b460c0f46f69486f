"""Short-budget variants of a trainer, named like nnU-Net's ``nnUNetTrainer_Xepochs``.

* ``<Trainer>_<E>epochs``: E epochs of nnU-Net's 250 iterations (GPU budgets, as nnU-Net's own variants);
* ``<Trainer>_<E>epochs_<I>its``: E epochs of I iterations, I // 5 validation iterations and a checkpoint
  every epoch (CPU budgets: tests, the demo, quick checks).

The classes are created once, at import, as attributes of the trainer's own module, so they pickle and are found
by name like hand-written classes. :func:`register_variant` is the one way a variant class is generated (budgets
here, MMGL's ablations and Dice portfolios in ``training/mmgl.py``); :func:`add_family_variants` is the one way a
trainer module lists its classes for ``TRAINERS`` (the trainer, its hand-written or generated named variants, and
each one's budget variants).
"""
import sys
from typing import Dict, Iterable, Tuple, Type

import torch

GPU_EPOCHS = (1, 5, 10, 20, 50, 100, 250, 500)
CPU_BUDGETS = ((2, 5), (4, 10), (10, 25), (10, 100), (20, 50), (20, 100), (40, 50), (50, 100), (80, 50), (160, 50), (320, 50))


def register_variant(base: Type, suffix: str, doc: str, **namespace) -> Type:
    """Create the subclass ``<base>_<suffix>`` of ``base`` with ``namespace`` (class attributes, methods) and register
    it in ``base``'s module under its name, so that it pickles and nnU-Net finds it by name (``-tr``,
    ``nnUNetv2_predict``) like a hand-written class."""
    name = f"{base.__name__}_{suffix}"
    cls = type(name, (base,), {**namespace, "__module__": base.__module__, "__qualname__": name, "__doc__": doc})
    setattr(sys.modules[base.__module__], name, cls)
    return cls


def _budget_class(base: Type, epochs: int, iterations: int = None) -> Type:
    suffix = f"{epochs}epochs" + (f"_{iterations}its" if iterations else "")

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        base.__init__(self, plans, configuration, fold, dataset_json, device)
        self.num_epochs = epochs
        if iterations:
            self.num_iterations_per_epoch = iterations
            self.num_val_iterations_per_epoch = max(1, iterations // 5)
            self.save_every = 1

    doc = f"{base.__name__} for {epochs} epochs" + (f" of {iterations} iterations." if iterations else ".")
    return register_variant(base, suffix, doc, __init__=__init__)


def add_budget_variants(base: Type, gpu_epochs: Iterable[int] = GPU_EPOCHS,
                        cpu_budgets: Iterable[Tuple[int, int]] = CPU_BUDGETS) -> Dict[str, Type]:
    """Create the variants of ``base`` and register them in ``base``'s module; returns ``{name: class}``."""
    classes = [_budget_class(base, e) for e in gpu_epochs] + [_budget_class(base, e, i) for e, i in cpu_budgets]
    return {cls.__name__: cls for cls in classes}


def add_family_variants(*bases: Type) -> Dict[str, Type]:
    """``{name: class}`` of a trainer and its named variants (``bases``, e.g. ``_paper`` or ablation classes), each
    with its budget variants (:func:`add_budget_variants`)."""
    return {name: cls for base in bases for name, cls in {base.__name__: base, **add_budget_variants(base)}.items()}
