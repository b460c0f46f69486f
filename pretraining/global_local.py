"""Global + local contrastive pretraining (Chaitanya, Erdil, Karani, Konukoglu, "Contrastive learning of global and
local features for medical image segmentation with limited annotations", NeurIPS 2020, arXiv:2006.10511), the "PI."
initialisation of Chaitanya et al., "Local contrastive loss with pseudo-label based self-training for semi-supervised
medical image segmentation", Medical Image Analysis 2023, arXiv:2112.09645 (Sec. V-D, Table III; reference [10]).

Two stages on the planned nnU-Net U-Net, one after the other (the 2020 paper pretrains the encoder first, then the
first decoder blocks with the encoder fixed):

1. global (the first ``global_fraction`` of the epochs): encoder ``e`` + projection ``g_1`` (global average pooling
   of the deepest stage, two linear layers, :class:`~nnunet_semi.networks.heads.ProjectionHead`); two views of each
   image (random crop of 3/4 of the patch per axis + flips + intensity jitter, independently per view) are a
   positive pair, the other images of the batch (all DDP ranks) negatives: NT-Xent,
   :func:`~nnunet_semi.losses.contrastive.info_nce` (the random strategy G^R);
2. local (the remaining epochs): the encoder frozen, the decoder up to stage ``l`` + ``g_2`` (two 1x1
   convolutions with normalisation, :class:`~nnunet_semi.networks.contrastive_head.NormedLocalProjectionHead`) on two
   intensity-only views,
   :func:`~nnunet_semi.losses.global_local.local_region_contrastive_loss` over ``K x K`` regions (strategy L^R).

Each stage has its own cosine-annealed Adam learning rate (lr 1e-3, tau 0.1 as in the 2020 paper).

What the 2023 paper does not specify and we chose (documented, options of ``nnunet_semi_pretrain -m globallocal``):

* the domain-specific strategies G^D / L^D of the 2020 paper need each slice's position in its volume, which
  nnU-Net's patch loader does not provide: the random strategies G^R / L^R are used;
* ``l``: the decoder stage at 1/4 of the input resolution (the 2020 paper's best ``l = 3`` of 5 decoder blocks
  gives 48 x 48 of 192 x 192), else the full-resolution stage (``local_stage``, index into ``decoder.stages``);
* region size ``K = 3`` cells per axis, region vector = the flattened block; projection dimensions 128 (both heads);
* views: intensity jitter = brightness x U(0.8, 1.2) + Gaussian noise sigma U(0, 0.1) on nnU-Net-normalised
  patches (the 2020 paper: brightness/contrast; crop, flip, rotation for the global views);
* an epoch is one pass over the fold's training images plus imagesUnlabeled (the shared runner's convention).

The checkpoint's ``network_weights`` are the whole U-Net (``encoder.*``, ``decoder.*`` incl. the segmentation
layers for the dataset's classes), so ``nnUNetTrainerPLContrastPI`` (and nnU-Net's ``-pretrained_weights``) load it;
decoder stages after ``l`` keep their random initialisation, the heads ``g_1``/``g_2`` are not transferred.
"""
import math
from functools import partial
from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn

from nnunet_semi.losses.contrastive import info_nce
from nnunet_semi.augmentation.crop_flip import apply_crop_flip, default_crop_size, random_crop_flip
from nnunet_semi.losses.global_local import local_region_contrastive_loss
from nnunet_semi.networks.contrastive_head import NormedLocalProjectionHead
from nnunet_semi.networks.dual import unwrap
from nnunet_semi.networks.heads import ProjectionHead
from pretraining.runner import Pretrainer, add_contrastive_arguments, contrastive_kwargs


def default_local_stage(strides: Sequence[Sequence[int]], target_stride: int = 4) -> int:
    """Index into ``decoder.stages`` of the deepest decoder stage whose resolution is at most ``target_stride``
    times coarser than the input on every axis (decoder stage ``s`` has encoder stage ``n - 2 - s``'s resolution)."""
    cumulative = np.cumprod(np.array(strides), axis=0)  # (n_stages, ndim)
    n_stages = len(strides)
    for s in range(n_stages - 1):
        if cumulative[n_stages - 2 - s].max() <= target_stride:
            return s
    return n_stages - 2


def _keep(store: dict, module, inputs, output) -> None:
    store["f"] = output


class GlobalLocalModel(nn.Module):
    """The planned U-Net (``unet``) with ``g_1`` (``global_head``) and ``g_2`` (``local_head``) on decoder stage
    ``local_stage``. ``forward(x, "global")`` -> ``(B, P)``; ``forward(x, "local")`` -> ``g_2`` feature map, the
    encoder run without gradient (frozen)."""

    def __init__(self, unet: nn.Module, global_head: ProjectionHead, local_head: nn.Module, local_stage: int):
        super().__init__()
        self.unet = unet
        self.global_head = global_head
        self.local_head = local_head
        self.local_stage = local_stage
        self._store = {}
        unet.decoder.stages[local_stage].register_forward_hook(partial(_keep, self._store))

    def forward(self, x: torch.Tensor, part: str) -> torch.Tensor:
        if part == "global":
            return self.global_head(self.unet.encoder(x)[-1])
        with torch.no_grad():
            skips = self.unet.encoder(x)
        self.unet.decoder(skips)
        return self.local_head(self._store.pop("f"))


class GlobalLocalPretrainer(Pretrainer):
    method_name = "GlobalLocal"

    @classmethod
    def add_arguments(cls, group) -> None:
        add_contrastive_arguments(group, 128, 0.1)
        group.add_argument("--global-fraction", type=float, default=0.5,
                           help="fraction of the epochs for the global stage (encoder); the rest pretrains the "
                                "decoder with the local loss, encoder frozen (default: 0.5)")
        group.add_argument("--region-size", type=int, default=3, help="local region size K per axis (default: 3)")
        group.add_argument("--local-stage", type=int, default=None,
                           help="decoder stage of the local loss, 0 = deepest (default: the stage at 1/4 "
                                "resolution)")

    @classmethod
    def kwargs_from_args(cls, args) -> dict:
        return dict(contrastive_kwargs(args), global_fraction=args.global_fraction, region_size=args.region_size,
                    local_stage=args.local_stage)

    def __init__(self, *args, learning_rate: float = 1e-3, temperature: float = 0.1, projection_dim: int = 128,
                 global_fraction: float = 0.5, region_size: int = 3, local_stage: Optional[int] = None,
                 crop_fraction: float = 0.75, **kwargs):
        super().__init__(*args, learning_rate=learning_rate, **kwargs)
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if not 0 <= global_fraction <= 1:
            raise ValueError(f"global_fraction must be in [0, 1], got {global_fraction}")
        if projection_dim < 1 or region_size < 1:
            raise ValueError(f"projection dim and region size must be >= 1, got {projection_dim}, {region_size}")
        strides = self.configuration_manager.network_arch_init_kwargs["strides"]
        n_decoder = len(strides) - 1
        self.local_stage = default_local_stage(strides) if local_stage is None else int(local_stage)
        if not 0 <= self.local_stage < n_decoder:
            raise ValueError(f"local stage {local_stage} out of range: the planned decoder has {n_decoder} stages "
                             f"(0 = deepest)")
        self.temperature = temperature
        self.projection_dim = projection_dim
        self.global_fraction = global_fraction
        self.region_size = region_size
        self.global_epochs = int(round(self.num_epochs * global_fraction))
        patch = self.configuration_manager.patch_size
        total_stride = tuple(int(s) for s in np.prod(np.array(strides), axis=0))
        self.crop_size = default_crop_size(patch, total_stride, crop_fraction)
        self.stride = total_stride

    def hyperparameters(self) -> dict:
        return {"temperature": self.temperature, "projection_dim": self.projection_dim,
                "global_fraction": self.global_fraction, "global_epochs": self.global_epochs,
                "region_size": self.region_size, "local_stage": self.local_stage, "crop_size": list(self.crop_size)}

    def build_model(self) -> nn.Module:
        num_classes = self.plans_manager.get_label_manager(self.dataset_json).num_segmentation_heads
        unet = self.build_planned_network(num_classes)
        encoder = unet.encoder
        local_channels = unet.decoder.stages[self.local_stage].output_channels \
            if hasattr(unet.decoder.stages[self.local_stage], "output_channels") else \
            self.configuration_manager.network_arch_init_kwargs["features_per_stage"][-2 - self.local_stage]
        return GlobalLocalModel(unet, ProjectionHead(encoder.output_channels[-1], out_dim=self.projection_dim),
                                NormedLocalProjectionHead(encoder.conv_op, encoder.norm_op, encoder.norm_op_kwargs,
                                                          local_channels, self.projection_dim), self.local_stage)

    def build_scheduler(self, optimizer):
        """Cosine annealing restarted at the start of the local stage (two separate trainings in the paper)."""
        g, total = self.global_epochs, self.num_epochs

        def factor(epoch: int) -> float:
            start, length = (0, g) if epoch < g else (g, total - g)
            return 0.5 * (1 + math.cos(math.pi * (epoch - start) / max(1, length)))

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)

    def has_unused_parameters(self) -> bool:
        return True  # stage 1 leaves the decoder and g_2 unused, stage 2 the encoder and g_1

    def network_weights(self) -> dict:
        return unwrap(self.model).unet.state_dict()

    def stage(self) -> str:
        return "global" if self.current_epoch < self.global_epochs else "local"

    @staticmethod
    def _jitter(x: torch.Tensor) -> torch.Tensor:
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        scale = torch.empty(shape).uniform_(0.8, 1.2).to(x.device)
        sigma = torch.empty(shape).uniform_(0.0, 0.1).to(x.device)
        return x * scale + sigma * torch.randn(x.shape).to(x.device)

    def compute_loss(self, data: torch.Tensor):
        nan = float("nan")
        if self.stage() == "global":
            views = [self._jitter(apply_crop_flip(data, random_crop_flip(data.shape[0], data.shape[2:],
                                                                         self.crop_size, self.stride)))
                     for _ in range(2)]
            z_a, z_b = self.model(torch.cat(views), "global").chunk(2)  # one forward: one DDP reducer pass
            loss = info_nce(z_a, z_b, self.temperature, gather_distributed=True)
            return loss, {"L_total": loss.item(), "L_g": loss.item(), "L_l": nan}
        views = [self._jitter(data) for _ in range(2)]
        f_a, f_b = self.model(torch.cat(views), "local").chunk(2)
        loss = local_region_contrastive_loss(f_a, f_b, self.region_size, self.temperature)
        return loss, {"L_total": loss.item(), "L_g": nan, "L_l": loss.item()}
