"""Load pretrained weights into a fine-tuning network, with one clear error when they do not fit the plans or come
from a pretraining method the network does not expect."""
import os
import pickle
from typing import Callable, Dict, Iterable, List, Optional, Tuple, Union

import torch
from torch import nn

from nnunet_semi.networks.dual import unwrap
from nnunet_semi.pretrained.contract import (ANY_METHOD_ENV, PRETRAIN_OPTIONS, PretrainedWeightsError, recorded_method,
                                             require_checkpoint)


def check_pretraining_method(checkpoint: dict, checkpoint_file: str, accepted: Iterable[str], user: str) -> str:
    """The method recorded in ``checkpoint['pretraining']['method']`` (``nnunet_semi_pretrain`` writes it); raises
    :class:`PretrainedWeightsError` unless it is one of ``accepted`` or ``nnUNet_semi_pretrained_any=1`` is set.
    ``user`` names who loads the file (a trainer or a pretraining stage) for the message."""
    recorded = recorded_method(checkpoint)
    accepted = sorted(accepted)
    if recorded in accepted or os.environ.get(ANY_METHOD_ENV) == "1":
        return recorded
    commands = " / ".join(f"-m {m}" for m in sorted(PRETRAIN_OPTIONS[a] for a in accepted if a in PRETRAIN_OPTIONS))
    origin = f"was written by {recorded} pretraining" if recorded else \
        "records no pretraining method (checkpoint['pretraining']['method']: not written by nnunet_semi_pretrain)"
    raise PretrainedWeightsError(
        f"{checkpoint_file} {origin}, but {user} starts from {' or '.join(accepted)} pretraining. Fix: use a "
        f"checkpoint of nnunet_semi_pretrain {commands}, or set {ANY_METHOD_ENV}=1 to load it deliberately (keys "
        f"and shapes are still checked).")


def read_checkpoint(checkpoint_file: str, weights_only: bool, user: str) -> dict:
    """``torch.load`` onto the CPU, with :class:`PretrainedWeightsError` for a missing file and, with
    ``weights_only``, for a file that is not a pretraining checkpoint (``user`` names the reader in the message)."""
    try:
        return torch.load(checkpoint_file, map_location="cpu", weights_only=weights_only)
    except FileNotFoundError:
        raise PretrainedWeightsError(f"pretrained checkpoint {checkpoint_file} does not exist") from None
    except pickle.UnpicklingError:
        if not weights_only:
            raise
        raise PretrainedWeightsError(
            f"{checkpoint_file} holds more than tensors (torch.load(weights_only=True) refuses it): it is not a "
            f"checkpoint of nnunet_semi_pretrain, which {user} starts from (e.g. it is an nnU-Net training "
            f"checkpoint). Fix: to start from a trained nnU-Net model use a trainer without pretraining (e.g. "
            f"nnUNetTrainerCPS) with nnUNetv2_train -pretrained_weights; for {user} run nnunet_semi_pretrain "
            f"first.") from None


def load_pretrained_networks(network: nn.Module, checkpoint_file: str, skip: Iterable[str] = (".seg_layers.",),
                             accepted_methods: Optional[Iterable[str]] = None, user: str = "this network",
                             weights_only: bool = True, checkpoint: Optional[dict] = None) -> List[str]:
    """Copy ``checkpoint['network_weights']`` into ``network`` (DDP / compile wrappers are unwrapped).

    Every key of the network except those containing a string of ``skip`` (by default nnU-Net's segmentation
    heads, which fine-tuning trains anew) must exist in the checkpoint with the same shape; extra checkpoint keys
    (e.g. reconstruction heads, projectors) are ignored. ``accepted_methods``: the pretraining methods
    (``Pretrainer.method_name``) whose checkpoints ``user`` accepts (:func:`check_pretraining_method`); None: any.
    The file is read onto the CPU, with ``weights_only=True`` unless ``weights_only=False`` (nnU-Net's own training
    checkpoints hold NumPy values and need it, as in nnU-Net's loader). Nothing is loaded unless everything fits.
    ``checkpoint``: the file's contents when the caller has read it already (``checkpoint_file`` then only names
    it in the messages). Returns the loaded keys.
    """
    if checkpoint is None:
        checkpoint = read_checkpoint(checkpoint_file, weights_only, user)
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


def load_pretraining(network: nn.Module, checkpoint_file: str, what: str, fixes: Union[str, Callable[[], str]],
                     skip: Iterable[str] = (".seg_layers.",), accepted_methods: Optional[Iterable[str]] = None,
                     user: str = "this network") -> List[str]:
    """Find a pretraining checkpoint, else raise, then load it: :class:`PretrainedWeightsError` "No <what> at <file>.
    Fix: <fixes>" when ``checkpoint_file`` does not exist, otherwise :func:`load_pretrained_networks` (the method,
    key and shape checks). Used by the fine-tuning trainers and by pretraining stages that start from another
    stage. Returns the loaded keys."""
    require_checkpoint(checkpoint_file, what, fixes)
    return load_pretrained_networks(network, checkpoint_file, skip=skip, accepted_methods=accepted_methods, user=user)


class EncoderDecoder(nn.Module):
    """A view of ``encoder`` + ``decoder`` (registered, not copied) with the state-dict keys of one planned
    dynamic_network_architectures U-Net (``encoder.*``, ``decoder.*``): loading into it writes into the modules
    it was built from."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder


def planned_networks(network: nn.Module) -> Dict[str, nn.Module]:
    """The parts of ``network`` that are each one planned nnU-Net (named): what a labeled-only nnU-Net checkpoint
    initialises. A wrapper lists them with a ``planned_networks()`` method (two networks of CPS, student and teacher,
    encoder + first decoder of a two-decoder network); any other network is its ``encoder`` + ``decoder`` (extra
    heads, e.g. a contrastive projection head, keep their fresh initialisation)."""
    module = unwrap(network)
    if hasattr(module, "planned_networks"):
        return dict(module.planned_networks())
    return {"network": EncoderDecoder(module.encoder, module.decoder)}


def load_into_planned_networks(network: nn.Module, checkpoint_file: str, skip: Iterable[str] = (".seg_layers.",)
                               ) -> Tuple[Dict[str, int], Dict[str, str]]:
    """``nnUNetv2_train -pretrained_weights`` for a network of this package: a checkpoint of the same network (e.g.
    a finished CPS run for another CPS run) loads as a whole; otherwise the checkpoint (e.g. a labeled-only
    nnU-Net's ``checkpoint_final.pth``) is loaded into every part of :func:`planned_networks` it fits, keys
    containing ``skip`` (the segmentation heads) excepted, as nnU-Net's loader does.

    Returns ``({part: tensors loaded}, {part: why it kept its initialisation})``; raises
    :class:`PretrainedWeightsError` (the first part's mismatch) when it fits none."""
    checkpoint = read_checkpoint(checkpoint_file, False, "-pretrained_weights")  # read once for every part
    try:
        return {"network": len(load_pretrained_networks(network, checkpoint_file, skip, checkpoint=checkpoint))}, {}
    except PretrainedWeightsError as whole:
        if "does not fit" not in str(whole):
            raise  # missing file, no 'network_weights'
    loaded, kept = {}, {}
    for name, part in planned_networks(network).items():
        try:
            loaded[name] = len(load_pretrained_networks(part, checkpoint_file, skip, checkpoint=checkpoint))
        except PretrainedWeightsError as error:
            kept[name] = str(error)
    if not loaded:
        name, reason = next(iter(kept.items()))
        raise PretrainedWeightsError(f"-pretrained_weights: no network of this trainer fits the checkpoint ({name}: "
                                     f"{reason})")
    return loaded, kept
