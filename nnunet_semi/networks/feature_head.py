"""An extra head on the last decoder features of a planned nnU-Net, without touching nnU-Net's code.

:class:`DecoderFeatureHead` wraps the network that nnU-Net plans (``net``) and a ``head``. A forward pre-hook on
the decoder's last segmentation layer (``decoder.seg_layers[-1]``, which dynamic_network_architectures' decoders
apply to the full-resolution decoder features with and without deep supervision) captures that layer's input, and
``head`` is applied to it:

* training mode: ``forward(x)`` returns ``(segmentation_output, head_output)`` (the segmentation output is a list
  of scales under deep supervision);
* eval mode (validation, ``nnUNetv2_predict``): the segmentation output only; the head is not run.

State-dict keys: ``net.*`` (the planned network's own keys under ``net.``) and ``head.*``. Used by DTC's signed
distance regression head (:func:`sdf_head`).
"""
import torch
from torch import nn


class DecoderFeatureHead(nn.Module):
    """``net`` (a dynamic_network_architectures U-Net) + ``head`` on its last decoder features."""

    def __init__(self, net: nn.Module, head: nn.Module):
        super().__init__()
        self.net = net
        self.head = head
        self._features = None
        self.net.decoder.seg_layers[-1].register_forward_pre_hook(self._capture)

    def planned_networks(self):
        """The U-Net; the head keeps its initialisation."""
        return {"net": self.net}

    @property
    def feature_channels(self) -> int:
        return self.net.decoder.seg_layers[-1].in_channels

    def _capture(self, module, inputs):
        self._features = inputs[0]

    def set_deep_supervision(self, enabled: bool) -> None:
        self.net.decoder.deep_supervision = enabled

    def forward(self, x: torch.Tensor):
        segmentation = self.net(x)
        features, self._features = self._features, None
        if not self.training:
            return segmentation
        return segmentation, self.head(features)


def sdf_head(conv_op, in_channels: int, out_channels: int) -> nn.Module:
    """DTC's level-set head: a 1 x 1 (x 1) convolution of the last decoder features followed by tanh."""
    return nn.Sequential(conv_op(in_channels, out_channels, 1), nn.Tanh())
