"""nnUNetTrainerDTC: dual-task consistency (Luo, Chen, Song, Wang, AAAI 2021).

The planned nnU-Net plus a level-set head: a 1x1 convolution + tanh on the last (full-resolution) decoder features
regresses one signed distance map per foreground class (:class:`~nnunet_semi.networks.feature_head.DecoderFeatureHead`:
the planned network is wrapped, its decoder features captured by a forward hook; nnU-Net's code is untouched).
Sec. 3, eq. 1-5 (the SDF, T^{-1} and L_DTC live in :mod:`nnunet_semi.losses.dtc`)::

    L_Seg = l_sup(f_1(x), y)                            labeled images                               (eq. 5)
    L_LSF = MSE(f_2(x), T(y))                           labeled images, T(y) normalised to [-1, 1]   (eq. 5)
    L_DTC = MSE(f_1(x), sigmoid(-k f_2(x))), k = 1500   labeled + unlabeled images                   (eq. 3-4)
    L     = L_Seg + beta L_LSF + lambda_d(t) L_DTC,  beta = 0.3,  lambda_d(t) = 1.0 exp(-5 (1 - t/t_max)^2)

Where nnU-Net's setting differs from the paper (documented, switchable where it matters):

* the paper's network is binary (a sigmoid segmentation map and one SDF); here nnU-Net's softmax head stays and the
  SDF head has one channel per foreground class: f_1 for class c is the softmax probability of class c (for two
  classes exactly the paper's sigmoid of the logit difference);
* ``l_sup`` is nnU-Net's Dice + CE with deep supervision (the paper: CE + Dice); L_LSF and L_DTC use the
  full-resolution outputs;
* lambda_d ramps up over the whole training (t_max = ``num_epochs``, per epoch; ``dtc_rampup_epochs``);
* ground-truth SDFs of patches without foreground are +1 (outside everywhere) instead of the released code's 0;
  distances are in voxels, computed on the CPU every step with SciPy (a few 10 ms per 3D patch);
* optimisation is nnU-Net's (SGD, poly schedule, gradient norm clipped at 12).

Inference (validation, ``nnUNetv2_predict``): the segmentation head f_1 (the paper evaluates it; the SDF head is
training-only and skipped in eval mode). Datasets with an ignore label or regions are not supported (no SDF).

Equation numbers follow our reading of the published paper (cited above); the equations are written out in full here
so that they can be checked against it.
"""
import torch

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager

from nnunet_semi.losses.dtc import class_signed_distance_maps, dual_task_consistency
from nnunet_semi.networks.feature_head import DecoderFeatureHead, sdf_head
from nnunet_semi.networks.outputs import full_resolution
from nnunet_semi.training.budgets import add_family_variants
from nnunet_semi.training.semi_base import nnUNetTrainerSemiSupervised


class nnUNetTrainerDTC(nnUNetTrainerSemiSupervised):
    extra_curves = {
        "sup_losses": "L_Seg (Dice+CE)",
        "lsf_losses": "L_LSF (SDF regression MSE)",
        "dtc_losses": "L_DTC (dual-task consistency)",
    }

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.dtc_beta = 0.3  # weight of L_LSF (paper)
        self.dtc_weight = 1.0  # lambda_d's final value (paper)
        self.dtc_rampup_epochs = None  # None = the whole training
        self.dtc_k = 1500.0  # k of T^{-1} (paper)

    def initialize(self):
        if self.label_manager.ignore_label is not None:
            raise NotImplementedError(f"nnUNetTrainerDTC: dataset.json of {self.plans_manager.dataset_name} has an "
                                      f"ignore label; signed distance maps need fully labeled images. Fix: use a "
                                      f"dataset without 'ignore' or another trainer.")
        super().initialize()

    @staticmethod
    def build_network_architecture(plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                                   num_input_channels: int, num_output_channels: int,
                                   enable_deep_supervision: bool = True) -> DecoderFeatureHead:
        """The planned network + an SDF head with one tanh channel per foreground class."""
        net = nnUNetTrainer.build_network_architecture(plans_manager, configuration_manager, num_input_channels,
                                                       num_output_channels, enable_deep_supervision)
        last = net.decoder.seg_layers[-1]
        return DecoderFeatureHead(net, sdf_head(type(last), last.in_channels, num_output_channels - 1))

    def current_dtc_weight(self) -> float:
        return self.epoch_rampup(self.dtc_weight, self.dtc_rampup_epochs)

    def compute_losses(self, data, target, data_unlabeled):
        (segmentation, sdf), ((segmentation_l, _), (sdf_l, _)) = self.forward_joint(data, data_unlabeled)
        sup = self.loss(segmentation_l, target)

        foreground = self.label_manager.foreground_labels
        sdf_target = class_signed_distance_maps(full_resolution(target), foreground)
        lsf = torch.mean((sdf_l.float() - sdf_target) ** 2)
        probs = torch.softmax(full_resolution(segmentation).float(), 1)[:, foreground]
        dtc = dual_task_consistency(probs, sdf, self.dtc_k)

        loss = sup + self.dtc_beta * lsf + self.current_dtc_weight() * dtc
        curves = {"sup_losses": sup.item(), "lsf_losses": lsf.item(), "dtc_losses": dtc.item()}
        return loss, loss, curves


DTC_VARIANTS = add_family_variants(nnUNetTrainerDTC)
