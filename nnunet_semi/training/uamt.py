"""nnUNetTrainerUAMT: uncertainty-aware mean teacher, Yu et al., "Uncertainty-aware self-ensembling model for
semi-supervised 3D left atrium segmentation", MICCAI 2019.

A mean teacher (:class:`~nnunet_semi.training.mean_teacher.nnUNetTrainerMeanTeacher`) whose consistency is kept only
where the teacher is certain (Sec. 2.2; losses in :mod:`nnunet_semi.losses.consistency`):

* T = 8 stochastic teacher passes on the unlabeled batch, each with input noise clamp(N(0, 0.1^2), -0.2, 0.2) and
  Monte-Carlo dropout; mu_c = mean softmax, uncertainty u = -sum_c mu_c log mu_c (eq. 2-3);
* threshold H = (3/4 + 1/4 e^{-5 (1 - t/t_max)^2}) ln C over all of training (eq. 4 text, reference code);
* L_c = sum_v I(u_v < H) ||f'_v - f_v||^2 / (C sum_v I(u_v < H)) with f' the teacher's softmax for one more noisy
  pass and f the student's (eq. 4); L = L_sup + w(t) L_c, w(t) the Mean Teacher ramp-up (0.1, 40 % of training).

Where nnU-Net's setting differs (documented):

* Monte-Carlo dropout: nnU-Net plans have no dropout. The paper's V-Net applies channel dropout (p = 0.5) to the
  deepest encoder features; here the teacher gets channel dropout with ``mc_dropout = 0.5`` on the output of the
  last encoder stage (the bottleneck) during its training passes (the T uncertainty passes and the target pass),
  never at inference, and the student keeps the planned architecture (no dropout). ``mc_dropout = 0`` gives
  noise-only stochasticity;
* L_sup is nnU-Net's Dice + CE with deep supervision; the consistency uses full-resolution outputs; optimisation is
  nnU-Net's SGD / poly schedule (student only); EMA decay 0.99 with the Mean Teacher warm-up;
* the T passes run ``mc_passes_per_forward`` at a time (memory; the paper's code uses 2).

Inference (validation, ``nnUNetv2_predict``): the student, as in the paper's code (it tests the student model).
"""
import torch

from nnunet_semi.losses.consistency import predictive_entropy, uncertainty_masked_mse
from nnunet_semi.networks.outputs import full_resolution
from nnunet_semi.networks.teacher import gaussian_input_noise
from nnunet_semi.schedules import uamt_threshold
from nnunet_semi.training.budgets import add_family_variants
from nnunet_semi.training.mean_teacher import nnUNetTrainerMeanTeacher


class nnUNetTrainerUAMT(nnUNetTrainerMeanTeacher):
    extra_curves = {
        "sup_losses": "L_sup (supervised)",
        "consistency_losses": "L_c (uncertainty-masked softmax MSE)",
        "consistency_weights": "consistency weight w(t)",
        "certain_fraction": "fraction of unlabeled voxels with u < H",
    }

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.mc_passes = 8  # T (paper)
        self.mc_passes_per_forward = 2
        self.mc_dropout = 0.5  # teacher bottleneck channel dropout (paper's V-Net dropout rate)

    def teacher_forward_noisy(self, x: torch.Tensor) -> torch.Tensor:
        noisy = x + gaussian_input_noise(x, self.noise_std, self.noise_clip)
        out = self.mean_teacher.teacher_forward(noisy, bottleneck_dropout=self.mc_dropout)
        return torch.softmax(full_resolution(out).float(), 1)

    def mc_probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """``(T, B, C, *spatial)`` softmax outputs of T stochastic teacher passes."""
        passes = []
        remaining = self.mc_passes
        while remaining > 0:
            k = min(self.mc_passes_per_forward, remaining)
            probs = self.teacher_forward_noisy(x.repeat(k, *([1] * (x.ndim - 1))))
            passes.append(probs.view(k, x.shape[0], *probs.shape[1:]))
            remaining -= k
        return torch.cat(passes)

    def compute_losses(self, data, target, data_unlabeled):
        _, (out_l, out_u) = self.forward_joint(data, data_unlabeled)
        sup = self.loss(out_l, target)
        teacher_probs = self.teacher_forward_noisy(data_unlabeled)
        uncertainty = predictive_entropy(self.mc_probabilities(data_unlabeled))
        threshold = uamt_threshold(self.training_progress(), teacher_probs.shape[1])
        cons, mask = uncertainty_masked_mse(full_resolution(out_u), teacher_probs, uncertainty, threshold)
        w = self.current_consistency_weight()
        total = sup + w * cons
        return total, total, {"sup_losses": sup.item(), "consistency_losses": cons.item(), "consistency_weights": w,
                              "certain_fraction": mask.mean().item()}


UAMT_VARIANTS = add_family_variants(nnUNetTrainerUAMT)
