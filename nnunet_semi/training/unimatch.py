"""nnUNetTrainerUniMatch: unified dual-stream perturbations (Yang et al., CVPR 2023, Sec. 3.2-3.3).

FixMatch (:mod:`nnunet_semi.training.fixmatch`) plus

* a feature-perturbation stream (Sec. 3.2): the weak view's encoder features (every skip of nnU-Net's UNet) with
  channel dropout p = 0.5 are decoded in the same forward pass as the clean ones
  (:class:`~nnunet_semi.networks.feature_perturbation.SkipFeatureDropout`); the weak view's confident pseudo-labels
  supervise that prediction: ``L_fp``;
* two strong views with independent perturbations and CutMix boxes (Sec. 3.3), both guided by the one weak view::

    L_u = lambda * 1/2 (L_s1 + L_s2) + mu * L_fp,    lambda = mu = 0.5 (the paper's weights)
    L   = L_s + L_u

  ``L_s1``, ``L_s2``, ``L_fp`` are FixMatch's confident-voxel loss (``unsup_loss``) against the weak-view
  pseudo-labels (mixed with each strong view's own boxes), threshold tau = 0.95. The default (since 2026-12-06,
  chosen on ACDC's validation patients) is the paper's per-voxel cross-entropy H over the confident voxels (Eq.
  1-3; FixMatch's default). ``nnUNetTrainerUniMatch_dice`` keeps the loss of UniMatch's medical code, the soft
  Dice over the confident voxels averaged over all classes, background included, with the denominator
  ``sum p + sum y`` where that code has ``sum p^2 + sum y`` (``unsup_dice_squared = True`` gives the code's form;
  in FixMatch on ACDC's validation patients it collapsed, 0.00 against 44.66): on ACDC (3 labeled patients) it
  collapsed (test 31.57 against labeled-only's 54.10; the CE: 67.91).

Knobs: ``image_weight`` (lambda), ``feature_weight`` (mu), ``feature_dropout`` (p); the FixMatch knobs apply.
Where nnU-Net's setting differs: as FixMatch (nnU-Net's supervised loss and SGD, no overall ``/ 2``; the CutMix
partners come from the same unlabeled batch, for a batch of 1 the previous step's patch, in both strong views with
their own boxes); the perturbation is channel dropout on every skip of the UNet (UniMatch's U-Net for medical images
perturbs all decoder inputs too). One forward pass per step
(labeled | weak | strong 1 | strong 2 | perturbed weak), DDP-safe; ``nnUNetv2_predict`` loads the plain network
(the perturbation is a hook, not a layer).

``torch.compile``: nnU-Net compiles the network on CUDA by default (``nnUNet_compile``). The perturbation hook is
registered on the built network after nnU-Net's ``initialize`` and has not been verified under ``torch.compile``,
so this trainer turns compilation off for itself (network and nnU-Net's Dice term, as ``nnUNet_compile=0`` would;
one log line says so) until it is checked on a GPU.
"""
from contextlib import nullcontext

import torch

from nnunet_semi.networks.dual import unwrap
from nnunet_semi.networks.feature_perturbation import SkipFeatureDropout
from nnunet_semi.networks.outputs import full_resolution, split_batch
from nnunet_semi.training.budgets import add_family_variants
from nnunet_semi.training.fixmatch import nnUNetTrainerFixMatch


class nnUNetTrainerUniMatch(nnUNetTrainerFixMatch):
    extra_curves = {
        "sup_losses": "L_s (supervised)",
        "unsup_losses": "L_u (strong views, mean)",
        "fp_losses": "L_fp (feature perturbation)",
        "confident_fraction": "confident voxels (q >= tau)",
        "pseudo_label_foreground": "confident pseudo-label foreground",
    }

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        # unsup_loss: FixMatch's default, the paper's per-voxel CE ("dice": the medical code's, ``_dice``)
        self.image_weight = 0.5  # lambda
        self.feature_weight = 0.5  # mu
        self.feature_dropout = 0.5
        self.feature_perturbation = None
        self._compile_refusal_logged = False

    def _do_i_compile(self) -> bool:
        """Never: nnU-Net's decision is asked (it logs its own reasons) and a "yes" is refused with one log line."""
        if super()._do_i_compile() and not self._compile_refusal_logged:
            self.print_to_log_file("torch.compile disabled for UniMatch: its feature perturbation is a forward "
                                   "pre-hook on the decoder, registered after the network is built, and is not "
                                   "verified under torch.compile; the network runs uncompiled (as nnUNet_compile=0)")
            self._compile_refusal_logged = True
        return False

    def initialize(self):
        super().initialize()
        self.feature_perturbation = SkipFeatureDropout(unwrap(self.network), self.feature_dropout)

    def compute_losses(self, data, target, data_unlabeled):
        n_l, n_u = data.shape[0], data_unlabeled.shape[0]
        strong_1, boxes_1, partner_1 = self.strong_view(data_unlabeled)
        strong_2, boxes_2, partner_2 = self.strong_view(data_unlabeled)
        use_fp = self.feature_weight > 0
        with self.feature_perturbation.active(n_l, n_l + n_u) if use_fp else nullcontext():
            out = self.network(torch.cat((data, data_unlabeled, strong_1, strong_2)))
        out_l, out_u = split_batch(out, n_l)
        logits_w, logits_s1, logits_s2, *logits_fp = full_resolution(out_u).split(n_u)

        sup = self.loss(out_l, target)
        labels_w, confidence_w = self.weak_view_pseudo_labels(logits_w)  # once; mixed below for each strong view
        mask_w = self.confident_mask(labels_w, confidence_w)
        confident, foreground = self.pseudo_label_curves(labels_w, mask_w)
        labels_1, mask_1 = self.mixed_pseudo_labels(labels_w, confidence_w, boxes_1, partner_1)
        labels_2, mask_2 = self.mixed_pseudo_labels(labels_w, confidence_w, boxes_2, partner_2)
        self.keep_cutmix_partner(data_unlabeled, labels_w, confidence_w)
        l_s1 = self.unsup_loss_of(logits_s1, labels_1, mask_1)
        l_s2 = self.unsup_loss_of(logits_s2, labels_2, mask_2)
        l_fp = self.unsup_loss_of(logits_fp[0], labels_w, mask_w) if use_fp else torch.zeros((), device=sup.device)
        w = self.current_unsup_weight()
        unsup = self.image_weight * 0.5 * (l_s1 + l_s2) + self.feature_weight * l_fp
        total = sup + w * unsup
        return total, total, {"sup_losses": sup.item(), "unsup_losses": (0.5 * (l_s1 + l_s2)).item(),
                              "fp_losses": l_fp.item(), "confident_fraction": confident,
                              "pseudo_label_foreground": foreground}


class nnUNetTrainerUniMatch_noFP(nnUNetTrainerUniMatch):
    """Ablation: the dual-stream image perturbations alone (two strong views, weight 1; no feature perturbation, so
    no perturbed rows are decoded)."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.feature_weight = 0.0
        self.image_weight = 1.0


class nnUNetTrainerUniMatch_ce(nnUNetTrainerUniMatch):
    """The default (the paper's per-voxel CE over the confident voxels) under its explicit name, the trainer of the
    benchmarks' ``unimatch_ce`` runs: it stays the CE whatever the default becomes. Chosen on ACDC's validation
    patients (draw 0, seed 0, 3 labeled patients): 60.54 validation Dice against the soft Dice's 25.73 and
    labeled-only's 43.85."""
    pinned_unsup_loss = "ce"


class nnUNetTrainerUniMatch_dice(nnUNetTrainerUniMatch):
    """UniMatch's medical code's unlabeled loss: the soft Dice over the confident voxels (the default until
    2026-12-06; the benchmarks' ``unimatch`` runs, whose records name ``nnUNetTrainerUniMatch``). Measured: +6.54
    on ``hippocampus5-cpu`` (3 seeds, its test cases); on ACDC (draw 0, seed 0) it collapses: 92-99 % of the
    weak-view voxels pass tau = 0.95 from epoch 4 on and ~1 % of them are a structure, the myocardium's validation
    pseudo Dice falls from 0.42 (epoch 12) to 0.00-0.04, test 31.57 against labeled-only's 54.10."""
    pinned_unsup_loss = "dice"


UNIMATCH_VARIANTS = add_family_variants(nnUNetTrainerUniMatch, nnUNetTrainerUniMatch_noFP, nnUNetTrainerUniMatch_ce,
                                        nnUNetTrainerUniMatch_dice)
