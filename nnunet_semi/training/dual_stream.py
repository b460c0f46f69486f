"""nnUNetTrainerDualStreamCL: dual-stream error correction + prototype contrast (Karimijafarbigloo et al.).

Karimijafarbigloo, Azad, Velichko, Bagci, Merhof, "Leveraging unlabeled data for 3D medical image segmentation through
self-supervised contrastive learning", arXiv:2311.12617 (2023), Sec. 2 (losses in
:mod:`nnunet_semi.losses.dual_stream`). Two subnetworks of different architecture, A = the planned nnU-Net
(PlainConvUNet) and B = a residual-encoder UNet with the same stages, features, kernels and strides, see every step b
labeled and b unlabeled images::

    L_s   = l_ce + Dice on labeled images, for A and for B                                        (eq. 1)
    L_u   = l_ce + Dice on reliable voxels of the pseudo-labels, + L_reg                           (eq. 2)
    L     = L_s + lambda_u L_u + lambda_c L_c                                                      (eq. 3)

* pseudo-labels: argmax of the subnetwork with the lower L_s in this step (Fig. 1); reliable voxels: all but the
  ``unreliable_fraction`` of highest entropy (eq. 2, U2PL's percentile rule);
* L_reg (eq. 4-5): L1 between the two softmax outputs on M_diff, the voxels where both are confident above T but
  disagree; T rises linearly from ``confidence_threshold_start`` to ``_end`` over training;
* L_c (eq. 6-7): per subnetwork, its last decoder stage features (full resolution, input of the final 1x1
  segmentation layer, read with a forward hook), L2-normalised; prototypes from the reliable voxels, unreliable
  voxels pulled to their pseudo-label class prototype, prototypes pushed apart;
* lambda_u = 1, lambda_c = 0.1 e^{4 (1 - t/t_max)^2} as printed (t = iteration; ``lambda_c_exponent = -4`` for the
  rising reading), ablations ``use_reg`` / ``use_contrastive`` (trainers ``..._noReg`` / ``..._noCon``); ``_gate``
  (not the paper's) holds L_u, L_reg and L_c back until the labeled batches' Dice of every class reaches 0.5.

Where nnU-Net's setting differs from the paper (documented, switchable where it matters):

* subnetworks: the paper pairs V-Net and a ResNet-34 UNet; here the planned PlainConvUNet and a
  ResidualEncoderUNet built from the same plans (one BasicBlock of 2 convolutions per planned pair of convolutions;
  a ResidualEncoderUNet plan gets a PlainConvUNet partner instead);
* L_s is nnU-Net's Dice + CE with deep supervision; L_u is nnU-Net's Dice + CE (ignore value on unreliable voxels)
  on the full-resolution output; L_reg and L_c use the full-resolution output / features only;
* the paper leaves open which subnetworks learn from L_u and L_c; both do here (``unsup_on_source = False``
  trains only the other subnetwork with L_u);
* L_reg is the mean over M_diff voxels instead of eq. 5's sum (scale-free; see the losses module;
  ``reg_reduction = "mean"``, the sum over the batch's voxel count, is proportional to eq. 5: ``_gate_regMean``);
* optimisation is nnU-Net's (SGD 0.01, Nesterov momentum 0.99, weight decay 3e-5, poly schedule, 1000 x 250
  iterations), not the paper's SGD 0.01 / momentum 0.9 / weight decay 1e-4 with lr / 10 every 2500 of 6000
  iterations. As in CPS the two subnetworks share no parameters and we back-propagate the sum of their objectives,
  so that each receives nnU-Net's supervised gradient; the logged training loss is eq. 3 with L_s, L_u, L_c
  averaged over the two subnetworks. Gradients are clipped per subnetwork (nnU-Net's norm 12);
* the pseudo-label source is chosen per process (DDP ranks may differ; the Dice part of L_s is global).

Schedules depend only on ``t = current_epoch * num_iterations_per_epoch + iteration``, with the iteration counter
reset at every epoch start, so an interrupted run resumes exactly without extra checkpoint state.
Inference (validation, ``nnUNetv2_predict``) uses the mean of the two subnetworks' softmax outputs.
"""
import copy
from functools import partial

import torch

from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager

from nnunet_semi.losses.dual_stream import (confident_disagreement_mask, disagreement_l1_loss, prototype_loss,
                                            pseudo_label_source, reliable_mask)
from nnunet_semi.networks.dual import DualNetwork, unwrap
from nnunet_semi.networks.outputs import full_resolution
from nnunet_semi.schedules import confidence_threshold, contrastive_weight
from nnunet_semi.training.budgets import add_family_variants
from nnunet_semi.training.semi_base import GatedUnlabeledTerm, nnUNetTrainerSemiSupervised

ARCHITECTURES = "dynamic_network_architectures.architectures.unet."
PLAIN, RESIDUAL = "PlainConvUNet", "ResidualEncoderUNet"


def partner_architecture(arch_class_name: str, arch_kwargs: dict):
    """The second subnetwork's ``(class name, kwargs)``: a ResidualEncoderUNet for a PlainConvUNet plan (the
    same stages, features, kernels, strides; ``ceil(n_conv / 2)`` residual blocks of 2 convolutions per stage) and
    a PlainConvUNet (2 convolutions per stage, nnU-Net's default) for a ResidualEncoderUNet plan."""
    kwargs = copy.deepcopy(dict(arch_kwargs))
    name = arch_class_name.split(".")[-1]
    if name == PLAIN:
        kwargs.pop("nonlin_first", None)
        kwargs["n_blocks_per_stage"] = [max(1, (n + 1) // 2) for n in _per_stage(kwargs.pop("n_conv_per_stage"),
                                                                                 kwargs["n_stages"])]
        return ARCHITECTURES + RESIDUAL, kwargs
    if name == RESIDUAL:
        for key in ("n_blocks_per_stage", "block", "bottleneck_channels", "stem_channels"):
            kwargs.pop(key, None)
        kwargs["n_conv_per_stage"] = [2] * kwargs["n_stages"]
        return ARCHITECTURES + PLAIN, kwargs
    raise NotImplementedError(f"nnUNetTrainerDualStreamCL pairs a {PLAIN} with a {RESIDUAL}; the plans use "
                              f"{arch_class_name}. Fix: plan with nnU-Net's default or ResEnc planner.")


def _per_stage(value, n_stages: int):
    return [value] * n_stages if isinstance(value, int) else list(value)


def _keep_output(store: dict, index: int, module, inputs, output) -> None:
    """Forward hook: keep the output of a decoder stage (training mode only; eval/inference keeps nothing)."""
    if module.training:
        store[index] = output


class nnUNetTrainerDualStreamCL(nnUNetTrainerSemiSupervised):
    extra_curves = {
        "sup_losses": "L_s (supervised)",
        "unsup_losses": "L_u (pseudo-labels, reliable voxels)",
        "reg_losses": "L_reg (M_diff L1)",
        "contrastive_losses": "L_c (prototypes)",
        "mdiff_fraction": "M_diff voxel fraction",
        "source_a_fraction": "pseudo-labels from A (planned network) fraction",
    }

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.lambda_u = 1.0  # eq. 3 (paper value)
        self.lambda_c_base = 0.1  # lambda_c = base * e^{exponent (1 - t/t_max)^2} (Sec. 3.1, as printed)
        self.lambda_c_exponent = 4.0  # -4.0: rising ramp-up reading
        self.confidence_threshold_start = 0.6  # T of eq. 4, linear schedule (paper: "dynamic", unspecified)
        self.confidence_threshold_end = 0.9
        self.unreliable_fraction = 0.2  # eq. 2 entropy filter: highest-entropy fraction of voxels per batch
        self.prototype_temperature = 1.0  # eq. 7 (paper: none)
        self.prototype_separation_weight = 1.0
        self.use_reg = True  # ablation switch: L_reg (eq. 4-5)
        # L_reg's normalisation (disagreement_l1_loss): "masked_mean" = mean over the M_diff voxels; "mean" = eq. 5's
        # sum divided by the batch's (fixed) voxel count, so proportional to eq. 5; "sum" = eq. 5 verbatim
        self.reg_reduction = "masked_mean"
        self.use_contrastive = True  # ablation switch: L_c (eq. 6-7)
        self.unsup_on_source = True  # L_u also trains the pseudo-label source (self-training on reliable voxels)
        self._decoder_features = {}

    @staticmethod
    def build_network_architecture(plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                                   num_input_channels: int, num_output_channels: int,
                                   enable_deep_supervision: bool = True) -> DualNetwork:
        """A = the planned architecture, B = :func:`partner_architecture`; each randomly initialised."""
        planned = configuration_manager.network_arch_class_name
        partner, partner_kwargs = partner_architecture(planned, configuration_manager.network_arch_init_kwargs)
        req_import = configuration_manager.network_arch_init_kwargs_req_import
        nets = [get_network_from_plans(name, kwargs, req_import, num_input_channels, num_output_channels,
                                       allow_init=True, deep_supervision=enable_deep_supervision)
                for name, kwargs in ((planned, configuration_manager.network_arch_init_kwargs),
                                     (partner, partner_kwargs))]
        return DualNetwork(*nets)

    def initialize(self):
        super().initialize()
        # L_u: nnU-Net's Dice + CE; unreliable voxels carry the ignore value num_segmentation_heads (no class)
        self.unsup_ignore_value = self.label_manager.num_segmentation_heads
        self.loss_unlabeled = self.dice_ce_ignoring(self.unsup_ignore_value)
        # the hooks are on the modules inside any DDP / torch.compile wrapper (compile traces at the first call)
        for index, net in enumerate(unwrap(self.network).members):
            net.decoder.stages[-1].register_forward_hook(partial(_keep_output, self._decoder_features, index))

    def compute_losses(self, data, target, data_unlabeled):
        t, t_max = self.global_step, self.num_epochs * self.num_iterations_per_epoch  # schedules of lambda_c, T
        n_labeled = data.shape[0]
        _, splits = self.forward_joint(data, data_unlabeled)
        features = [self._decoder_features.pop(i)[n_labeled:] for i in range(2)]
        sup = [self.loss(out_l, target) for out_l, _ in splits]  # eq. 1, per subnetwork
        self.observe_labeled([out_l for out_l, _ in splits], target)  # the gate's input (nothing without a gate)
        gate = self.unsup_gate_factor()  # 1 without a gate (``unsup_gate_dice`` None, the paper's setting)
        logits_u = [full_resolution(out_u) for _, out_u in splits]
        probs_u = [torch.softmax(logits.float(), 1) for logits in logits_u]

        source = pseudo_label_source([s.item() for s in sup])
        with torch.no_grad():
            pseudo = probs_u[source].argmax(1)
            reliable = reliable_mask(probs_u[source], self.unreliable_fraction)
            target_u = torch.where(reliable, pseudo, self.unsup_ignore_value)[:, None]
        unsup = [self.loss_unlabeled(logits, target_u) if (k != source or self.unsup_on_source)
                 else logits.sum() * 0.0 for k, logits in enumerate(logits_u)]  # eq. 2 without L_reg

        zero = probs_u[0].sum() * 0.0
        m_diff = confident_disagreement_mask(*probs_u, confidence_threshold(
            t, t_max, self.confidence_threshold_start, self.confidence_threshold_end))
        reg = disagreement_l1_loss(*probs_u, m_diff, self.reg_reduction) if self.use_reg else zero  # eq. 5
        if self.use_contrastive:
            contrastive = [prototype_loss(f, pseudo, reliable, probs_u[0].shape[1], self.prototype_temperature,
                                          self.prototype_separation_weight)[0] for f in features]  # eq. 6-7
        else:
            contrastive = [zero, zero]
        lambda_u = self.lambda_u * gate
        lambda_c = contrastive_weight(t, t_max, self.lambda_c_base, self.lambda_c_exponent) * gate

        per_network = [s + lambda_u * u + lambda_c * c for s, u, c in zip(sup, unsup, contrastive)]
        loss = per_network[0] + per_network[1] + lambda_u * reg  # L_reg's gradient reaches both once
        l_s, l_u, l_c = 0.5 * (sup[0] + sup[1]), 0.5 * (unsup[0] + unsup[1]), 0.5 * (contrastive[0] + contrastive[1])
        loss_logged = l_s + lambda_u * (l_u + reg) + lambda_c * l_c  # eq. 3 with eq. 2's L_reg inside L_u
        curves = {"sup_losses": l_s.item(), "unsup_losses": l_u.item(), "reg_losses": reg.item(),
                  "contrastive_losses": l_c.item(), "mdiff_fraction": m_diff.float().mean().item(),
                  "source_a_fraction": float(source == 0), **self.gate_curves()}
        return loss, loss_logged, curves


class nnUNetTrainerDualStreamCL_noReg(nnUNetTrainerDualStreamCL):
    """Ablation (Sec. 3.3): without the consistency regularisation L_reg (eq. 4-5)."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.use_reg = False


class nnUNetTrainerDualStreamCL_noCon(nnUNetTrainerDualStreamCL):
    """Ablation (Sec. 3.3): without the contrastive loss L_c (eq. 6-7)."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.use_contrastive = False


class nnUNetTrainerDualStreamCL_gate(GatedUnlabeledTerm, nnUNetTrainerDualStreamCL):
    """Candidate, rejected on validation cases (3d_fullres Hippocampus, seed 0: 74.90 against labeled-only's 81.59;
    not taken to the test cases): L_u, L_reg and L_c start only once the two subnetworks together
    segment every foreground class of their labeled training batches with Dice >= 0.5 (moving average over ~50
    steps), then ramp up over 10 % of the steps (``unsup_gate_dice = 0.5``, the gate of ``nnUNetTrainerCPS_gate``;
    :class:`~nnunet_semi.schedules.LabeledDiceGate`). Why: in 3d_fullres on Hippocampus (5 labeled cases) the
    paper's setting trains from the first step on pseudo-labels of subnetworks that predict no structure yet, so
    80 % of the unlabeled voxels are "reliable" background; its validation pseudo Dice stays 0 for all 40 epochs
    (seed 0; labeled-only reaches ~0.5 by epoch 8), L_c is 0 throughout (no foreground prototype), and it loses
    -56.72 test Dice against labeled-only."""


class nnUNetTrainerDualStreamCL_gate_noReg(GatedUnlabeledTerm, nnUNetTrainerDualStreamCL_noReg):
    """Candidate (to be decided on validation cases): ``_gate`` without the consistency regularisation L_reg
    (eq. 4-5; the paper's own ablation ``_noReg``, Sec. 3.3). Why: with ``_gate`` in 3d_fullres on Hippocampus
    (seed 0, validation 74.90 against labeled-only's 81.59) the structures' validation pseudo Dice falls from
    0.77 / 0.81 to 0.35-0.67 once the gate opens, while L_u is 0.001-0.01 and L_c mostly 0; L_reg is 0.3-1.5,
    concentrated on the <= 0.3 % of the voxels where the two subnetworks confidently disagree, and is the likeliest
    cause."""


class nnUNetTrainerDualStreamCL_gate_regMean(nnUNetTrainerDualStreamCL_gate):
    """Candidate (to be decided on validation cases): ``_gate`` with L_reg normalised as eq. 5's sum is, up to a
    constant: divided by the number of voxels of the unlabeled batch (``reg_reduction = "mean"``) instead of by the
    number of M_diff voxels. Why: the mean over M_diff gives each confidently disagreeing voxel the weight
    1 / |M_diff|, ~300 times a voxel's weight in the CE when M_diff holds 0.3 % of the voxels, and that weight grows
    as the subnetworks come to agree; eq. 5 weighs every voxel of M_diff the same, however few they are. With
    ``_gate`` the structures' validation pseudo Dice fell once the gate opened, while this L_reg (0.3-1.5) was the
    largest unlabeled term. ``_gate_noReg`` removes L_reg; this keeps it, each M_diff voxel weighted as the CE weighs
    any voxel (eq. 5's sum times 1 / N; the sum itself, N times larger, is ``reg_reduction = "sum"``)."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.reg_reduction = "mean"


DUAL_STREAM_VARIANTS = add_family_variants(nnUNetTrainerDualStreamCL, nnUNetTrainerDualStreamCL_noReg,
                                           nnUNetTrainerDualStreamCL_noCon, nnUNetTrainerDualStreamCL_gate,
                                           nnUNetTrainerDualStreamCL_gate_noReg,
                                           nnUNetTrainerDualStreamCL_gate_regMean)
