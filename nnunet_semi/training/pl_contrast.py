"""nnUNetTrainerPLContrast: pseudo-label based local contrastive joint training (Chaitanya et al. 2023).

Chaitanya, Erdil, Karani, Konukoglu, "Local contrastive loss with pseudo-label based self-training for
semi-supervised medical image segmentation", Medical Image Analysis 2023, arXiv:2112.09645, Sec. III and IV-D/E.
One network: the planned nnU-Net U-Net
(``c_theta`` + segmentation head ``g_xi``) plus a contrastive head ``h_phi`` (two 1x1 convolutions, 16 channels,
on the last decoder stage, :mod:`nnunet_semi.networks.contrastive_head`)::

    stage 1 (eq. 1):  L_seg on labeled patches only                                   t <  S
    stage 2 (eq. 2):  L_seg on labeled patches only + lambda_cont * L_cont            t >= S
                      L_cont (eq. 3-4) on labeled (true labels) and unlabeled (pseudo-label) patches,
                      intra- or inter-image matching (:mod:`nnunet_semi.losses.local_contrastive`)

Pseudo-labels: at each refresh iteration ``t_k = S + k P`` (``k < num_pseudo_label_steps``) the current network is
copied into a frozen *pseudo-labeler* (eval mode, no gradient); from then on every sampled (augmented) unlabeled
patch is labelled with the pseudo-labeler's argmax. This equals labelling each unlabeled volume once per refresh
and transforming the pseudo-label with the image (the paper), except that a patch is predicted on its own (no
sliding window: less context at the patch border). It is DDP-safe (every rank labels its own patches with
identical pseudo-labeler weights) and the pseudo-labeler's weights, its refresh iteration and the list of
refreshes are checkpointed, so ``--c`` resumes exactly. Cost: one extra forward pass (no gradient) per step.

Schedule: the paper trains 5000 supervised iterations, then 3 pseudo-labeling steps of P = 5000 joint iterations
(Sec. IV-D). Mapped proportionally onto nnU-Net's ``num_epochs x num_iterations_per_epoch`` = 1000 x 250:
``S = stage1_fraction * total`` (0.25 -> 62,500 iterations = 250 epochs) and ``P = (total - S) //
num_pseudo_label_steps`` (62,500): refreshes at epochs 250, 500, 750. ``stage1_iterations`` /
``pseudo_label_interval`` set them in iterations directly.

Defaults are the paper's: ``lambda_cont = 0.1``, ``tau = 0.1``, ``|S~_c| = 3``, 16 channels, pseudo-labels only in
the contrastive loss, inter-image matching (Tables II/III's "Proposed (inter)"; ``nnUNetTrainerPLContrast_intra``
for intra). Ablations / options:

* ``pseudo_labels_in_seg_loss = True`` (``nnUNetTrainerPLContrast_plInSeg``, Table II row 3): the unlabeled
  patches also enter L_seg with their pseudo-labels (downsampled per deep-supervision scale like nnU-Net's targets);
* ``pseudo_label_quality_threshold`` (Table VII, default 0 = off): an unlabeled patch joins L_cont only if the
  foreground Dice between the pseudo-labeler's argmax of the patch and of its mirrored copy (mirrored back)
  reaches the threshold. The paper compares two masks under "rotation, translation, scaling, etc." per volume;
  mirroring along every spatial axis is an exactly invertible transform for a patch.

Where nnU-Net's setting differs from the paper (documented):

* L_seg is nnU-Net's Dice + CE with deep supervision (paper: Dice); optimisation is nnU-Net's SGD + poly schedule
  over 1000 x 250 iterations (paper: Adam 1e-3, 20,000 iterations, batch 20 = 10 labeled + 10 unlabeled); here the
  batch is nnU-Net's labeled batch plus ``unlabeled_batch_ratio`` (1) x as many unlabeled patches;
* the contrastive loss sees nnU-Net's augmented patches of the same forward pass as the segmentation loss (the
  paper applies brightness/contrast transforms to the contrastive batch; nnU-Net's augmentation includes them);
* ``h_phi`` uses the planned normalisation (instance norm) instead of batch norm; stage 1 trains the head through
  a zero-weighted term only (``0 * z.sum()``) so that DDP finds every parameter used: its weights stay random, as
  the paper's ``phi`` at the start of stage 2 (nnU-Net's weight decay aside);
* under DDP the inter-image candidates ``x'`` are the class means of all ranks (gathered), each rank averages over
  its own anchor images; nnU-Net's Dice is global (batch dice) as usual.

Inference (validation, ``nnUNetv2_predict``): the U-Net's own forward, which returns the segmentation only; the
head's weights are in ``network_weights`` and load strictly because ``build_network_architecture`` attaches it.
"""
import copy
from typing import List, Tuple

import torch
import torch.nn.functional as F

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager

from nnunet_semi.losses.local_contrastive import IGNORE, local_contrastive_loss
from nnunet_semi.networks.contrastive_head import attach_contrastive_head, pop_contrastive_features
from nnunet_semi.networks.dual import unwrap
from nnunet_semi.networks.outputs import full_resolution
from nnunet_semi.training.budgets import add_family_variants
from nnunet_semi.training.pretrained_init import PretrainedInitialisation
from nnunet_semi.training.semi_base import nnUNetTrainerSemiSupervised


def pseudo_label_schedule(total_iterations: int, stage1_fraction: float = 0.25, num_steps: int = 3,
                          stage1_iterations: int = None, interval: int = None) -> Tuple[int, List[int]]:
    """``(S, [t_0, ..., t_{n-1}])``: the end of stage 1 and the iterations at which pseudo-labels are
    (re-)estimated, ``t_k = S + k P`` with ``S = int(total * stage1_fraction)`` and ``P = (total - S) // n`` unless
    given explicitly."""
    if num_steps < 1:
        raise ValueError(f"num_pseudo_label_steps must be >= 1, got {num_steps}")
    s = int(total_iterations * stage1_fraction) if stage1_iterations is None else int(stage1_iterations)
    p = max(1, (total_iterations - s) // num_steps) if interval is None else int(interval)
    if s < 0 or p < 1:
        raise ValueError(f"stage 1 must last >= 0 iterations and the pseudo-label interval >= 1, got {s} and {p}")
    return s, [s + k * p for k in range(num_steps)]


def foreground_dice(a: torch.Tensor, b: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per image mean Dice over the foreground classes present in ``a`` or ``b`` (1 where there is none)."""
    dims = tuple(range(1, a.ndim))
    scores = []
    for c in range(1, num_classes):
        x, y = a == c, b == c
        denom = (x.sum(dims) + y.sum(dims)).double()
        scores.append(torch.where(denom > 0, 2 * (x & y).sum(dims).double() / denom.clamp(min=1),
                                  torch.full_like(denom, float("nan"))))
    stacked = torch.stack(scores, 1)
    return torch.nan_to_num(stacked.nanmean(1), nan=1.0)


class nnUNetTrainerPLContrast(nnUNetTrainerSemiSupervised):
    extra_curves = {
        "sup_losses": "L_seg (labeled)",
        "contrastive_losses": "L_cont (eq. 3-4, 0 in stage 1)",
        "pseudo_label_accepted": "unlabeled patches in L_cont (fraction)",
        "joint_stage": "stage 2 fraction of the epoch's iterations",
    }
    #: D, the channels of h_phi's output (paper: 16); a class attribute because the predictor builds the network
    #: through the static-like build_network_architecture
    contrastive_dim = 16

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.lambda_cont = 0.1  # eq. 2 (paper)
        self.temperature = 0.1  # tau of eq. 4 (paper)
        self.pixels_per_class = 3  # |S~_c(x)| (paper)
        self.contrastive_mode = "inter"  # "intra" | "inter" (Sec. III)
        self.background_negative = True  # background mean among eq. 4's negatives
        self.pseudo_labels_in_seg_loss = False  # Table II row 3 ablation
        self.pseudo_label_quality_threshold = 0.0  # Table VII; 0 = every pseudo-label is used
        self.stage1_fraction = 0.25  # paper: 5000 of 20,000 iterations
        self.num_pseudo_label_steps = 3  # paper: 3
        self.stage1_iterations = None  # explicit S (iterations); None -> stage1_fraction
        self.pseudo_label_interval = None  # explicit P (iterations); None -> (total - S) // steps
        self.pseudo_labeler = None
        self.pseudo_labeler_iteration = None
        self.pseudo_label_refreshes: List[int] = []

    @classmethod
    def build_network_architecture(cls, plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                                   num_input_channels: int, num_output_channels: int,
                                   enable_deep_supervision: bool = True):
        """The planned U-Net with ``h_phi`` attached (module ``contrastive_head``)."""
        unet = nnUNetTrainer.build_network_architecture(plans_manager, configuration_manager, num_input_channels,
                                                        num_output_channels, enable_deep_supervision)
        return attach_contrastive_head(unet, cls.contrastive_dim)

    # ------------------------------------------------------------------ schedule and pseudo-labeler
    def schedule(self) -> Tuple[int, List[int]]:
        return pseudo_label_schedule(self.num_epochs * self.num_iterations_per_epoch, self.stage1_fraction,
                                     self.num_pseudo_label_steps, self.stage1_iterations,
                                     self.pseudo_label_interval)

    def on_train_start(self):
        super().on_train_start()
        s, refreshes = self.schedule()
        self.print_to_log_file(f"Stage 1 (labeled only): iterations 0..{s - 1}; pseudo-labels (re-)estimated at "
                               f"iterations {refreshes} of {self.num_epochs * self.num_iterations_per_epoch}; "
                               f"contrastive mode {self.contrastive_mode}")

    def _frozen_copy(self) -> torch.nn.Module:
        net = copy.deepcopy(unwrap(self.network))
        net.decoder.deep_supervision = False
        net.eval()
        net.requires_grad_(False)
        return net

    def refresh_pseudo_labeler(self, iteration: int) -> None:
        self.pseudo_labeler = self._frozen_copy()
        self.pseudo_labeler_iteration = iteration
        self.pseudo_label_refreshes.append(iteration)
        self.print_to_log_file(f"Pseudo-labeling step {len(self.pseudo_label_refreshes)}: pseudo-labeler = the "
                               f"network at iteration {iteration}")

    @torch.no_grad()
    def estimate_pseudo_labels(self, data_u: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(argmax pseudo-labels (B, *patch), accepted (B,) bool)`` from the frozen pseudo-labeler."""
        pseudo = self.pseudo_labeler(data_u).argmax(1)
        accepted = torch.ones(data_u.shape[0], dtype=torch.bool, device=data_u.device)
        if self.pseudo_label_quality_threshold > 0:
            axes = tuple(range(2, data_u.ndim))
            mirrored = torch.flip(self.pseudo_labeler(torch.flip(data_u, axes)), axes).argmax(1)
            dice = foreground_dice(pseudo, mirrored, self.label_manager.num_segmentation_heads)
            accepted = dice >= self.pseudo_label_quality_threshold
        return pseudo, accepted

    # ------------------------------------------------------------------ losses
    def _label_map(self, target) -> torch.Tensor:
        """Full-resolution labels ``(B, *patch)`` with nnU-Net's ignore label (if any) mapped to IGNORE."""
        labels = full_resolution(target)[:, 0].long()
        if self.label_manager.has_ignore_label:
            labels = torch.where(labels == self.label_manager.ignore_label, IGNORE, labels)
        return labels

    def contrastive_loss(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """L_cont (eq. 3-4) of features ``z`` against ``labels`` (IGNORE excluded) with this trainer's settings;
        under DDP the inter-image candidates are gathered from every rank."""
        return local_contrastive_loss(z, labels, self.label_manager.num_segmentation_heads,
                                      pixels_per_class=self.pixels_per_class, temperature=self.temperature,
                                      mode=self.contrastive_mode, background_negative=self.background_negative,
                                      gather_distributed=self.is_ddp)

    @staticmethod
    def _downsample_like(labels: torch.Tensor, target) -> List[torch.Tensor]:
        """Pseudo-labels at every target scale (nearest-exact, as nnU-Net downsamples its targets)."""
        targets = target if isinstance(target, (list, tuple)) else [target]
        out = [F.interpolate(labels[:, None].float(), t.shape[2:], mode="nearest-exact").to(t.dtype)
               for t in targets]
        return out if isinstance(target, (list, tuple)) else out[0]

    def compute_losses(self, data, target, data_unlabeled):
        t = self.global_step
        stage1_end, refreshes = self.schedule()
        if t in refreshes:
            self.refresh_pseudo_labeler(t)

        if t < stage1_end:  # eq. 1: labeled patches only
            out = self.network(data)
            z = pop_contrastive_features(unwrap(self.network))
            sup = self.loss(out, target)
            curves = {"sup_losses": sup.item(), "contrastive_losses": 0.0, "pseudo_label_accepted": 0.0,
                      "joint_stage": 0.0}
            return sup + 0.0 * z.sum(), sup, curves

        pseudo, accepted = self.estimate_pseudo_labels(data_unlabeled)
        out, (out_l, _) = self.forward_joint(data, data_unlabeled)
        z = pop_contrastive_features(unwrap(self.network))
        if self.pseudo_labels_in_seg_loss:  # Table II row 3 ablation
            pseudo_target = self._downsample_like(pseudo, target)
            if isinstance(target, (list, tuple)):
                sup = self.loss(out, [torch.cat((a, b)) for a, b in zip(target, pseudo_target)])
            else:
                sup = self.loss(out, torch.cat((target, pseudo_target)))
        else:
            sup = self.loss(out_l, target)  # eq. 2: L_seg on the labeled set only
        labels_u = torch.where(accepted.view(-1, *([1] * (pseudo.ndim - 1))), pseudo, IGNORE)
        l_cont = self.contrastive_loss(z, torch.cat((self._label_map(target), labels_u)))
        loss = sup + self.lambda_cont * l_cont
        curves = {"sup_losses": sup.item(), "contrastive_losses": l_cont.item(),
                  "pseudo_label_accepted": accepted.float().mean().item(), "joint_stage": 1.0}
        return loss, loss, curves

    # ------------------------------------------------------------------ checkpoints
    def extra_checkpoint_state(self) -> dict:
        return {"pseudo_labeler": None if self.pseudo_labeler is None else self.pseudo_labeler.state_dict(),
                "pseudo_labeler_iteration": self.pseudo_labeler_iteration,
                "pseudo_label_refreshes": list(self.pseudo_label_refreshes),
                "iteration": self.current_epoch * self.num_iterations_per_epoch}

    def load_extra_checkpoint_state(self, state: dict) -> None:
        self.pseudo_label_refreshes = list(state["pseudo_label_refreshes"])
        self.pseudo_labeler_iteration = state["pseudo_labeler_iteration"]
        if state["pseudo_labeler"] is None:
            self.pseudo_labeler = None
            return
        self.pseudo_labeler = self._frozen_copy()
        self.pseudo_labeler.load_state_dict(state["pseudo_labeler"])


class nnUNetTrainerPLContrast_intra(nnUNetTrainerPLContrast):
    """Intra-image matching (Sec. III, Table I "Pseudo-labels joint Tr. (intra)")."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.contrastive_mode = "intra"


class nnUNetTrainerPLContrast_plInSeg(nnUNetTrainerPLContrast):
    """Ablation (Table II row 3): pseudo-labels also in the segmentation loss."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.pseudo_labels_in_seg_loss = True


class nnUNetTrainerPLContrastPI(PretrainedInitialisation, nnUNetTrainerPLContrast):
    """Table III "PI. + Proposed method (inter)": starts from the global+local contrastive pretraining of
    Chaitanya et al. 2020 (``nnunet_semi_pretrain -m globallocal``, :mod:`pretraining.global_local`): encoder and
    decoder from the checkpoint, segmentation layers and ``h_phi`` random."""

    pretraining_method = "GlobalLocal"
    pretrained_skip = (".seg_layers.", "contrastive_head.")


class nnUNetTrainerLocalContrastPretrain(nnUNetTrainerPLContrast):
    """Stage 1 of Table II's "Two step Tr. (semi-sup)" (the two-step training of the paper's ref. [26], Sec. V-C):
    the local contrastive loss alone (eq. 3-4 at weight 1; no L_seg), on the labels of every training case.

    Trained on the derived dataset of ``nnunet_semi_self_training`` (the labeled cases plus every unlabeled image
    with its pseudo-label, all in imagesTr/labelsTr), the contrastive loss sees the labeled annotations and the
    pseudo-labels together, as the row specifies. Stage 2 is nnU-Net's supervised training on the same derived
    dataset, started from this checkpoint: ``nnUNetv2_train <derived> C F -tr nnUNetTrainerLabeledOnly
    -pretrained_weights <this run>/checkpoint_final.pth`` (encoder and decoder load, nnU-Net's loader keeps the
    segmentation layers fresh and ignores ``h_phi``). README: "Chaitanya et al. 2023, Table II".

    The segmentation layers are kept in the graph with a zero-weighted term (DDP needs every parameter used) and
    stay untrained, so the final validation of nnU-Net, which would score them, is skipped with a log line.
    Anchors, tau, pixels per class and the matching mode are the joint trainer's (paper) defaults; the loss is
    computed in float32 and gathered across DDP ranks in inter mode like the joint trainer's."""

    uses_unlabeled = False
    extra_curves = {"contrastive_losses": "L_cont (eq. 3-4) on labels + pseudo-labels"}

    def on_train_start(self):
        nnUNetTrainerSemiSupervised.on_train_start(self)  # no stage schedule, no pseudo-labeler
        self.print_to_log_file(f"Two-step stage 1: local contrastive loss only ({self.contrastive_mode} matching, "
                               f"tau {self.temperature}, {self.pixels_per_class} pixels per class) on the labels of "
                               f"every training case")

    def compute_losses(self, data, target, data_unlabeled):
        out = self.network(data)
        z = pop_contrastive_features(unwrap(self.network))
        l_cont = self.contrastive_loss(z, self._label_map(target))
        outputs = out if isinstance(out, (list, tuple)) else [out]
        loss = l_cont + sum(0.0 * o.sum() for o in outputs)  # the segmentation layers: in the graph, untrained
        return loss, l_cont.detach(), {"contrastive_losses": l_cont.item()}

    def perform_actual_validation(self, save_probabilities: bool = False):
        self.print_to_log_file("Two-step stage 1 trains no segmentation head: nnU-Net's final validation is skipped. "
                               "Stage 2: nnUNetv2_train <this dataset> <configuration> <fold> -tr "
                               "nnUNetTrainerLabeledOnly -pretrained_weights <this fold>/checkpoint_final.pth")


PL_CONTRAST_VARIANTS = add_family_variants(nnUNetTrainerPLContrast, nnUNetTrainerPLContrast_intra,
                                           nnUNetTrainerPLContrast_plInSeg, nnUNetTrainerPLContrastPI,
                                           nnUNetTrainerLocalContrastPretrain)
