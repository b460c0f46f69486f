"""nnUNetTrainerCCMCPS: CPS fine-tuning of two CCM-pretrained networks (Zhou, Gu, Zhang, Wang, "Self-supervised
pre-training based on contrastive complementary masking for semi-supervised cardiac image segmentation").

Network a starts from the pretrained f_a/g_a, network b from f_b/g_b; reconstruction heads and projectors are
dropped and the segmentation heads are trained anew. Everything else is :class:`nnUNetTrainerCPS` (eq. 4-6), its
default included: the cross term in Dice form with alpha 1, which measured far above the paper's CE with alpha 0.1
for CPS (see :mod:`nnunet_semi.training.cps`; not measured with the CCM initialisation).
``nnUNetTrainerCCMCPS_paper`` fine-tunes with the paper's CE and alpha 0.1.

The pretrained checkpoint is found by convention, so the design card's command needs no extra flag::

    nnunet_semi_pretrain -d 27 -c 2d -m ccm -f 0          # writes CCMPretrain__nnUNetPlans__2d/fold_0/
    nnUNetv2_train 27 2d 0 -tr nnUNetTrainerCCMCPS

It is ``$nnUNet_results/<Dataset>/CCMPretrain__<plans>__<configuration>/fold_<fold>/checkpoint_final.pth`` of the
same plans, configuration and fold, or the file named by ``nnUNet_semi_pretrained=<path>`` (e.g. an ablation's
``CCMPretrain_noCon__...`` checkpoint); see :mod:`nnunet_semi.training.pretrained_init`.
"""
import torch

from nnunet_semi.training.budgets import add_family_variants
from nnunet_semi.training.cps import nnUNetTrainerCPS
from nnunet_semi.training.pretrained_init import PretrainedInitialisation


class nnUNetTrainerCCMCPS(PretrainedInitialisation, nnUNetTrainerCPS):
    pretraining_method = "CCM"


class nnUNetTrainerCCMCPS_paper(nnUNetTrainerCCMCPS):
    """The CCM paper's fine-tuning (eq. 5-6): CE cross pseudo supervision, ``alpha = 0.1``."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.cps_loss = "ce"
        self.cps_weight = 0.1


CCMCPS_VARIANTS = add_family_variants(nnUNetTrainerCCMCPS, nnUNetTrainerCCMCPS_paper)
