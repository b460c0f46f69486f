"""UniMatch's feature perturbation for nnU-Net's UNets, without changing the network or its weights.

UniMatch (Yang et al., CVPR 2023, Sec. 3.2) perturbs the encoder features of the weak view with channel dropout
(p = 0.5) before the decoder, and decodes clean and perturbed features in one pass. nnU-Net's UNets
(dynamic_network_architectures: ``forward(x) = decoder(encoder(x))``, ``decoder(skips)``) get the same through a
forward pre-hook on the decoder: while :meth:`SkipFeatureDropout.active` is on, the decoder receives every skip
tensor with a channel-dropout copy of the batch rows ``[start, stop)`` appended, so the output has
``stop - start`` extra rows at its end (every deep-supervision scale).

Because the network's own ``forward`` runs (through DDP's wrapper, with all parameters used once), the perturbed
stream is DDP-safe; the hook adds nothing to the state_dict, so ``nnUNetv2_predict`` loads the plain network.
"""
from contextlib import contextmanager
from typing import Optional, Tuple

import torch
from torch import nn

from nnunet_semi.networks.teacher import channel_dropout


class SkipFeatureDropout:
    """Forward pre-hook on ``network.decoder`` that appends channel-dropout copies of some rows of every skip."""

    def __init__(self, network: nn.Module, p: float = 0.5):
        if not hasattr(network, "decoder") or not hasattr(network, "encoder"):
            raise TypeError(f"feature perturbation needs an encoder/decoder UNet (dynamic_network_architectures); got "
                            f"{type(network).__name__}")
        self.p = p
        self.rows: Optional[Tuple[int, int]] = None
        self.handle = network.decoder.register_forward_pre_hook(self._hook)

    def _hook(self, module, args):
        if self.rows is None:
            return None
        start, stop = self.rows
        skips = args[0]
        perturbed = [torch.cat((s, channel_dropout(s[start:stop], self.p))) for s in skips]
        return (perturbed,) + tuple(args[1:])

    @contextmanager
    def active(self, start: int, stop: int):
        """Within the block, network outputs get ``stop - start`` extra rows: the perturbed rows ``[start, stop)``."""
        self.rows = (start, stop)
        try:
            yield
        finally:
            self.rows = None

    def remove(self) -> None:
        self.handle.remove()
