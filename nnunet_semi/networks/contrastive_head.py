"""The contrastive branch ``h_phi`` of Chaitanya et al. 2023 (Chaitanya, Erdil, Karani, Konukoglu, "Local contrastive
loss with pseudo-label based self-training for semi-supervised medical image segmentation", Medical Image Analysis
2023, arXiv:2112.09645; Sec. IV-C, Fig. 2), attached to a planned nnU-Net U-Net without changing what nnU-Net sees.

``h_phi`` = two 1x1 convolutions on the features of the last decoder stage (the input of the final segmentation
layer, full resolution), ``D = 16`` output channels; the first is followed by normalisation and ReLU, the last is
linear (Sec. IV-C: "all the layers except the last layers ... have batch normalization and ReLU"). The
normalisation is the planned network's (nnU-Net: instance norm) rather than batch norm, like the backbone.

:func:`attach_contrastive_head` registers the head as the U-Net's submodule ``contrastive_head`` and a forward hook
on the last decoder stage that, in training mode only, stores ``h_phi(features)`` for
:func:`pop_contrastive_features`. The U-Net's own forward is unchanged: it returns the segmentation output (a list
under deep supervision) in every mode, so nnU-Net's validation and ``nnUNetv2_predict`` work as for a plain U-Net,
and the head's weights (``contrastive_head.*``) are part of ``network_weights`` for the predictor's strict load.
Because the head runs inside the network's forward call, DDP sees its parameters used in the forward.
"""
from functools import partial

import torch
from torch import nn

STORE = "_contrastive_store"


class NormedLocalProjectionHead(nn.Module):
    """``conv1x1(C -> C) -> norm -> ReLU -> conv1x1(C -> out_dim)`` for 2D or 3D feature maps."""

    def __init__(self, conv_op, norm_op, norm_op_kwargs: dict, in_channels: int, out_dim: int = 16):
        super().__init__()
        if out_dim < 1 or in_channels < 1:
            raise ValueError(f"channels must be >= 1, got in_channels={in_channels}, out_dim={out_dim}")
        layers = [conv_op(in_channels, in_channels, kernel_size=1)]
        if norm_op is not None:
            layers.append(norm_op(in_channels, **(norm_op_kwargs or {})))
        layers += [nn.ReLU(inplace=True), conv_op(in_channels, out_dim, kernel_size=1)]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def _project(unet: nn.Module, stage: nn.Module, inputs, output) -> None:
    if stage.training:
        getattr(unet, STORE)["z"] = unet.contrastive_head(output)


def attach_contrastive_head(unet: nn.Module, out_dim: int = 16) -> nn.Module:
    """Add ``h_phi`` to a dynamic_network_architectures U-Net (in place) and return the U-Net."""
    encoder = unet.encoder
    in_channels = unet.decoder.seg_layers[-1].in_channels
    head = NormedLocalProjectionHead(encoder.conv_op, encoder.norm_op, encoder.norm_op_kwargs, in_channels, out_dim)
    unet.add_module("contrastive_head", head)
    setattr(unet, STORE, {})
    unet.decoder.stages[-1].register_forward_hook(partial(_project, unet))
    return unet


def pop_contrastive_features(unet: nn.Module) -> torch.Tensor:
    """``z = h_phi(c_theta(x))`` of the last training-mode forward call, ``(B, out_dim, *patch)``."""
    store = getattr(unet, STORE, None)
    if store is None or "z" not in store:
        raise RuntimeError("no contrastive features: the network has no contrastive head, or it did not run a "
                           "training-mode forward since the last call")
    return store.pop("z")
