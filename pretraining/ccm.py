"""CCM: contrastive complementary masking (Zhou, Gu, Zhang, Wang, "Self-supervised pre-training based on contrastive
complementary masking for semi-supervised cardiac image segmentation", Sec. 2.1, eq. 1-3).

Two networks of the planned nnU-Net architecture (encoder f, decoder g) see complementary block-masked versions
of the same image, ``X^a = M^a X`` and ``X^b = (1 - M^a) X``. Each reconstructs the full image (eq. 1, L_rec) and a
projector h (global pooling of the deepest encoder stage + two linear layers) gives global features for an
InfoNCE loss between the two views (eq. 2, L_con, cosine similarity, tau = 0.07)::

    L_self = L_rec + lambda * L_con                                                  (eq. 3, lambda = 1)

Defaults are the paper's: blocks 16 x 16 (2D; 3D default: 16 per axis, at most half the patch), projection dim
1000, Adam lr 1e-3 with cosine annealing, 400 epochs, batch 40 (2D; 3D: the plans' batch size), no augmentation
besides the masks. Ablations (paper Fig. 4): ``use_con=False`` (without L_con), ``use_rec=False`` (without L_rec).

Where our setting differs: the networks are nnU-Net's planned U-Nets (the paper: a ResNet50 U-Net), whose
segmentation heads serve as reconstruction heads (one output channel per input channel); an epoch is one pass
over the images (2D: slices) of the fold's training cases plus imagesUnlabeled, sampled as random patches of the
plans' patch size by nnU-Net's loader. The reconstruction loss is the per-pixel mean (the paper's "MSE").

The checkpoint's ``network_weights`` are keyed ``net_a.*`` / ``net_b.*`` like ``nnUNetTrainerCCMCPS``'s two
networks, which start from them (heads excepted).
"""
from typing import Optional, Sequence

import torch
from torch import nn

from nnunet_semi.losses.contrastive import info_nce
from nnunet_semi.losses.reconstruction import masked_pair_reconstruction_loss
from nnunet_semi.networks.heads import ProjectionHead
from nnunet_semi.pretrained import contract
from pretraining.masking import complementary_block_masks, default_block_size
from pretraining.runner import Pretrainer, add_contrastive_arguments, contrastive_kwargs


class CCMModel(nn.Module):
    """Networks a and b (planned U-Nets) with their projectors; one forward call computes both branches."""

    def __init__(self, net_a: nn.Module, net_b: nn.Module, head_a: ProjectionHead, head_b: ProjectionHead):
        super().__init__()
        self.net_a, self.net_b = net_a, net_b
        self.head_a, self.head_b = head_a, head_b

    def forward(self, x: torch.Tensor, mask_a: torch.Tensor, mask_b: torch.Tensor):
        """Returns ``((rec_a, z_a), (rec_b, z_b))`` for the masked inputs ``x * mask_a`` and ``x * mask_b``."""
        outputs = []
        for net, head, mask in ((self.net_a, self.head_a, mask_a), (self.net_b, self.head_b, mask_b)):
            skips = net.encoder(x * mask)
            outputs.append((net.decoder(skips), head(skips[-1])))
        return tuple(outputs)


class CCMPretrainer(Pretrainer):
    method_name = "CCM"

    @classmethod
    def add_arguments(cls, group) -> None:
        add_contrastive_arguments(group, 1000, 0.07)
        group.add_argument("--block-size", type=int, nargs="+", default=None, help="mask block size per axis")
        group.add_argument("--lambda-con", type=float, default=1.0, help="weight of L_con in eq. 3 (paper: 1)")
        group.add_argument("--no-con", action="store_true", help="ablation: without L_con")
        group.add_argument("--no-rec", action="store_true", help="ablation: without L_rec")
        group.add_argument("--head-batch-norm", action="store_true",
                           help="BatchNorm1d between the projector's two linear layers (not in the paper): nnU-Net's "
                                "InstanceNorm encoders give nearly parallel pooled features at initialisation "
                                "(cosine >= 0.99), which holds L_con at chance ln(2N-1); measured on Hippocampus 2d, batch 32, "
                                "1000 iterations: at chance throughout without it, 0.23 at the end with it; use it "
                                "with nnU-Net's networks")

    @classmethod
    def kwargs_from_args(cls, args) -> dict:
        return dict(contrastive_kwargs(args), block_size=args.block_size, lambda_con=args.lambda_con,
                    use_con=not args.no_con, use_rec=not args.no_rec, head_batch_norm=args.head_batch_norm)

    def __init__(self, *args, block_size: Optional[Sequence[int]] = None, projection_dim: int = 1000,
                 temperature: float = 0.07, lambda_con: float = 1.0, use_rec: bool = True, use_con: bool = True,
                 head_batch_norm: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        if not (use_rec or use_con):
            raise ValueError("CCM needs at least one of L_rec and L_con")
        patch = self.configuration_manager.patch_size
        self.block_size = tuple(block_size) if block_size else default_block_size(patch)
        if len(self.block_size) != len(patch):
            raise ValueError(f"block size {self.block_size} must have one entry per patch axis ({len(patch)})")
        self.projection_dim = projection_dim
        self.temperature = temperature
        self.lambda_con = lambda_con
        self.use_rec = use_rec
        self.use_con = use_con
        self.head_batch_norm = head_batch_norm

    def default_batch_size(self) -> int:
        return 40 if len(self.configuration_manager.patch_size) == 2 else self.configuration_manager.batch_size

    def variant_suffix(self) -> str:
        return ("" if self.use_con else contract.NO_CONTRASTIVE) + ("" if self.use_rec else contract.NO_RECONSTRUCTION)

    def has_unused_parameters(self) -> bool:
        return not (self.use_rec and self.use_con)

    def hyperparameters(self) -> dict:
        return {"block_size": list(self.block_size), "projection_dim": self.projection_dim,
                "temperature": self.temperature, "lambda_con": self.lambda_con, "use_rec": self.use_rec,
                "use_con": self.use_con, "head_batch_norm": self.head_batch_norm}

    def build_model(self) -> nn.Module:
        nets = [self.build_planned_network(self.num_input_channels) for _ in range(2)]
        deepest = self.configuration_manager.network_arch_init_kwargs["features_per_stage"][-1]
        heads = [ProjectionHead(deepest, out_dim=self.projection_dim, batch_norm=self.head_batch_norm)
                 for _ in range(2)]
        return CCMModel(*nets, *heads)

    def network_weights(self) -> dict:
        state = super().network_weights()
        return {k: v for k, v in state.items() if k.startswith(("net_a.", "net_b."))}

    def compute_loss(self, data: torch.Tensor):
        mask_a, mask_b = complementary_block_masks(data.shape, self.block_size, device=data.device)
        (rec_a, z_a), (rec_b, z_b) = self.model(data, mask_a, mask_b)
        zero = data.new_zeros(())
        l_rec = masked_pair_reconstruction_loss(data, rec_a, rec_b) if self.use_rec else zero
        l_con = info_nce(z_a, z_b, self.temperature, gather_distributed=True) if self.use_con else zero
        loss = l_rec + self.lambda_con * l_con
        return loss, {"L_self": loss.item(), "L_rec": l_rec.item(), "L_con": l_con.item()}
