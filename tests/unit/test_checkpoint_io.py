"""Checkpoint I/O (nnunet_semi.utils.checkpoint_io) and the semi-supervised trainer's checkpoint state: written
atomically through nnU-Net's own save_checkpoint without replacing torch.save, carried in the logger's checkpoint,
and read back from new and from older checkpoints (state at the top level, NumPy's own RNG tuple)."""
import os
import random

import numpy as np
import torch
from torch import nn

from nnunet_semi.training.logging import CHECKPOINT_KEY, SemiLocalLogger
from nnunet_semi.training.semi_base import nnUNetTrainerSemiSupervised
from nnunet_semi.utils.checkpoint_io import atomic_save, rng_state, set_rng_state


def _draws():
    return random.random(), float(np.random.rand()), float(torch.rand(1))


def test_rng_state_round_trip_and_weights_only(tmp_path):
    state = rng_state()
    first = _draws()
    atomic_save({"rng": state}, str(tmp_path / "c.pth"))
    assert sorted(os.listdir(tmp_path)) == ["c.pth"]  # no temporary file left
    set_rng_state(torch.load(tmp_path / "c.pth", weights_only=True)["rng"])
    assert _draws() == first


def test_older_rng_state_form_is_accepted():
    old = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    first = _draws()
    set_rng_state(old)
    assert _draws() == first


class _Logger:  # nnU-Net's MetaLogger: checkpointing goes to the local logger
    def __init__(self):
        self.local_logger = SemiLocalLogger({})

    def get_checkpoint(self):
        return self.local_logger.get_checkpoint()

    def load_checkpoint(self, checkpoint):
        self.local_logger.load_checkpoint(checkpoint)


class _Trainer(nnUNetTrainerSemiSupervised):
    def extra_checkpoint_state(self):
        return {"refreshes": [2, 4]}

    def load_extra_checkpoint_state(self, state):
        self.loaded_state = state


def _trainer() -> _Trainer:
    """The attributes nnU-Net's save_checkpoint / load_checkpoint read, without building a trainer."""
    trainer = object.__new__(_Trainer)
    trainer.local_rank, trainer.is_ddp, trainer.disable_checkpointing, trainer.was_initialized = 0, False, False, True
    trainer.device = torch.device("cpu")
    trainer.network = nn.Linear(2, 2)
    trainer.optimizer = torch.optim.SGD(trainer.network.parameters(), lr=0.1)
    trainer.grad_scaler, trainer._best_ema, trainer.current_epoch = None, None, 3
    trainer.my_init_kwargs, trainer.inference_allowed_mirroring_axes = {}, (0,)
    trainer.logger, trainer._rng_state_to_restore, trainer.unlabeled_gate = _Logger(), None, None
    trainer.print_to_log_file = lambda *args, **kwargs: None
    return trainer


def test_trainer_state_travels_in_the_logging_entry(tmp_path):
    path = str(tmp_path / "checkpoint_latest.pth")
    save = torch.save
    _trainer().save_checkpoint(path)
    assert torch.save is save and sorted(os.listdir(tmp_path)) == ["checkpoint_latest.pth"]
    checkpoint = torch.load(path, weights_only=False)
    assert CHECKPOINT_KEY not in checkpoint and checkpoint["current_epoch"] == 4
    assert checkpoint["logging"][CHECKPOINT_KEY]["method_state"] == {"refreshes": [2, 4]}
    assert len(checkpoint["logging"][CHECKPOINT_KEY]["rng_states"]) == 1

    resumed = _trainer()
    resumed.load_checkpoint(path)
    assert resumed.loaded_state == {"refreshes": [2, 4]} and resumed._rng_state_to_restore is not None
    assert CHECKPOINT_KEY not in resumed.logger.local_logger.my_fantastic_logging  # not a curve


def test_older_checkpoint_with_the_state_at_the_top_level_loads(tmp_path):
    path = str(tmp_path / "old.pth")
    trainer = _trainer()
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=False)
    state = checkpoint["logging"].pop(CHECKPOINT_KEY)
    old_rng = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    first = _draws()
    checkpoint[CHECKPOINT_KEY] = {**state, "rng_states": [old_rng]}  # as written before the state moved
    torch.save(checkpoint, path)
    resumed = _trainer()
    resumed.load_checkpoint(path)
    assert resumed.loaded_state == {"refreshes": [2, 4]}
    set_rng_state(resumed._rng_state_to_restore)
    assert _draws() == first
