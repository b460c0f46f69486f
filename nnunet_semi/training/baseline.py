"""The labeled-only baseline: nnU-Net's own trainer, seeded like the semi-supervised trainers.

``nnUNetTrainerLabeledOnly`` is ``nnUNetTrainer`` unchanged (data, augmentation, Dice+CE with deep supervision,
SGD/poly schedule, validation) plus the start-up seeding of ``nnUNet_semi_seed=<int>`` (Python, NumPy, torch;
``+ local_rank`` under DDP), so that it is the fair labeled-only reference row of every comparison table and
round 0 of self-training (:mod:`nnunet_semi.self_training`). Short budgets: ``nnUNetTrainerLabeledOnly_2epochs_5its``
etc. (:mod:`nnunet_semi.training.budgets`).
"""
import os

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_semi.training.budgets import add_budget_variants
from nnunet_semi.training.semi_base import SEED_ENV, nnUNetTrainerSemiSupervised


class nnUNetTrainerLabeledOnly(nnUNetTrainer):
    """nnU-Net's trainer on the labeled cases only, seeded from ``nnUNet_semi_seed``."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        seed = os.environ.get(SEED_ENV)
        if seed is not None:
            nnUNetTrainerSemiSupervised.seed_everything(int(seed) + self.local_rank)


LABELED_ONLY_VARIANTS = add_budget_variants(nnUNetTrainerLabeledOnly)
