"""Helpers for network outputs: a tensor, or a list of tensors (one per scale) under deep supervision; a network of
several members or heads (:class:`~nnunet_semi.networks.dual.DualNetwork`, DTC's segmentation + SDF heads) returns a
tuple with one such output per member."""
from typing import List, Sequence, Tuple, Union

import torch

Output = Union[torch.Tensor, List[torch.Tensor]]


def split_batch(output: Output, n: int) -> Tuple[Output, Output]:
    """Split an output at batch index ``n`` (e.g. labeled | unlabeled samples of one forward pass)."""
    if isinstance(output, (list, tuple)):
        return [o[:n] for o in output], [o[n:] for o in output]
    return output[:n], output[n:]


def split_output(output, sizes: Sequence[int]):
    """Split the output of one forward pass over concatenated batches of ``sizes`` samples back into one part per
    batch (views, no copy).

    A tensor or a deep-supervision list -> a list with one part per batch (each part a tensor, or a list of scales);
    a tuple (one output per member network or head) -> a tuple with that list for every member.
    """
    sizes = [int(s) for s in sizes]
    if isinstance(output, tuple):
        return tuple(split_output(o, sizes) for o in output)
    if isinstance(output, list):
        per_scale = [split_output(o, sizes) for o in output]
        return [[scale[i] for scale in per_scale] for i in range(len(sizes))]
    if output.shape[0] != sum(sizes):
        raise ValueError(f"split_output: the output has {output.shape[0]} samples, the batches {sizes} sum to "
                         f"{sum(sizes)}")
    return list(output.split(sizes))


def full_resolution(output: Output) -> torch.Tensor:
    """The full-resolution output (the first scale under deep supervision)."""
    return output[0] if isinstance(output, (list, tuple)) else output
