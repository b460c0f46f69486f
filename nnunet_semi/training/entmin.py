"""nnUNetTrainerEntMin: entropy minimisation on the unlabeled images (Grandvalet & Bengio, NeurIPS 2004; the
baseline listed by Chaitanya et al. 2023; SSL4MIS ``train_entropy_minimization``)::

    L = L_sup(f(x_l), y_l) + lambda(t) * mean_v H(softmax(f(x_u))_v) / ln C,   H(p) = -sum_c p_c log p_c

* lambda(t) = 0.1 * exp(-5 (1 - t / (0.4 t_max))^2): weight 0.1 (SSL4MIS default) with a sigmoid ramp-up over the
  first 40 % of optimizer steps (``entropy_weight``, ``entropy_rampup_fraction``; 0 = constant weight);
* the entropy is divided by ln C (``normalize_entropy``, as SSL4MIS does), so lambda means the same for any number
  of classes; it is taken on the unlabeled images' full-resolution output (``entropy_on_labeled = True`` adds the
  labeled ones, as SSL4MIS does).

L_sup is nnU-Net's Dice + CE with deep supervision; optimisation nnU-Net's. One network: validation and
``nnUNetv2_predict`` use it, as does the method.
"""
import torch

from nnunet_semi.losses.consistency import mean_entropy
from nnunet_semi.networks.outputs import full_resolution
from nnunet_semi.training.budgets import add_family_variants
from nnunet_semi.training.semi_base import nnUNetTrainerSemiSupervised


class nnUNetTrainerEntMin(nnUNetTrainerSemiSupervised):
    extra_curves = {
        "sup_losses": "L_sup (supervised)",
        "entropy_losses": "mean entropy / ln C (unlabeled)",
        "entropy_weights": "entropy weight lambda(t)",
    }

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.entropy_weight = 0.1
        self.entropy_rampup_fraction = 0.4
        self.normalize_entropy = True
        self.entropy_on_labeled = False

    def current_entropy_weight(self) -> float:
        return self.step_rampup(self.entropy_weight, self.entropy_rampup_fraction)

    def compute_losses(self, data, target, data_unlabeled):
        out, (out_l, out_u) = self.forward_joint(data, data_unlabeled)
        sup = self.loss(out_l, target)
        ent = mean_entropy(full_resolution(out if self.entropy_on_labeled else out_u), self.normalize_entropy)
        w = self.current_entropy_weight()
        total = sup + w * ent
        return total, total, {"sup_losses": sup.item(), "entropy_losses": ent.item(), "entropy_weights": w}


ENTMIN_VARIANTS = add_family_variants(nnUNetTrainerEntMin)
