"""Load pretrained weights into a fine-tuning network, with one clear error when they do not fit the plans or come
from a pretraining method the network does not expect."""
import os
from typing import Iterable, List, Optional

import torch
from torch import nn

from nnunet_semi.networks.dual import unwrap


#: set to 1 to load a checkpoint of any pretraining method (deliberate cross-loading; keys and shapes still checked)
ANY_METHOD_ENV = "nnUNet_semi_pretrained_any"


class PretrainedWeightsError(ValueError):
    """The pretrained checkpoint does not fit the network built from the plans, or comes from another method."""


def check_pretraining_method(checkpoint: dict, checkpoint_file: str, accepted: Iterable[str], user: str) -> str:
    """The method recorded in ``checkpoint['pretraining']['method']`` (``nnunet_semi_pretrain`` writes it); raises
    :class:`PretrainedWeightsError` unless it is one of ``accepted`` or ``nnUNet_semi_pretrained_any=1`` is set.
    ``user`` names who loads the file (a trainer or a pretraining stage) for the message."""
    recorded = checkpoint.get("pretraining", {}).get("method") if isinstance(checkpoint.get("pretraining"), dict) \
        else None
    accepted = sorted(accepted)
    if recorded in accepted or os.environ.get(ANY_METHOD_ENV) == "1":
        return recorded
    from pretraining.cli import PRETRAINERS  # the -m names that write the accepted methods

    commands = " / ".join(f"-m {m}" for m, cls in sorted(PRETRAINERS.items()) if cls.method_name in accepted)
    origin = f"was written by {recorded} pretraining" if recorded else \
        "records no pretraining method (checkpoint['pretraining']['method']: not written by nnunet_semi_pretrain)"
    raise PretrainedWeightsError(
        f"{checkpoint_file} {origin}, but {user} starts from {' or '.join(accepted)} pretraining. Fix: use a "
        f"checkpoint of nnunet_semi_pretrain {commands}, or set {ANY_METHOD_ENV}=1 to load it deliberately (keys "
        f"and shapes are still checked).")


def load_pretrained_networks(network: nn.Module, checkpoint_file: str, skip: Iterable[str] = (".seg_layers.",),
                             accepted_methods: Optional[Iterable[str]] = None, user: str = "this network"
                             ) -> List[str]:
    """Copy ``checkpoint['network_weights']`` into ``network`` (DDP / compile wrappers are unwrapped).

    Every key of the network except those containing a string of ``skip`` (by default nnU-Net's segmentation
    heads, which fine-tuning trains anew) must exist in the checkpoint with the same shape; extra checkpoint keys
    (e.g. reconstruction heads, projectors) are ignored. ``accepted_methods``: the pretraining methods
    (``Pretrainer.method_name``) whose checkpoints ``user`` accepts (:func:`check_pretraining_method`); None: any.
    The file is read with ``weights_only=True`` onto the CPU. Nothing is loaded unless everything fits. Returns the
    loaded keys.
    """
    try:
        checkpoint = torch.load(checkpoint_file, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise PretrainedWeightsError(f"pretrained checkpoint {checkpoint_file} does not exist") from None
    if not isinstance(checkpoint, dict) or "network_weights" not in checkpoint:
        raise PretrainedWeightsError(f"{checkpoint_file} has no 'network_weights' entry: it is not a checkpoint "
                                     f"written by nnunet_semi_pretrain or nnU-Net")
    if accepted_methods is not None:
        check_pretraining_method(checkpoint, checkpoint_file, accepted_methods, user)
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
