"""nnUNetTrainerIDEAL: semi-supervised fine-tuning of IDEAL (Basak, Chattopadhyay, Kundu, Nag, Mallipeddi, "IDEAL:
Improved dense local contrastive learning for semi-supervised medical image segmentation", ICASSP 2023,
arXiv:2210.15075; Sec. 2.3).

One shared encoder E (initialised from the IDEAL pretraining, ``nnunet_semi_pretrain -m ideal``) and two decoders
that differ in up-sampling, D_1 with transposed convolutions (the planned decoder) and D_2 with interpolation
followed by a convolution (:class:`~nnunet_semi.networks.two_decoder.TwoDecoderNetwork`, Fig. 2b)::

    L_SSF = CE(p_1, m) + CE(p_2, m)        labeled images                                              (eq. 3)
            CE(p_1, y_2) + CE(p_2, y_1)    unlabeled images, y_k = one-hot argmax of p_k (no gradient)

The unlabeled term is :func:`~nnunet_semi.losses.cps.cross_pseudo_supervision` (the same equation as CPS' eq. 5 up
to its factor 1/2), so this trainer is :class:`~nnunet_semi.training.cps.nnUNetTrainerCPS` on the two-decoder network
with the unlabeled weight 1 (eq. 3 adds both terms unweighted). Where our setting differs from the paper:

* the labeled loss on each decoder is nnU-Net's Dice + CE with deep supervision instead of CE alone (the issue
  allows the Dice term on top); the cross-consistency term uses the full-resolution outputs;
* the paper thresholds sigmoid outputs; with nnU-Net's softmax heads the pseudo-label is the argmax;
* optimisation is nnU-Net's (SGD, poly schedule, gradient norm clipped at 12 over the whole network, since the
  encoder belongs to both streams). Back-propagated: eq. 3 summed over both decoders; logged as training loss:
  its half (the per-decoder mean, comparable to nnU-Net's validation loss of the fused output).

Inference (validation, ``nnUNetv2_predict``) uses the mean of the two decoders' softmax outputs.

The pretrained encoder is found by convention like ``nnUNetTrainerCCMCPS``'s networks:
``$nnUNet_results/<Dataset>/IDEALPretrain__<plans>__<configuration>/fold_<fold>/checkpoint_final.pth``, or the file
named by ``nnUNet_semi_pretrained=<path>``. Only the encoder's weights are loaded; both decoders keep their random
initialisation::

    nnunet_semi_pretrain -d 27 -c 2d -m ideal -f 0
    nnUNetv2_train 27 2d 0 -tr nnUNetTrainerIDEAL
"""
import torch

from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager

from nnunet_semi.networks.two_decoder import TwoDecoderNetwork, build_two_decoder_network
from nnunet_semi.training.budgets import add_family_variants
from nnunet_semi.training.cps import nnUNetTrainerCPS
from nnunet_semi.training.pretrained_init import PretrainedInitialisation

#: keys that the encoder-only initialisation leaves alone (the decoders, their heads included)
DECODER_KEYS = ("decoder_1.", "decoder_2.")


class nnUNetTrainerIDEAL(PretrainedInitialisation, nnUNetTrainerCPS):
    pretraining_method = "IDEAL"
    pretrained_skip = DECODER_KEYS  # encoder-only initialisation
    extra_curves = {
        "sup_losses": "labeled CE+Dice (mean of the two decoders)",
        "cps_losses": "cross-consistency CE (mean of the two decoders)",
        "pseudo_label_agreement": "pseudo-label agreement decoder 1/2 (unlabeled)",
    }

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.cps_weight = 1.0  # eq. 3: the labeled and the unlabeled terms are added unweighted
        self.cps_loss = "ce"  # eq. 3's CE (CPS's Dice default is not measured for IDEAL)

    @staticmethod
    def build_network_architecture(plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                                   num_input_channels: int, num_output_channels: int,
                                   enable_deep_supervision: bool = True) -> TwoDecoderNetwork:
        return build_two_decoder_network(plans_manager, configuration_manager, num_input_channels,
                                         num_output_channels, enable_deep_supervision)


IDEAL_VARIANTS = add_family_variants(nnUNetTrainerIDEAL)
