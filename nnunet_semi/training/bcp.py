"""nnUNetTrainerBCP: Bidirectional Copy-Paste, Bai et al., CVPR 2023 (mixing: :mod:`nnunet_semi.augmentation.copy_paste`).

Two stages on nnU-Net's augmented patches (the mixing happens on the batches inside ``compute_losses``):

1. labeled-only pre-training (the paper's first stage) for the first ``pretrain_fraction`` of the epochs (the
   paper's ACDC schedule: 10k of 40k iterations = 1/4): each labeled patch X_i gets the box of its partner
   X_j, j = (i - B/2) mod B, pasted in, X = X_i M + X_j (1 - M), supervised by Y_i M + Y_j (1 - M) (both
   regions weight 1);
2. mean-teacher self-training (Sec. 3.2-3.3): the teacher (a copy of the pre-trained student at the stage switch,
   then EMA with decay 0.99 after every step) predicts pseudo-labels \\hat Y = argmax of the unlabeled patches,
   keeping the largest connected component per class (``pseudo_label_largest_cc``). The labeled batch is split into
   halves a, b, the first B unlabeled patches likewise, and the two bidirectional mixes of Sec. 3.2 (the paper's
   X^in / X^out, M = 1 outside the zero box) are::

       X_1 = X_u^a M + X_l^a (1 - M)    (a labeled crop pasted into an unlabeled image)
       X_2 = X_l^b M + X_u^b (1 - M)    (an unlabeled crop pasted into a labeled image)
       L_1 = alpha l(Q_1, \\hat Y^a | M = 1) + l(Q_1, Y^a | M = 0)
       L_2 = l(Q_2, Y^b | M = 1) + alpha l(Q_2, \\hat Y^b | M = 0)
       L = (L_1 + L_2) / 2,  alpha = 0.5  (pseudo-labeled regions weighted alpha, Sec. 3.3; the /2 as in the code)

   with one mask M per step, shared by both mixes, as in the reference code.

l(Q, Y) with region weights = sum over the two regions of weight * (Dice + CE restricted to that region): here
nnU-Net's Dice + CE (``do_bg=False``, batch Dice per the plans), restricted with an ignore value (the reference code
uses its own masked Dice with background and masked CE; the per-region normalisation is the same). Deep supervision:
each region target is downsampled to every output scale (nearest-exact, like nnU-Net's own targets) and the scales
are weighted with nnU-Net's deep-supervision weights, so the mixed labels follow the box at every scale.

Other differences from the paper: one optimizer and nnU-Net's SGD / poly schedule over both stages (the paper starts
stage 2 with a new SGD); the unlabeled stream is read (and ignored) during pre-training; the pre-training partner
pairing uses every labeled patch as outer image once (the paper mixes one half into the other).

Inference (validation, ``nnUNetv2_predict``): the student, as in the paper's code (it saves and tests the student).

The stage switch needs a teacher that already predicts foreground: the pseudo-labels of a background-only teacher
teach background only (weighted alpha on half of every mixed image), which holds self-training back or keeps it at
background. The curve
``pseudo_label_foreground`` shows the teacher's foreground fraction per epoch, and the first self-training step
logs a warning when it is 0. Measured on MSD Hippocampus (2d, 8..64 features, 20 x 50 iterations, seed 0,
``benchmarks/results/hippocampus-cpu``): copy-paste pre-training learns more slowly than plain nnU-Net training on
these small patches (first foreground on the validation case at epoch 7 instead of 5; the posterior class not at all
in 1000 iterations), so after the default 250 pre-training iterations the teacher predicted background only and BCP
ended at Dice 0; with half the epochs as pre-training it reached the copy-paste stage's own level. On ACDC (same
budget, ``benchmarks/results/acdc-cpu``) the teacher also started background-only but the left ventricle emerged
during self-training; RV and myocardium did not. Pre-train longer (``pretrain_fraction``, or more iterations) where
a short budget is used.
"""
import torch

from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper

from nnunet_semi.augmentation.copy_paste import box_mask, copy_paste, downsample_targets, region_targets
from nnunet_semi.networks.outputs import full_resolution
from nnunet_semi.postprocessing import largest_component_per_class
from nnunet_semi.training.budgets import add_family_variants
from nnunet_semi.training.ema_teacher import nnUNetTrainerEMATeacherBase


class nnUNetTrainerBCP(nnUNetTrainerEMATeacherBase):
    extra_curves = {
        "labeled_region_losses": "Dice+CE on labeled regions",
        "pseudo_region_losses": "Dice+CE on pseudo-labeled regions (0 in pre-training)",
        "self_training_stage": "stage (0 = labeled pre-training, 1 = self-training)",
        "pseudo_label_foreground": "foreground fraction of the teacher's pseudo-labels (0 in pre-training)",
    }

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.pretrain_fraction = 0.25  # stage 1 length, fraction of the epochs
        self.mask_ratio = 2.0 / 3.0  # beta (Sec. 3.2)
        self.unlabeled_weight = 0.5  # alpha (Sec. 3.3)
        self.pseudo_label_largest_cc = True
        self.ema_decay = 0.99
        self.ema_warmup = False  # BCP's EMA uses the constant decay
        self._teacher_checked = False  # the first self-training step checks that the teacher predicts foreground

    def initialize(self):
        super().initialize()
        if self.batch_size < 2 or self.unlabeled_batch_size < self.batch_size:
            raise ValueError(f"nnUNetTrainerBCP mixes halves of the labeled batch with as many unlabeled patches: "
                             f"it needs a labeled batch size >= 2 per GPU (have {self.batch_size}) and an unlabeled "
                             f"one at least as large (have {self.unlabeled_batch_size}). Fix: raise batch_size in "
                             f"the plans or use fewer GPUs, and keep unlabeled_batch_ratio >= 1.")
        self.region_loss_fn = self.build_region_loss()

    def build_region_loss(self):
        """nnU-Net's Dice + CE (its settings, its deep-supervision weights) with an ignore value that restricts it to
        one region of the mixed image."""
        self.ignore_value = self.label_manager.num_segmentation_heads
        loss = self.dice_ce_ignoring(self.ignore_value)
        return DeepSupervisionWrapper(loss, self.loss.weight_factors) if self.enable_deep_supervision else loss

    # ------------------------------------------------------------------ stages
    def pretrain_epochs(self) -> int:
        return int(self.pretrain_fraction * self.num_epochs + 0.5)

    def in_pretraining(self) -> bool:
        return self.current_epoch < self.pretrain_epochs()

    def ema_active(self) -> bool:
        return not self.in_pretraining()

    def on_train_epoch_start(self):
        super().on_train_epoch_start()
        if self.current_epoch == self.pretrain_epochs():
            # the teacher starts from the pre-trained student (a run resumed at this epoch repeats the same copy)
            self.mean_teacher.copy_student_to_teacher()
            self.print_to_log_file(f"BCP: labeled pre-training done ({self.pretrain_epochs()} epochs); teacher = "
                                   f"student, bidirectional copy-paste self-training starts")

    # ------------------------------------------------------------------ losses
    def region_loss(self, output, y_outer, y_inner, mask, w_outer: float, w_inner: float):
        """``(w_outer * l(Q, Y_outer on M = 1), w_inner * l(Q, Y_inner on M = 0))`` (Dice + CE per region)."""
        t_outer, t_inner = region_targets(y_outer, y_inner, mask, self.ignore_value)
        if isinstance(output, (list, tuple)):
            t_outer, t_inner = downsample_targets(t_outer, output), downsample_targets(t_inner, output)
        return w_outer * self.region_loss_fn(output, t_outer), w_inner * self.region_loss_fn(output, t_inner)

    @torch.no_grad()
    def pseudo_labels(self, data_unlabeled: torch.Tensor) -> torch.Tensor:
        probs = full_resolution(self.mean_teacher.teacher_forward(data_unlabeled))
        labels = probs.argmax(1, keepdim=True)
        if self.pseudo_label_largest_cc:
            labels = largest_component_per_class(labels, probs.shape[1])
        return labels

    def compute_losses(self, data, target, data_unlabeled):
        y = full_resolution(target)
        mask = box_mask(data.shape[2:], self.mask_ratio, device=data.device)
        n = data.shape[0]
        half = n // 2
        if self.in_pretraining():
            out = self.network(copy_paste(data, data.roll(half, 0), mask))
            l_outer, l_inner = self.region_loss(out, y, y.roll(half, 0), mask, 1.0, 1.0)
            total = 0.5 * (l_outer + l_inner)
            return total, total, {"labeled_region_losses": 0.5 * (l_outer + l_inner).item(),
                                  "pseudo_region_losses": 0.0, "self_training_stage": 0.0,
                                  "pseudo_label_foreground": 0.0}

        u = data_unlabeled[:n]
        y_hat = self.pseudo_labels(u)
        foreground = (y_hat > 0).float().mean().item()
        if not self._teacher_checked:
            self._teacher_checked = True
            if foreground == 0.0:
                self.print_to_log_file(
                    "WARNING (BCP): the teacher (the student after labeled pre-training) predicts background only on "
                    "the first self-training batch, so its pseudo-labels teach background only, which holds "
                    "self-training back or keeps it at background. Pre-train longer: raise pretrain_fraction or train "
                    "more epochs / iterations (benchmarks/README.md: MSD Hippocampus after 250 pre-training "
                    "iterations).")
        x_in = copy_paste(u[:half], data[:half], mask)  # unlabeled outside, labeled crop inside
        x_out = copy_paste(data[half:], u[half:], mask)  # labeled outside, unlabeled crop inside
        _, (out_in, out_out) = self.forward_joint(x_in, x_out)
        alpha = self.unlabeled_weight
        p_in, l_in = self.region_loss(out_in, y_hat[:half].to(y.dtype), y[:half], mask, alpha, 1.0)
        l_out, p_out = self.region_loss(out_out, y[half:], y_hat[half:].to(y.dtype), mask, 1.0, alpha)
        total = 0.5 * (p_in + l_in + l_out + p_out)
        return total, total, {"labeled_region_losses": 0.5 * (l_in + l_out).item(),
                              "pseudo_region_losses": 0.5 * (p_in + p_out).item() / alpha,
                              "self_training_stage": 1.0, "pseudo_label_foreground": foreground}


BCP_VARIANTS = add_family_variants(nnUNetTrainerBCP)
