"""Load pretrained weights into a fine-tuning network, with one clear error when they do not fit the plans."""
from typing import Iterable, List

import torch
from torch import nn

from nnunet_semi.networks.dual import unwrap


class PretrainedWeightsError(ValueError):
    """The pretrained checkpoint does not fit the network built from the plans."""


def load_pretrained_networks(network: nn.Module, checkpoint_file: str,
                             skip: Iterable[str] = (".seg_layers.",)) -> List[str]:
    """Copy ``checkpoint['network_weights']`` into ``network`` (DDP / compile wrappers are unwrapped).

    Every key of the network except those containing a string of ``skip`` (by default nnU-Net's segmentation
    heads, which fine-tuning trains anew) must exist in the checkpoint with the same shape; extra checkpoint keys
    (e.g. reconstruction heads, projectors) are ignored. The file is read with ``weights_only=True`` onto the CPU.
    Returns the loaded keys.
    """
    try:
        checkpoint = torch.load(checkpoint_file, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise PretrainedWeightsError(f"pretrained checkpoint {checkpoint_file} does not exist") from None
    if not isinstance(checkpoint, dict) or "network_weights" not in checkpoint:
        raise PretrainedWeightsError(f"{checkpoint_file} has no 'network_weights' entry: it is not a checkpoint "
                                     f"written by nnunet_semi_pretrain or nnU-Net")
    weights = checkpoint["network_weights"]
    target = unwrap(network).state_dict()
    skip = tuple(skip)
    loaded = {}
    for key, value in target.items():
        if any(s in key for s in skip):
            continue
        if key not in weights:
            raise PretrainedWeightsError(
                f"{checkpoint_file} does not fit this network: key '{key}' (shape {tuple(value.shape)}) is missing "
                f"from the checkpoint. Fix: pretrain with the same plans (-p) and configuration (-c) as this training.")
        if weights[key].shape != value.shape:
            raise PretrainedWeightsError(
                f"{checkpoint_file} does not fit this network: key '{key}' has shape {tuple(weights[key].shape)} "
                f"in the checkpoint but {tuple(value.shape)} in the network planned for this training. Fix: pretrain "
                f"with the same plans (-p) and configuration (-c) as this training.")
        loaded[key] = weights[key]
    target.update(loaded)
    unwrap(network).load_state_dict(target)
    return list(loaded)
