"""The labeled-only baseline: nnU-Net's own trainer, seeded like the semi-supervised trainers.

``nnUNetTrainerLabeledOnly`` is ``nnUNetTrainer`` unchanged (data, augmentation, Dice+CE with deep supervision,
SGD/poly schedule, validation) plus the start-up settings of every nnunet-semi trainer
(:func:`~nnunet_semi.training.semi_base.apply_run_environment`: ``nnUNet_semi_seed``, ``nnUNet_semi_threads``), so
that it is the fair labeled-only reference row of every comparison table and round 0 of self-training (:mod:`nnunet_semi.apps.self_training`). Short budgets: ``nnUNetTrainerLabeledOnly_2epochs_5its``
etc. (:mod:`nnunet_semi.training.budgets`).
"""
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_semi.training.budgets import add_family_variants
from nnunet_semi.training.semi_base import apply_run_environment


class nnUNetTrainerLabeledOnly(nnUNetTrainer):
    """nnU-Net's trainer on the labeled cases only, with the start-up settings of :func:`apply_run_environment`."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        apply_run_environment(self.local_rank)


LABELED_ONLY_VARIANTS = add_family_variants(nnUNetTrainerLabeledOnly)
