"""One shared encoder and two decoders that differ in how they up-sample (IDEAL Fig. 2b; MC-Net uses the same idea).

Decoder 1 is the planned nnU-Net decoder (transposed convolutions). Decoder 2 has the same stages, skip connections
and segmentation heads, but each transposed convolution is replaced by interpolation (bilinear in 2D, trilinear in
3D) followed by a convolution (:class:`InterpolationUpsampling`). Decoder 2 comes from a second planned network, so
its weights are initialised independently of decoder 1 ("two decoders of different architecture initialization").
Both decoders read the skips of the same encoder.

* training mode: ``forward(x)`` returns ``(out_1, out_2)``, the raw outputs of both decoders (lists of scales under
  deep supervision), from one encoder pass;
* eval mode (validation, ``nnUNetv2_predict``): ``log(mean_k softmax(out_k))`` per scale
  (:func:`~nnunet_semi.networks.dual.fuse_softmax_logits`): one logits tensor, or one per scale with deep
  supervision on; or, with ``inference_decoder=k`` (1 or 2), decoder k's raw output alone (MC-Net evaluates
  decoder 1; the other decoder is then not run).

State-dict keys: ``encoder.*``, ``decoder_1.*``, ``decoder_2.*`` (plus the aliases ``decoder_k.encoder.*`` that
dynamic_network_architectures' decoders keep of their encoder; they are the shared encoder's tensors). Encoder
weights pretrained on the planned network's ``encoder`` therefore load under the same keys.
"""
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from dynamic_network_architectures.initialization.weight_init import InitWeights_He
from torch import nn

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager

from nnunet_semi.networks.dual import train_or_ensemble

_LINEAR_MODES = {1: "linear", 2: "bilinear", 3: "trilinear"}


class InterpolationUpsampling(nn.Module):
    """Interpolation by ``scale_factor`` (per axis) followed by a ``kernel_size`` convolution ``in -> out``
    channels (same padding): the replacement of a transposed convolution. ``mode=None`` picks the linear mode of
    the dimensionality (bilinear / trilinear); ``'nearest'`` works too."""

    def __init__(self, conv_op, in_channels: int, out_channels: int, scale_factor: Sequence[int],
                 kernel_size: Sequence[int], bias: bool = True, mode: Optional[str] = None):
        super().__init__()
        ndim = len(scale_factor)
        self.scale_factor = tuple(float(s) for s in scale_factor)
        self.mode = mode or _LINEAR_MODES[ndim]
        if any(k % 2 == 0 for k in kernel_size):
            raise ValueError(f"kernel size {list(kernel_size)} must be odd (same padding)")
        self.conv = conv_op(in_channels, out_channels, tuple(kernel_size), 1, tuple(k // 2 for k in kernel_size),
                            bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        align = False if self.mode in ("linear", "bilinear", "trilinear", "bicubic") else None
        return self.conv(F.interpolate(x, scale_factor=self.scale_factor, mode=self.mode, align_corners=align))

    def extra_repr(self) -> str:
        return f"scale_factor={self.scale_factor}, mode={self.mode}"


def use_interpolation_upsampling(decoder: nn.Module, mode: Optional[str] = None) -> nn.Module:
    """Replace (in place) every transposed convolution of a dynamic_network_architectures ``UNetDecoder`` by
    :class:`InterpolationUpsampling` with the same channels and stride; the convolution's kernel is the one the
    plans give the decoder stage it feeds. New modules get nnU-Net's He initialisation. Returns ``decoder``."""
    encoder = decoder.encoder
    for s, transposed in enumerate(decoder.transpconvs):
        stride = np.broadcast_to(np.atleast_1d(encoder.strides[-(s + 1)]), (transposed.weight.ndim - 2,))
        kernel = np.broadcast_to(np.atleast_1d(encoder.kernel_sizes[-(s + 2)]), stride.shape)
        up = InterpolationUpsampling(encoder.conv_op, transposed.in_channels, transposed.out_channels,
                                     [int(v) for v in stride], [int(v) for v in kernel],
                                     bias=transposed.bias is not None, mode=mode)
        up.apply(InitWeights_He(1e-2))
        decoder.transpconvs[s] = up
    return decoder


class TwoDecoderNetwork(nn.Module):
    """``encoder`` + ``decoder_1`` + ``decoder_2`` (see the module docstring)."""

    def __init__(self, encoder: nn.Module, decoder_1: nn.Module, decoder_2: nn.Module,
                 inference_decoder: Optional[int] = None):
        super().__init__()
        if inference_decoder not in (None, 1, 2):
            raise ValueError(f"inference_decoder must be None (softmax mean of both), 1 or 2, got {inference_decoder}")
        self.inference_decoder = inference_decoder
        self.encoder = encoder
        self.decoder_1 = decoder_1
        self.decoder_2 = decoder_2
        for decoder in (decoder_1, decoder_2):
            decoder.encoder = encoder  # the decoders' encoder reference is the shared encoder (no stray copies)

    @property
    def decoders(self):
        return [self.decoder_1, self.decoder_2]

    def planned_networks(self):
        """The shared encoder with decoder 1 (the planned decoder); decoder 2 (interpolation up-sampling, another
        architecture) keeps its own initialisation."""
        from nnunet_semi.pretrained.loading import EncoderDecoder

        return {"encoder + decoder_1": EncoderDecoder(self.encoder, self.decoder_1)}

    def set_deep_supervision(self, enabled: bool) -> None:
        for decoder in self.decoders:
            decoder.deep_supervision = enabled

    def forward(self, x: torch.Tensor):
        skips = self.encoder(x)
        if not self.training and self.inference_decoder is not None:
            return self.decoders[self.inference_decoder - 1](skips)
        return train_or_ensemble([decoder(skips) for decoder in self.decoders], self.training)


def build_two_decoder_network(plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                              num_input_channels: int, num_output_channels: int,
                              enable_deep_supervision: bool = True,
                              interpolation_mode: Optional[str] = None,
                              inference_decoder: Optional[int] = None) -> TwoDecoderNetwork:
    """The planned network's encoder and decoder (decoder 1) + the decoder of a second, independently initialised
    planned network with interpolation up-sampling (decoder 2). Signature of nnU-Net's
    ``build_network_architecture``, for a trainer's static method; ``inference_decoder``: see
    :class:`TwoDecoderNetwork`."""
    first, second = (nnUNetTrainer.build_network_architecture(plans_manager, configuration_manager,
                                                              num_input_channels, num_output_channels,
                                                              enable_deep_supervision) for _ in range(2))
    return TwoDecoderNetwork(first.encoder, first.decoder,
                             use_interpolation_upsampling(second.decoder, mode=interpolation_mode),
                             inference_decoder=inference_decoder)
