"""nnUNetTrainerURPC: uncertainty-rectified pyramid consistency (Luo et al., MICCAI 2021; MedIA 80, 2022).

The pyramid is nnU-Net's own deep-supervision output: the first ``urpc_num_scales`` scales (paper: 4; fewer when
the planned network has fewer), each up-sampled to full resolution (bilinear / trilinear logits, then softmax).
MedIA 2022, Sec. 3.2-3.4::

    L_sup   = 1/S sum_s l_sup(p_s, y)                                  labeled images, every scale
    L_unsup = URPC consistency (losses/urpc.py: exp(-D_s)-weighted ||p_s - p_c||^2 / sum exp(-D_s) + mean D_s,
              D_s = KL(p_s || p_c), p_c = mean of the scales)          unlabeled images
    L       = L_sup + lambda(t) L_unsup,   lambda(t) = 0.1 exp(-5 (1 - t / t_max)^2)

Where nnU-Net's setting differs from the paper (documented, switchable where it matters):

* ``l_sup`` is nnU-Net's Dice + CE (the paper: CE + Dice as well), applied to every up-sampled scale against the
  full-resolution labels with equal weights 1/S (the paper's pyramid supervision) instead of nnU-Net's
  deep-supervision weights on down-sampled labels; ``urpc_nnunet_supervision = True`` switches to nnU-Net's own
  deep-supervision loss;
* lambda ramps up over the whole training by default (t_max = nnU-Net's ``num_epochs``, evaluated per epoch);
  ``urpc_rampup_epochs`` sets another length;
* the paper's network adds dropout / feature noise before its auxiliary heads to diversify the scales; nnU-Net's
  deep-supervision heads are used as planned, unperturbed;
* optimisation is nnU-Net's (SGD, poly schedule, 1000 x 250 iterations, gradient norm clipped at 12).

Inference (validation, ``nnUNetv2_predict``): the full-resolution output of the planned network, as in the paper
(the auxiliary scales are training-only).

Equation numbers follow our reading of the published paper (cited above); the equations are written out in full here
so that they can be checked against it.
"""
import torch

from nnunet_semi.losses.urpc import uncertainty_rectified_pyramid_consistency, upsample_pyramid
from nnunet_semi.networks.outputs import split_batch
from nnunet_semi.training.budgets import add_family_variants
from nnunet_semi.training.semi_base import nnUNetTrainerSemiSupervised


class nnUNetTrainerURPC(nnUNetTrainerSemiSupervised):
    extra_curves = {
        "sup_losses": "L_sup (pyramid Dice+CE)",
        "urpc_losses": "L_unsup (rectified consistency + uncertainty)",
        "urpc_uncertainty": "mean D_s = KL(p_s || p_c) (unlabeled)",
    }

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.urpc_weight = 0.1  # lambda's final value (paper)
        self.urpc_rampup_epochs = None  # None = the whole training (paper: t_max = all iterations)
        self.urpc_num_scales = 4  # S (paper: 4 pyramid levels)
        self.urpc_upsample_mode = "linear"  # bilinear / trilinear
        self.urpc_nnunet_supervision = False  # True = nnU-Net's deep-supervision loss instead of the pyramid's

    def current_urpc_weight(self) -> float:
        return self.epoch_rampup(self.urpc_weight, self.urpc_rampup_epochs)

    def compute_losses(self, data, target, data_unlabeled):
        if not isinstance(target, list):
            raise RuntimeError("URPC needs nnU-Net's deep supervision (the pyramid): enable_deep_supervision=True")
        outputs, (outputs_l, _) = self.forward_joint(data, data_unlabeled)
        n_scales = min(self.urpc_num_scales, len(outputs))
        if n_scales < 2:
            raise RuntimeError(f"URPC needs >= 2 deep-supervision scales; the planned network has {len(outputs)}")
        pyramid = upsample_pyramid(outputs[:n_scales], self.urpc_upsample_mode)
        labeled, unlabeled = split_batch(pyramid, data.shape[0])

        if self.urpc_nnunet_supervision:
            sup = self.loss(outputs_l, target)
        else:
            sup = sum(self.loss.loss(p, target[0]) for p in labeled) / n_scales
            # unused coarser heads: zero-weight terms keep them in the graph (DDP requires every parameter used)
            sup = sup + sum(0.0 * o.sum() for o in outputs[n_scales:])
        urpc = uncertainty_rectified_pyramid_consistency(unlabeled)
        loss = sup + self.current_urpc_weight() * urpc["loss"]
        curves = {"sup_losses": sup.item(), "urpc_losses": urpc["loss"].item(),
                  "urpc_uncertainty": urpc["uncertainty"].item()}
        return loss, loss, curves


URPC_VARIANTS = add_family_variants(nnUNetTrainerURPC)
