"""nnUNetTrainerMMGL: stage 3 of MMGL, multi-scale deeply supervised fine-tuning (Zhao, Hu, Zeng, Yang, Qian,
Veeravalli, Guan, "MMGL: Multi-scale multi-view global-local contrastive learning for semi-supervised cardiac image
segmentation", ICIP 2022, arXiv:2207.01883; Sec. 3.3)::

    L_seg^M = sum_{d in D} lambda_dice^d L_dice^d                                                       (Sec. 3.3)

on the labeled cases in the main (transaxial) view -- nnU-Net's 2D slices -- starting from the stage-2 weights
(``nnunet_semi_pretrain -m mmgl_local``: encoder and decoder; the segmentation heads start fresh)::

    nnunet_semi_pretrain -d 27 -c 2d -m mmgl_global       # stage 1 (Sec. 3.1)
    nnunet_semi_pretrain -d 27 -c 2d -m mmgl_local        # stage 2 (Sec. 3.2), finds stage 1 by convention
    nnUNetv2_train 27 2d 0 -tr nnUNetTrainerMMGL          # stage 3

D = the three highest-resolution outputs of nnU-Net's deep supervision (full resolution, 1/2, 1/4); ``dice_weights``
are ``(lambda^1, lambda^2, lambda^3)`` from the lowest of them to full resolution (normalised to sum 1), deeper
outputs get weight 0. Portfolios of Table 1: ``_DS226``, ``_DS127``, ``_DS334``, ``_DS235``; the default is 3:3:4,
MMGL's configuration in the ablation (Fig. 3, 82.8% Dice at 20% labels) and the best at 20% labels (2:3:5 wins at
10%, 1:2:7 at 40%). ``L_dice`` is nnU-Net's soft Dice (batch Dice as planned, background excluded); the paper uses
Dice alone, so nnU-Net's cross-entropy term is off (``ce_weight = 0``; set 1 for nnU-Net's Dice + CE).

Ablations (paper Fig. 3) as variants: ``_noDS`` (full-resolution Dice only), ``_noLocal`` (fine-tune from stage 1,
encoder only), ``_noMV`` (both pretraining stages on transaxial slices: ``--no-multi-view``), ``_noMG`` (stage 2
from a random encoder: ``--no-global``), and the cumulative ladder of Fig. 3: ``_noPretrain_noDS`` (Random),
``_noPretrain`` (+DS), ``_noMV_noLocal`` (+MG), ``_noLocal`` (+MV), ``nnUNetTrainerMMGL`` (+Local = MMGL). Each
pretrained variant finds the pretraining of its ablation by folder name (e.g. ``MMGLLocalPretrain_noMV__...``) or
the file named by ``nnUNet_semi_pretrained``.

Table 1's "SemiContrast" baseline (Hu et al. 2021: global contrast, then label-guided local contrast, one scale,
one view) is ``nnUNetTrainerMMGL_SemiContrast``, after::

    nnunet_semi_pretrain -d 27 -c 2d -m simclr
    nnunet_semi_pretrain -d 27 -c 2d -m mmgl_local --no-multi-view --scale-weights 1 --tag semicontrast \
        --init-from $nnUNet_results/<Dataset>/SimCLRPretrain__<plans>__2d/fold_0/checkpoint_final.pth

Where our setting differs from the paper: optimisation, augmentation, patch sampling, validation and inference are
nnU-Net's (SGD + poly schedule, its 2D augmentation; the paper's optimiser is not given); the network is the planned
2D U-Net. The fine-tuning uses labeled data only (no unlabeled stream).
"""
from typing import Dict, Tuple

import numpy as np
import torch

from nnunet_semi.pretrained import contract
from nnunet_semi.training.budgets import add_family_variants, register_variant
from nnunet_semi.training.pretrained_init import PretrainedInitialisation
from nnunet_semi.training.semi_base import nnUNetTrainerSemiSupervised

#: Table 1's weight portfolios (lambda^1 : lambda^2 : lambda^3, lowest resolution first)
DICE_PORTFOLIOS = {"226": (2, 2, 6), "127": (1, 2, 7), "334": (3, 3, 4), "235": (2, 3, 5)}
DEFAULT_PORTFOLIO = "334"


class nnUNetTrainerMMGL(PretrainedInitialisation, nnUNetTrainerSemiSupervised):
    uses_unlabeled = False
    extra_curves = {"dice_loss_full_res": "Dice loss of the full-resolution output (train)"}
    #: lambda_dice per scale, lowest resolution first; the last one is nnU-Net's full-resolution output
    dice_weights: Tuple[float, ...] = DICE_PORTFOLIOS[DEFAULT_PORTFOLIO]
    #: weight of nnU-Net's cross-entropy term next to the Dice loss (paper: Dice only)
    ce_weight: float = 0.0
    #: which pretraining stages the weights come from (ablations)
    use_global: bool = True
    use_local: bool = True
    multi_view: bool = True

    @property
    def pretraining_method(self):
        return "MMGLLocal" if self.use_local else "MMGLGlobal" if self.use_global else None

    @property
    def extra_accepted_pretraining_methods(self):
        # stage 1 alone (_noLocal) also fine-tunes SimCLR (the paper's "Global" row; README, nnUNet_semi_pretrained)
        return () if self.use_local else ("SimCLR",)

    @property
    def pretraining_variant(self) -> str:
        return ("" if self.multi_view else "_noMV") + ("" if self.use_global or not self.use_local else "_noMG")

    @property
    def pretraining_command(self) -> str:
        if self.use_local:
            return "mmgl_local" + ("" if self.multi_view else " --no-multi-view") + \
                ("" if self.use_global else " --no-global")
        return "mmgl_global" + ("" if self.multi_view else " --no-multi-view")

    @property
    def pretrained_skip(self):
        # stage 2 gives the whole network; stage 1 the encoder only (the decoder keeps its fresh initialisation)
        return (".seg_layers.",) if self.use_local else ("decoder.",)

    def initialize(self):
        if self.pretraining_method is None:  # ablation without pretraining: the base's initialisation only
            return nnUNetTrainerSemiSupervised.initialize(self)
        return super().initialize()

    def deep_supervision_weights(self, n_outputs: int) -> np.ndarray:
        """Loss weight of each nnU-Net output (full resolution first): ``dice_weights`` reversed, normalised,
        zeros for the deeper outputs (1e-6 under DDP, as nnU-Net does, so that every head gets a gradient)."""
        if len(self.dice_weights) > n_outputs or any(w < 0 for w in self.dice_weights) or \
                not any(w > 0 for w in self.dice_weights):
            raise ValueError(f"{type(self).__name__}.dice_weights {list(self.dice_weights)} must be >= 0, not all 0, "
                             f"with at most one weight per deep-supervision output ({n_outputs} here)")
        weights = np.zeros(n_outputs)
        weights[:len(self.dice_weights)] = self.dice_weights[::-1]
        weights = weights / weights.sum()
        if self.is_ddp:
            weights[weights == 0] = 1e-6
        return weights

    def _build_loss(self):
        loss = super()._build_loss()  # nnU-Net's DC_and_CE_loss in its DeepSupervisionWrapper
        if not self.enable_deep_supervision:
            raise RuntimeError(f"{type(self).__name__} needs nnU-Net's deep supervision outputs")
        loss.loss.weight_ce = self.ce_weight
        loss.weight_factors = tuple(self.deep_supervision_weights(len(self._get_deep_supervision_scales())))
        return loss

    def compute_losses(self, data: torch.Tensor, target, data_unlabeled=None):
        output = self.network(data)
        loss = self.loss(output, target)
        full_res = self.loss.loss(output[0], target[0])
        return loss, loss, {"dice_loss_full_res": full_res.item()}


def _variant(name: str, **attributes) -> type:
    return register_variant(nnUNetTrainerMMGL, name, f"nnUNetTrainerMMGL with {attributes}.", **attributes)


_BASES = [nnUNetTrainerMMGL]
_BASES += [_variant(f"DS{key}", dice_weights=weights) for key, weights in DICE_PORTFOLIOS.items()]
_BASES += [_variant("noDS", dice_weights=(1,)), _variant("noLocal", use_local=False),
           _variant("noMV", multi_view=False), _variant("noMG", use_global=False),
           _variant("noMV_noLocal", multi_view=False, use_local=False),
           _variant("noPretrain", use_global=False, use_local=False),
           _variant("noPretrain_noDS", use_global=False, use_local=False, dice_weights=(1,))]
#: MMGL Table 1's "SemiContrast" (Hu et al. 2021): SimCLR (one scale, one view), then the supervised local contrast
#: on the full-resolution decoder stage from it, then fine-tuning of the full-resolution output (Dice, as MMGL's
#: stage 3 without deep supervision: the same fine-tuning for every pretraining compared). Its stage 2 is tagged so
#: that it does not overwrite MMGL's transaxial-only ablation (_noMV).
SEMICONTRAST_TAG = "semicontrast"
_BASES += [_variant("SemiContrast", multi_view=False, dice_weights=(1,),
                    pretraining_variant=contract.NO_MULTI_VIEW + contract.tag_suffix(SEMICONTRAST_TAG),
                    pretraining_command=f"simclr, then nnunet_semi_pretrain ... -m mmgl_local --no-multi-view "
                                        f"--scale-weights 1 --init-from <SimCLR checkpoint> --tag {SEMICONTRAST_TAG}")]

MMGL_VARIANTS: Dict[str, type] = add_family_variants(*_BASES)
