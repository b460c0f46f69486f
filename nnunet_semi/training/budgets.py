"""Short-budget variants of a trainer, named like nnU-Net's ``nnUNetTrainer_Xepochs``.

* ``<Trainer>_<E>epochs``: E epochs of nnU-Net's 250 iterations (GPU budgets, as nnU-Net's own variants);
* ``<Trainer>_<E>epochs_<I>its``: E epochs of I iterations, I // 5 validation iterations and a checkpoint
  every epoch (CPU budgets: tests, the demo, quick checks).

The classes are created once, at import, as attributes of the trainer's own module, so they pickle and are found
by name like hand-written classes.
"""
import sys
from typing import Dict, Iterable, Tuple, Type

import torch

GPU_EPOCHS = (1, 5, 10, 20, 50, 100, 250, 500)
CPU_BUDGETS = ((2, 5), (4, 10), (10, 25), (10, 100), (20, 50), (20, 100), (40, 50), (50, 100))


def _budget_class(base: Type, epochs: int, iterations: int = None) -> Type:
    name = f"{base.__name__}_{epochs}epochs" + (f"_{iterations}its" if iterations else "")

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        base.__init__(self, plans, configuration, fold, dataset_json, device)
        self.num_epochs = epochs
        if iterations:
            self.num_iterations_per_epoch = iterations
            self.num_val_iterations_per_epoch = max(1, iterations // 5)
            self.save_every = 1

    doc = f"{base.__name__} for {epochs} epochs" + (f" of {iterations} iterations." if iterations else ".")
    return type(name, (base,), {"__init__": __init__, "__module__": base.__module__, "__qualname__": name,
                                "__doc__": doc})


def add_budget_variants(base: Type, gpu_epochs: Iterable[int] = GPU_EPOCHS,
                        cpu_budgets: Iterable[Tuple[int, int]] = CPU_BUDGETS) -> Dict[str, Type]:
    """Create the variants of ``base`` and register them in ``base``'s module; returns ``{name: class}``."""
    classes = [_budget_class(base, e) for e in gpu_epochs] + [_budget_class(base, e, i) for e, i in cpu_budgets]
    module = sys.modules[base.__module__]
    for cls in classes:
        setattr(module, cls.__name__, cls)
    return {cls.__name__: cls for cls in classes}
