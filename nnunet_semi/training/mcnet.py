"""nnUNetTrainerMCNet: mutual consistency training (Wu et al., MICCAI 2021, "Semi-supervised left atrium
segmentation with mutual consistency training").

One shared encoder and two decoders that differ only in up-sampling, decoder A with transposed convolutions (the
planned nnU-Net decoder) and decoder B with trilinear / bilinear interpolation + convolution
(:class:`~nnunet_semi.networks.two_decoder.TwoDecoderNetwork`, the network IDEAL uses too). Sec. 2, eq. 1-3::

    sPL_k = P_k^{1/T} / (P_k^{1/T} + (1 - P_k)^{1/T}),  T = 0.1                               (eq. 1)
    L_c   = MSE(P_A, sPL_B) + MSE(P_B, sPL_A)              labeled + unlabeled images            (eq. 2)
    L     = l_sup(P_A, Y) + l_sup(P_B, Y) + lambda(t) L_c,  lambda(t) = 0.1 exp(-5 (1 - t/t_max)^2)  (eq. 3)

The sharpening and ``L_c`` live in :mod:`nnunet_semi.losses.sharpening` (per softmax channel for multi-class
data, as MC-Net's released multi-class code; ``mcnet_renormalise = True`` renormalises over the classes).

Where nnU-Net's setting differs from the paper (documented, switchable where it matters):

* ``l_sup`` is nnU-Net's Dice + CE with deep supervision per decoder instead of the paper's Dice; ``L_c`` uses the
  full-resolution outputs;
* lambda = 0.1 (paper) ramps up over the whole training by default (t_max = ``num_epochs``, per epoch;
  ``mcnet_rampup_epochs`` sets another length). The later MC-Net+ code uses lambda = 1, a 0.5 weight on the Dice
  term and a ramp-up over 40 % of its iterations;
* the sharpened pseudo-labels are targets without gradient (``mcnet_detach_pseudo_labels``; the released code lets
  gradients flow through them: set it to False);
* optimisation is nnU-Net's (SGD, poly schedule, gradient norm 12 over the whole network). Back-propagated: eq. 3;
  logged as training loss: its half (per decoder, comparable to nnU-Net's validation loss of one decoder).

Inference (validation, ``nnUNetv2_predict``): decoder A alone, the network MC-Net reports ("decoder 1" in its
evaluation code); ``mcnet_inference_decoder = None`` (class attribute) predicts with the softmax mean of both.

Equation numbers follow our reading of the published paper (cited above); the equations are written out in full here
so that they can be checked against it.
"""
from typing import Optional

import torch

from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager

from nnunet_semi.losses.cps import pseudo_label_agreement
from nnunet_semi.losses.sharpening import mutual_consistency
from nnunet_semi.networks.outputs import full_resolution
from nnunet_semi.networks.two_decoder import TwoDecoderNetwork, build_two_decoder_network
from nnunet_semi.training.budgets import add_family_variants
from nnunet_semi.training.semi_base import nnUNetTrainerSemiSupervised


class nnUNetTrainerMCNet(nnUNetTrainerSemiSupervised):
    #: decoder used by validation and nnUNetv2_predict: 1 (A, transposed convolutions; paper), 2, or None (mean)
    mcnet_inference_decoder: Optional[int] = 1
    extra_curves = {
        "sup_losses": "labeled Dice+CE (mean of decoders A, B)",
        "mc_losses": "L_c mutual consistency (MSE to sharpened pseudo-labels)",
        "pseudo_label_agreement": "argmax agreement decoder A/B (unlabeled)",
    }

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.mcnet_weight = 0.1  # lambda's final value (paper)
        self.mcnet_rampup_epochs = None  # None = the whole training
        self.mcnet_temperature = 0.1  # T of eq. 1 (paper)
        self.mcnet_detach_pseudo_labels = True
        self.mcnet_renormalise = False

    @classmethod
    def build_network_architecture(cls, plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                                   num_input_channels: int, num_output_channels: int,
                                   enable_deep_supervision: bool = True) -> TwoDecoderNetwork:
        # a classmethod (nnU-Net calls it on the class or the instance like its static method) so that the
        # inference decoder is part of the architecture nnUNetv2_predict builds
        return build_two_decoder_network(plans_manager, configuration_manager, num_input_channels,
                                         num_output_channels, enable_deep_supervision,
                                         inference_decoder=cls.mcnet_inference_decoder)

    def current_mcnet_weight(self) -> float:
        return self.epoch_rampup(self.mcnet_weight, self.mcnet_rampup_epochs)

    def compute_losses(self, data, target, data_unlabeled):
        (out_a, out_b), ((out_a_l, out_a_u), (out_b_l, out_b_u)) = self.forward_joint(data, data_unlabeled)
        sup_a, sup_b = self.loss(out_a_l, target), self.loss(out_b_l, target)
        logits_a, logits_b = full_resolution(out_a), full_resolution(out_b)
        mc_a, mc_b = mutual_consistency(torch.softmax(logits_a.float(), 1), torch.softmax(logits_b.float(), 1),
                                        self.mcnet_temperature, self.mcnet_detach_pseudo_labels,
                                        self.mcnet_renormalise)
        loss = sup_a + sup_b + self.current_mcnet_weight() * (mc_a + mc_b)
        agreement = pseudo_label_agreement(full_resolution(out_a_u), full_resolution(out_b_u))
        curves = {"sup_losses": (0.5 * (sup_a + sup_b)).item(), "mc_losses": (mc_a + mc_b).item(),
                  "pseudo_label_agreement": agreement.item()}
        return loss, 0.5 * loss, curves


MCNET_VARIANTS = add_family_variants(nnUNetTrainerMCNet)
