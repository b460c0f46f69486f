"""Checkpoint I/O shared by the semi-supervised trainers and the pretraining runner: atomic writes and the
random-number-generator states that make ``--c`` resume bit-identically.

* :func:`atomic_path` / :func:`atomic_save`: write to ``<file>.tmp`` and ``os.replace`` it over ``<file>``, so a job
  killed while writing never leaves a corrupt or half-written checkpoint.
* :func:`rng_state` / :func:`set_rng_state`: Python, NumPy, torch (and CUDA) generator states as tensors, ints and
  lists only, so that a checkpoint holding them still loads with ``torch.load(weights_only=True)`` (the pretraining
  checkpoints do). :func:`set_rng_state` also accepts the older form with NumPy's own state tuple.
"""
import contextlib
import os
import random
from typing import Iterator

import numpy as np
import torch


@contextlib.contextmanager
def atomic_path(filename: str) -> Iterator[str]:
    """Yield the temporary path to write ``filename`` to; when the block ends without an error, the temporary file
    replaces ``filename`` in one step (a leftover temporary file of a killed job is removed first)."""
    tmp = filename + ".tmp"
    if os.path.exists(tmp):
        os.remove(tmp)
    yield tmp
    os.replace(tmp, filename)


def atomic_save(obj, filename: str) -> None:
    """``torch.save(obj, filename)``, written atomically (:func:`atomic_path`)."""
    with atomic_path(filename) as tmp:
        torch.save(obj, tmp)


def rng_state() -> dict:
    """This process's random-number-generator states (Python, NumPy, torch, and CUDA when available)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore the states of :func:`rng_state` (also the older form holding ``np.random.get_state()`` as is)."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(state["torch"].cpu())
    kind, keys, pos, has_gauss, cached = state["numpy"]
    if isinstance(keys, torch.Tensor):
        keys = keys.numpy()
    np.random.set_state((kind, np.asarray(keys).astype(np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
