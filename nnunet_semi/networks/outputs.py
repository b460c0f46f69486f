"""Helpers for network outputs: a tensor, or a list of tensors (one per scale) under deep supervision."""
from typing import List, Tuple, Union

import torch

Output = Union[torch.Tensor, List[torch.Tensor]]


def split_batch(output: Output, n: int) -> Tuple[Output, Output]:
    """Split an output at batch index ``n`` (e.g. labeled | unlabeled samples of one forward pass)."""
    if isinstance(output, (list, tuple)):
        return [o[:n] for o in output], [o[n:] for o in output]
    return output[:n], output[n:]


def full_resolution(output: Output) -> torch.Tensor:
    """The full-resolution output (the first scale under deep supervision)."""
    return output[0] if isinstance(output, (list, tuple)) else output
