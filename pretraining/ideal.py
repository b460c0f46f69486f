"""IDEAL: dense local contrastive pretraining of the encoder (Basak, Chattopadhyay, Kundu, Nag, Mallipeddi, "IDEAL:
Improved dense local contrastive learning for semi-supervised medical image segmentation", ICASSP 2023,
arXiv:2210.15075; Sec. 2.2).

The encoder E of the planned nnU-Net network and a projection head G = one 1x1 convolution on E's deepest stage
(no pooling, no MLP) map an image to dense features of ``D_h x D_w (x D_d)`` locations. Each patch gives two views,
query ``x_q`` and key ``x_k`` (random crop + flips + intensity jitter, sampled per image); the positive of a query
location is the key feature at the same image location, the negatives are the key features of the other images of
the batch, gathered across DDP ranks (eq. 2,
:func:`~nnunet_semi.losses.dense_contrastive.dense_local_contrastive_loss`).
Optionally the global loss of eq. 1 on spatially pooled features is added: ``L = L_loc + global_weight * L_g``
(default ``global_weight = 0``, the paper's IDEAL loss).

Defaults: Adam with lr 1e-5 (paper), cosine annealing (the shared runner), temperature 0.1 (not given in the paper;
Chaitanya et al. [13]), projection dim 128 (not given), batch size of the plans, crops of 3/4 of the patch per axis
(rounded to the encoder's total stride, so that feature cells correspond exactly, see
:mod:`nnunet_semi.losses.dense_contrastive`).

Both views go through the same encoder and head, with gradients through both (no momentum encoder, as Fig. 2a
shows one E and one G). Where our setting differs: the encoder is nnU-Net's planned encoder (the paper: ResNet-50),
the images are random patches of the plans' patch size from the fold's training cases plus imagesUnlabeled (the
runner); the views are crops of that patch (no rescaling, so the correspondence is exact at the feature
resolution); query locations outside the two views' overlap have no positive and are left out of eq. 2.

The checkpoint's ``network_weights`` are the encoder's, keyed ``encoder.*`` like the encoder of the fine-tuning
network (:class:`~nnunet_semi.networks.two_decoder.TwoDecoderNetwork` of ``nnUNetTrainerIDEAL``, or any planned
nnU-Net); the projection head is not transferred.
"""
from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn

from nnunet_semi.augmentation.crop_flip import (apply_crop_flip, crop_flip_correspondence, default_crop_size,
                                                random_crop_flip)
from nnunet_semi.losses.dense_contrastive import dense_local_contrastive_loss, global_contrastive_loss
from pretraining.runner import Pretrainer, add_contrastive_arguments, contrastive_kwargs


class IDEALModel(nn.Module):
    """Encoder E + dense projection head G (a 1x1 convolution on the deepest stage): ``forward(x) = G(E(x)[-1])``."""

    def __init__(self, encoder: nn.Module, projection_dim: int):
        super().__init__()
        self.encoder = encoder
        self.head = encoder.conv_op(encoder.output_channels[-1], projection_dim, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x)[-1])


class IDEALPretrainer(Pretrainer):
    method_name = "IDEAL"

    @classmethod
    def add_arguments(cls, group) -> None:
        add_contrastive_arguments(group, 128, 0.1)
        group.add_argument("--crop-fraction", type=float, default=0.75,
                           help="view crop size per axis as a fraction of the patch, rounded to the encoder stride")
        group.add_argument("--global-weight", type=float, default=0.0,
                           help="weight of the global loss (eq. 1) added to the local loss (eq. 2); paper: 0")
        group.add_argument("--no-intensity-jitter", action="store_true", help="views differ in geometry only")

    @classmethod
    def kwargs_from_args(cls, args) -> dict:
        return dict(contrastive_kwargs(args), crop_fraction=args.crop_fraction, global_weight=args.global_weight,
                    intensity_jitter=not args.no_intensity_jitter)

    def __init__(self, *args, learning_rate: float = 1e-5, temperature: float = 0.1, projection_dim: int = 128,
                 crop_fraction: float = 0.75, crop_size: Optional[Sequence[int]] = None, global_weight: float = 0.0,
                 intensity_jitter: bool = True, **kwargs):
        super().__init__(*args, learning_rate=learning_rate, **kwargs)
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if projection_dim < 1:
            raise ValueError(f"projection dim must be >= 1, got {projection_dim}")
        if global_weight < 0:
            raise ValueError(f"global_weight must be >= 0, got {global_weight}")
        patch = self.configuration_manager.patch_size
        self.stride = tuple(int(s) for s in np.prod(np.array(
            self.configuration_manager.network_arch_init_kwargs["strides"]), axis=0))
        self.crop_size = tuple(crop_size) if crop_size else default_crop_size(patch, self.stride, crop_fraction)
        if len(self.crop_size) != len(patch):
            raise ValueError(f"crop size {list(self.crop_size)} must have one entry per patch axis ({len(patch)})")
        if any(c % s or c > p or 2 * c - p < s for c, p, s in zip(self.crop_size, patch, self.stride)):
            raise ValueError(f"crop size {list(self.crop_size)} must be a multiple of the encoder stride "
                             f"{list(self.stride)}, at most the patch {list(patch)}, and large enough that two crops "
                             f"always share a feature cell (2 * crop - patch >= stride)")
        self.temperature = temperature
        self.projection_dim = projection_dim
        self.global_weight = global_weight
        self.intensity_jitter = intensity_jitter

    def variant_suffix(self) -> str:
        return "_global" if self.global_weight > 0 else ""

    def hyperparameters(self) -> dict:
        return {"temperature": self.temperature, "projection_dim": self.projection_dim,
                "crop_size": list(self.crop_size), "stride": list(self.stride), "global_weight": self.global_weight,
                "intensity_jitter": self.intensity_jitter}

    def build_model(self) -> nn.Module:
        return IDEALModel(self.build_planned_network(self.num_input_channels).encoder, self.projection_dim)

    def network_weights(self) -> dict:
        return {k: v for k, v in super().network_weights().items() if k.startswith("encoder.")}

    def _view(self, data: torch.Tensor):
        """One random view per image: crop + flips (geometry returned for the correspondence) + intensity jitter
        (per image: brightness x U(0.8, 1.2), Gaussian noise with sigma U(0, 0.1) on nnU-Net-normalised images)."""
        geometry = random_crop_flip(data.shape[0], data.shape[2:], self.crop_size, self.stride)
        view = apply_crop_flip(data, geometry)
        if self.intensity_jitter:
            shape = (view.shape[0],) + (1,) * (view.ndim - 1)
            scale = torch.empty(shape).uniform_(0.8, 1.2).to(view.device)
            sigma = torch.empty(shape).uniform_(0.0, 0.1).to(view.device)
            view = view * scale + sigma * torch.randn(view.shape).to(view.device)
        return view, geometry

    def compute_loss(self, data: torch.Tensor):
        x_q, view_q = self._view(data)
        x_k, view_k = self._view(data)
        z_q, z_k = self.model(torch.cat([x_q, x_k])).chunk(2)  # one forward: one DDP reducer pass
        expected = tuple(c // s for c, s in zip(self.crop_size, self.stride))
        if tuple(z_q.shape[2:]) != expected:
            raise RuntimeError(f"dense features have grid {tuple(z_q.shape[2:])}, expected {expected} "
                               f"(crop {list(self.crop_size)} / stride {list(self.stride)})")
        index = crop_flip_correspondence(view_q, view_k, self.stride)
        l_loc = dense_local_contrastive_loss(z_q, z_k, index, self.temperature, gather_distributed=True)
        l_g = global_contrastive_loss(z_q, z_k, self.temperature, gather_distributed=True) \
            if self.global_weight > 0 else l_loc.new_zeros(())
        loss = l_loc + self.global_weight * l_g
        return loss, {"L_total": loss.item(), "L_loc": l_loc.item(), "L_g": l_g.item()}
