"""Two networks behind one ``nn.Module``, so that nnU-Net's machinery (one optimizer, one DDP wrapper, one
``network_weights`` entry in the checkpoint, the predictor's strict ``load_state_dict``) handles both at once.

* training mode: ``forward(x)`` returns ``(out_a, out_b)``, the raw outputs of both networks (lists under deep
  supervision), computed in a single forward call (one DDP reducer, collectives identical on every rank);
* eval mode (validation, ``nnUNetv2_predict``): the ensemble. Each scale returns ``log(mean_k softmax(out_k))``,
  a valid logit map whose softmax is the mean of the two networks' softmax outputs, so nnU-Net's sliding-window
  averaging, mirroring and export work unchanged;
* eval mode with ``nnUNet_semi_predict_member=a`` (or ``b``) in the environment: member ``a`` (``b``) alone, its raw
  output (only that member runs). This is the single-network control of the benchmark protocol (does a two-network
  trainer win because of the unlabeled images, or because two networks predict?): e.g.
  ``nnUNet_semi_predict_member=a nnUNetv2_predict ... -tr nnUNetTrainerCPS``. Read when the network is built
  (nnU-Net builds it anew in every predict / validation process); training is unaffected.
"""
import os
from typing import List, Optional, Sequence

import torch
from torch import nn
from torch._dynamo import OptimizedModule
from torch.nn.parallel import DistributedDataParallel

from nnunet_semi.networks.outputs import Output


def unwrap(module: nn.Module) -> nn.Module:
    """The plain module inside DDP and/or ``torch.compile`` wrappers."""
    if isinstance(module, DistributedDataParallel):
        module = module.module
    if isinstance(module, OptimizedModule):
        module = module._orig_mod
    return module


def fuse_softmax_logits(outputs: Sequence[torch.Tensor]) -> torch.Tensor:
    """``log(mean_k softmax(outputs[k]))`` over the class axis 1, computed stably with logsumexp."""
    log_probs = torch.stack([torch.log_softmax(o, 1) for o in outputs])
    return torch.logsumexp(log_probs, 0) - torch.log(torch.tensor(float(len(outputs)), device=log_probs.device,
                                                                   dtype=log_probs.dtype))


def train_or_ensemble(outputs: Sequence[Output], training: bool):
    """Training: the members' outputs as a tuple. Eval: their softmax-mean ensemble as logits, per deep-supervision
    scale when the outputs are lists (the contract every multi-branch network here follows)."""
    if training:
        return tuple(outputs)
    if isinstance(outputs[0], (list, tuple)):
        return [fuse_softmax_logits(scale) for scale in zip(*outputs)]
    return fuse_softmax_logits(outputs)


PREDICT_MEMBER_ENV = "nnUNet_semi_predict_member"


def predict_member_from_env(environ=os.environ) -> Optional[int]:
    """Index of the member that predicts alone in eval mode (``nnUNet_semi_predict_member``: ``a`` -> 0, ``b`` ->
    1), None (unset or empty) for the ensemble."""
    value = environ.get(PREDICT_MEMBER_ENV, "").strip().lower()
    if not value:
        return None
    if value not in ("a", "b"):
        raise ValueError(f"{PREDICT_MEMBER_ENV}={environ[PREDICT_MEMBER_ENV]!r} is not a member of a two-network "
                         f"trainer. Fix: set it to 'a' or 'b' (one network predicts alone), or unset it (the "
                         f"ensemble of both).")
    return "ab".index(value)


class DualNetwork(nn.Module):
    """Networks ``net_a`` and ``net_b`` (state-dict keys ``net_a.*`` / ``net_b.*``), see the module docstring."""

    def __init__(self, net_a: nn.Module, net_b: nn.Module):
        super().__init__()
        self.net_a = net_a
        self.net_b = net_b
        #: eval mode: None = the ensemble; 0 / 1 = that member alone (``nnUNet_semi_predict_member``)
        self.predict_member: Optional[int] = predict_member_from_env()

    @property
    def members(self) -> List[nn.Module]:
        return [self.net_a, self.net_b]

    def planned_networks(self):
        """Both members (``-pretrained_weights`` with a single-network checkpoint loads into each that fits)."""
        return {"net_a": self.net_a, "net_b": self.net_b}

    def set_deep_supervision(self, enabled: bool) -> None:
        for net in self.members:
            net.decoder.deep_supervision = enabled

    def forward(self, x: torch.Tensor):
        if not self.training and self.predict_member is not None:
            return self.members[self.predict_member](x)
        return train_or_ensemble([net(x) for net in self.members], self.training)
