"""The semi-supervised base trainer: nnU-Net's trainer plus an unlabeled data stream.

What it adds to ``nnUNetTrainer`` (and nothing else; the labeled stream, augmentation, validation, inference,
logger and checkpoints stay nnU-Net's):

* an unlabeled loader over ``imagesUnlabeled`` (preprocessed automatically with the dataset's plans, cached), with
  nnU-Net's own training augmentation, ``unlabeled_batch_ratio`` x the per-rank labeled batch size, started and
  stopped with the labeled loaders;
* a training step template: a method implements :meth:`compute_losses` only;
* extra per-epoch curves (``extra_curves``) in nnU-Net's logger and progress.png;
* exact resume: random-number-generator states (per DDP rank) go into the checkpoint and are restored right
  before the first resumed epoch; checkpoints are written atomically.

Reproducibility: set ``nnUNet_semi_seed=<int>`` to seed Python, NumPy and torch at start-up. Bit-identical resume
holds for single-process data augmentation (``nnUNet_n_proc_DA=0``) on deterministic kernels (CPU); with
augmentation workers nnU-Net's loaders are non-deterministic by design and a resumed run continues from the exact
weights, optimizer and logger state but not the exact batch sequence.
"""
import contextlib
import os
import random
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from batchgenerators.dataloading.nondet_multi_threaded_augmenter import NonDetMultiThreadedAugmenter
from batchgenerators.dataloading.single_threaded_augmenter import SingleThreadedAugmenter
from batchgenerators.utilities.file_and_folder_operations import join
from torch import autocast
from torch import distributed as dist

from nnunetv2.paths import nnUNet_raw
from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2
from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.collate_outputs import collate_outputs
from nnunetv2.utilities.default_n_proc_DA import get_allowed_n_proc_DA
from nnunetv2.utilities.helpers import dummy_context

from nnunet_semi.augmentation.weak_strong import crop_flip_weak_transform
from nnunet_semi.data.unlabeled import UnlabeledDataError, ensure_unlabeled_preprocessed
from nnunet_semi.networks.dual import DualNetwork, unwrap
from nnunet_semi.networks.outputs import full_resolution, split_output
from nnunet_semi.pretrained.loading import load_into_planned_networks
from nnunet_semi.schedules import LabeledDiceGate, labeled_dice_statistics, sigmoid_rampup
from nnunet_semi.training.logging import CHECKPOINT_KEY, SemiLocalLogger, semi_checkpoint_state  # noqa: F401
from nnunet_semi.utils.checkpoint_io import atomic_path, rng_state, set_rng_state
from nnunet_semi.utils.environment import SEED_ENV, THREADS_ENV



def apply_run_environment(local_rank: int = 0) -> None:
    """Start-up settings every nnunet-semi trainer honours: ``nnUNet_semi_seed=<int>`` seeds Python, NumPy and torch
    (``+ local_rank`` under DDP); ``nnUNet_semi_threads=<int>`` sets torch's thread count (after nnU-Net's
    ``-device cpu`` set it to all cores)."""
    threads = os.environ.get(THREADS_ENV)
    if threads is not None:
        try:
            n = int(threads)
        except ValueError:
            n = 0
        if n < 1:
            raise ValueError(f"{THREADS_ENV}={threads!r}: expected a positive integer (torch threads per process). "
                             f"Fix: export {THREADS_ENV}=1, or unset it to keep nnU-Net's choice.")
        torch.set_num_threads(n)
    seed = os.environ.get(SEED_ENV)
    if seed is not None:
        nnUNetTrainerSemiSupervised.seed_everything(int(seed) + local_rank)


#: the curves of a trainer that uses the unlabeled-term gate (``unsup_gate_dice``): add them to its ``extra_curves``
GATE_CURVES = {"unsup_gate": "unlabeled-term gate (0 closed, ramps to 1)",
               "labeled_dice_ema_min": "labeled-batch Dice, moving average, lowest class"}


class GatedUnlabeledTerm:
    """Mixin of the ``_gate`` variants: the method's unlabeled terms start only once its network(s) segment every
    foreground class of their labeled training batches with Dice >= :attr:`gate_dice` (moving average,
    ``unsup_gate_momentum`` per step), then ramp up over ``unsup_gate_rampup_fraction`` of all steps
    (:class:`~nnunet_semi.schedules.LabeledDiceGate`); before that the trainer trains on its labeled term alone. It
    sets ``unsup_gate_dice`` and adds :data:`GATE_CURVES` to the class's ``extra_curves``. Put it first:
    ``class nnUNetTrainerX_gate(GatedUnlabeledTerm, nnUNetTrainerX)``."""
    #: the labeled-batch Dice (every foreground class) at which the gate opens
    gate_dice: float = 0.5

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.extra_curves = {**getattr(cls, "extra_curves", {}), **GATE_CURVES}

    # nnUNetTrainer.__init__ records its caller's arguments by inspecting the signature of ``self.__init__``: keep
    # nnU-Net's explicit signature here, not ``*args, **kwargs``
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.unsup_gate_dice = self.gate_dice


class nnUNetTrainerSemiSupervised(nnUNetTrainer):
    """Base class of the semi-supervised trainers (not meant to be trained itself: no unlabeled loss)."""

    #: per-epoch curves beyond nnU-Net's: {key returned by compute_losses: legend label}
    extra_curves: Dict[str, str] = {}
    #: False for methods that fine-tune on labeled data only (no unlabeled stream; ``data_unlabeled`` is None)
    uses_unlabeled: bool = True

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        #: unlabeled samples per labeled sample in each step (per DDP rank)
        self.unlabeled_batch_ratio = 1.0
        #: the unlabeled stream's augmentation: "nnunet" (nnU-Net's own training augmentation) or "crop_flip"
        #: (a crop and random mirroring only: :func:`~nnunet_semi.augmentation.weak_strong.crop_flip_weak_transform`)
        self.unlabeled_augmentation = "nnunet"
        #: None (default): the unlabeled term counts from the first step, as in the papers. A Dice in (0, 1]: it
        #: starts once the network segments every foreground class of its labeled batches with that Dice (moving
        #: average, ``unsup_gate_momentum`` per step), then ramps up over ``unsup_gate_rampup_fraction`` of all
        #: steps (:class:`~nnunet_semi.schedules.LabeledDiceGate`; methods read it through :meth:`unsup_gate_factor`)
        self.unsup_gate_dice: Optional[float] = None
        self.unsup_gate_momentum = 0.98
        self.unsup_gate_rampup_fraction = 0.1
        self.unlabeled_gate: Optional[LabeledDiceGate] = None
        self.unlabeled_batch_size: Optional[int] = None  # -> _set_batch_size_and_oversample
        self.dataloader_unlabeled = None  # -> get_dataloaders
        self.step_in_epoch = 0  # optimizer steps done in the current epoch (reset at every epoch start)
        self._rng_state_to_restore = None
        self.logger.local_logger = SemiLocalLogger(self.extra_curves)
        apply_run_environment(self.local_rank)

    @staticmethod
    def seed_everything(seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)

    # ------------------------------------------------------------------ set-up
    def initialize(self):
        if self.is_cascaded:
            raise NotImplementedError("nnunet-semi trainers do not support cascaded configurations yet.")
        if self.label_manager.has_regions:
            raise NotImplementedError("nnunet-semi trainers need softmax (label-based) training; region-based "
                                      "training (dataset.json 'regions_class_order') is not supported.")
        super().initialize()

    def _set_batch_size_and_oversample(self):
        super()._set_batch_size_and_oversample()  # per-rank labeled batch size under DDP
        self.unlabeled_batch_size = max(1, int(round(self.unlabeled_batch_ratio * self.batch_size)))

    def unlabeled_folder(self) -> str:
        """Preprocess ``imagesUnlabeled`` if needed (rank 0; cached, incremental) and return the folder."""
        if self.local_rank == 0:
            if not nnUNet_raw.is_set():
                raise UnlabeledDataError(
                    "nnUNet_raw is not set: the unlabeled images are read from "
                    "$nnUNet_raw/<dataset>/imagesUnlabeled. Fix: export nnUNet_raw=<your raw data folder>.")
            folder = ensure_unlabeled_preprocessed(
                join(nnUNet_raw.get(), self.plans_manager.dataset_name), self.preprocessed_dataset_folder_base,
                self.plans_manager, self.configuration_manager, self.dataset_json,
                num_processes=max(1, get_allowed_n_proc_DA()), show_progress=True,
                log=self.print_to_log_file)  # warnings (equal ids, label maps, orientation) reach the training log
            objects = [folder]
        else:
            objects = [None]
        if self.is_ddp:
            dist.broadcast_object_list(objects, src=0)
        return objects[0]

    def get_unlabeled_transforms(self):
        """nnU-Net's own training augmentation (``unlabeled_augmentation = "nnunet"``) or a crop and random
        mirroring only (``"crop_flip"``); no deep-supervision targets (unlabeled batches have none)."""
        rotation, dummy_2d, _, mirror_axes = self.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        if self.unlabeled_augmentation == "crop_flip":
            return crop_flip_weak_transform(self.configuration_manager.patch_size, mirror_axes,
                                            self.configuration_manager.use_mask_for_norm)
        if self.unlabeled_augmentation != "nnunet":
            raise ValueError(f"unlabeled_augmentation must be 'nnunet' or 'crop_flip', got "
                             f"{self.unlabeled_augmentation!r}")
        return self.get_training_transforms(
            self.configuration_manager.patch_size, rotation, None, mirror_axes, dummy_2d,
            use_mask_for_norm=self.configuration_manager.use_mask_for_norm,
            is_cascaded=False, foreground_labels=self.label_manager.foreground_labels,
            regions=None, ignore_label=self.label_manager.ignore_label)

    def get_dataloaders(self):
        dl_train, dl_val = super().get_dataloaders()
        if not self.uses_unlabeled:
            return dl_train, dl_val
        dataset = nnUNetDatasetBlosc2(self.unlabeled_folder())
        _, _, initial_patch_size, _ = self.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        loader = nnUNetDataLoader(dataset, self.unlabeled_batch_size, initial_patch_size,
                                  self.configuration_manager.patch_size, self.label_manager,
                                  oversample_foreground_percent=0.0, transforms=self.get_unlabeled_transforms())
        n_proc = get_allowed_n_proc_DA()
        if n_proc == 0:
            self.dataloader_unlabeled = SingleThreadedAugmenter(loader, None)
        else:
            self.dataloader_unlabeled = NonDetMultiThreadedAugmenter(
                loader, None, num_processes=max(1, n_proc // 2), num_cached=max(3, n_proc // 4), seeds=None,
                pin_memory=self.device.type == "cuda", wait_time=0.002)
        _ = next(self.dataloader_unlabeled)  # start it, as nnU-Net does with its own loaders
        self.print_to_log_file(f"Unlabeled stream: {len(dataset.identifiers)} cases, batch size "
                               f"{self.unlabeled_batch_size} per step (labeled: {self.batch_size})")
        return dl_train, dl_val

    def on_train_start(self):
        super().on_train_start()
        if self._rng_state_to_restore is not None:
            # after the loaders were built (building them draws random numbers), so that the first resumed epoch
            # sees exactly the random stream of the uninterrupted run
            set_rng_state(self._rng_state_to_restore)
            self._rng_state_to_restore = None

    def on_train_epoch_start(self):
        super().on_train_epoch_start()
        self.step_in_epoch = 0

    @property
    def global_step(self) -> int:
        """Optimizer steps done before the current one. Derived from the epoch counter, so a run resumed from an
        epoch checkpoint continues the same count (schedules need no extra checkpoint state)."""
        return self.current_epoch * self.num_iterations_per_epoch + self.step_in_epoch

    def training_progress(self) -> float:
        """``global_step / total steps`` in [0, 1): the time axis of ramp-ups and schedules."""
        return self.global_step / float(self.num_epochs * self.num_iterations_per_epoch)

    def step_rampup(self, weight: float, rampup_fraction: float) -> float:
        """``weight`` times the sigmoid ramp-up over the first ``rampup_fraction`` of all optimizer steps (per step,
        on :meth:`training_progress`; 0 = constant ``weight``)."""
        return weight * sigmoid_rampup(self.training_progress(), rampup_fraction)

    def epoch_rampup(self, weight: float, rampup_epochs: Optional[int] = None) -> float:
        """``weight`` times the sigmoid ramp-up ``exp(-5 (1 - epoch / rampup_epochs)^2)``, per epoch, over
        ``rampup_epochs`` (None: the whole training)."""
        return weight * sigmoid_rampup(self.current_epoch, self.num_epochs if rampup_epochs is None else rampup_epochs)

    def observe_labeled(self, outputs: Sequence, target) -> None:
        """Feed the unlabeled-term gate (``unsup_gate_dice``; nothing when it is off) with this step's labeled
        outputs (one per network, deep-supervision lists or tensors) against the labeled target. Called once per
        step by the methods that use the gate; under DDP the counts are all-reduced (every rank, every step)."""
        if self.unsup_gate_dice is None:
            return
        labels = target[0] if isinstance(target, (list, tuple)) else target
        statistics = sum(labeled_dice_statistics(full_resolution(o), labels, self.label_manager.ignore_label)
                         for o in outputs)
        if self.is_ddp:
            dist.all_reduce(statistics)
        if self.unlabeled_gate is None:
            self.unlabeled_gate = LabeledDiceGate(statistics.shape[1], self.unsup_gate_dice, self.unsup_gate_momentum)
        self.unlabeled_gate.update(statistics.cpu(), self.global_step)

    def unsup_gate_factor(self) -> float:
        """The factor of the unlabeled weight from the gate: 1 when ``unsup_gate_dice`` is None (no gate); else 0
        until the gate opens, then its ramp-up over ``unsup_gate_rampup_fraction`` of all steps."""
        if self.unsup_gate_dice is None:
            return 1.0
        if self.unlabeled_gate is None:
            return 0.0
        total = self.num_epochs * self.num_iterations_per_epoch
        return self.unlabeled_gate.factor(self.global_step, self.unsup_gate_rampup_fraction * total)

    def gate_curves(self) -> Dict[str, float]:
        """The gate's per-step curves (:data:`GATE_CURVES`); none when the gate is off."""
        if self.unsup_gate_dice is None:
            return {}
        ema = self.unlabeled_gate.dice_ema if self.unlabeled_gate is not None else [0.0]
        return {"unsup_gate": self.unsup_gate_factor(), "labeled_dice_ema_min": float(min(ema))}

    def on_train_end(self):
        if isinstance(self.dataloader_unlabeled, NonDetMultiThreadedAugmenter):
            self.dataloader_unlabeled._finish()
        super().on_train_end()

    def set_deep_supervision_enabled(self, enabled: bool):
        mod = unwrap(self.network)
        if hasattr(mod, "set_deep_supervision"):
            mod.set_deep_supervision(enabled)
        else:
            super().set_deep_supervision_enabled(enabled)

    # ------------------------------------------------------------------ training step
    def compute_losses(self, data: torch.Tensor, target, data_unlabeled: torch.Tensor
                       ) -> Tuple[torch.Tensor, torch.Tensor, Dict[str, float]]:
        """Method-specific: return ``(loss_to_backpropagate, loss_to_log, {curve: value})``."""
        raise NotImplementedError

    def forward_joint(self, *batches: torch.Tensor):
        """One forward pass of ``self.network`` over ``batches`` concatenated along the batch axis (labeled first,
        then the unlabeled inputs or views): one graph, one pass through every layer for all samples, as the
        methods' reference implementations do. Returns ``(output, parts)``: the output of the whole batch as the
        network returns it, and :func:`~nnunet_semi.networks.outputs.split_output` of it, one part per batch (for a
        network of several members, e.g. CPS's two, one such list per member)."""
        output = self.network(torch.cat(batches))
        return output, split_output(output, [b.shape[0] for b in batches])

    def dice_ce_ignoring(self, ignore_value: int) -> DC_and_CE_loss:
        """nnU-Net's Dice + CE with its settings (batch Dice as planned, smooth 1e-5, no background Dice, weights
        1 : 1, its memory-efficient soft Dice) that leaves out the voxels labelled ``ignore_value``: the loss on
        targets of which only a part counts (BCP's mixed regions, DualStreamCL's reliable pseudo-labels)."""
        return DC_and_CE_loss({"batch_dice": self.configuration_manager.batch_dice, "smooth": 1e-5, "do_bg": False,
                               "ddp": self.is_ddp}, {}, weight_ce=1, weight_dice=1, ignore_label=ignore_value,
                              dice_class=MemoryEfficientSoftDiceLoss)

    def grad_clip_groups(self) -> List[Sequence[torch.nn.Parameter]]:
        """Parameter groups whose gradient norm is clipped (at 12, nnU-Net's value) separately: each network of a
        :class:`~nnunet_semi.networks.dual.DualNetwork` on its own (as if each were trained alone), else all."""
        module = unwrap(self.network)
        if isinstance(module, DualNetwork):
            return [list(net.parameters()) for net in module.members]
        return [list(self.network.parameters())]

    def after_optimizer_step(self) -> None:
        """Called after every optimizer step (e.g. an EMA teacher update); ``global_step`` still counts the steps
        before this one."""

    def train_step(self, batch: dict) -> dict:
        unlabeled = next(self.dataloader_unlabeled) if self.dataloader_unlabeled is not None else None
        data = batch["data"].to(self.device, non_blocking=True)
        target = batch["target"]
        target = [t.to(self.device, non_blocking=True) for t in target] if isinstance(target, list) \
            else target.to(self.device, non_blocking=True)
        data_u = unlabeled["data"].to(self.device, non_blocking=True) if unlabeled is not None else None

        self.optimizer.zero_grad(set_to_none=True)
        with autocast(self.device.type, enabled=True) if self.device.type == "cuda" else dummy_context():
            loss, loss_logged, curves = self.compute_losses(data, target, data_u)

        if self.grad_scaler is not None:
            self.grad_scaler.scale(loss).backward()
            self.grad_scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        for group in self.grad_clip_groups():
            torch.nn.utils.clip_grad_norm_(group, 12)
        if self.grad_scaler is not None:
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            self.optimizer.step()
        self.after_optimizer_step()
        self.step_in_epoch += 1
        return {"loss": loss_logged.detach().cpu().numpy(), **{k: np.float64(v) for k, v in curves.items()}}

    def on_train_epoch_end(self, train_outputs: List[dict]):
        super().on_train_epoch_end(train_outputs)
        outputs = collate_outputs(train_outputs)
        for key in self.extra_curves:
            value = float(np.mean(outputs[key]))
            if self.is_ddp:
                values = [None] * dist.get_world_size()
                dist.all_gather_object(values, value)
                value = float(np.mean(values))
            self.logger.log(key, value, self.current_epoch)

    def on_epoch_end(self):
        for key, label in self.extra_curves.items():
            self.print_to_log_file(label, np.round(self.logger.get_value(key, step=-1), decimals=4))
        super().on_epoch_end()

    # ------------------------------------------------------------------ checkpoints
    def load_pretrained_weights_file(self, path: str) -> None:
        """``nnUNetv2_train ... -pretrained_weights PATH`` (fresh start). A checkpoint of this trainer's own network
        loads as a whole; a single-network checkpoint (e.g. a labeled-only nnU-Net's ``checkpoint_final.pth``) loads
        into every planned network of the trainer it fits (:func:`~nnunet_semi.pretrained.loading.planned_networks`:
        both networks of CPS, student and teacher, encoder + decoder 1 of MC-Net; segmentation heads and extra heads
        keep their fresh initialisation, as with nnU-Net's loader); one that fits none is refused with the first
        mismatching key."""
        if not self.was_initialized:
            self.initialize()
        loaded, kept = load_into_planned_networks(self.network, path)
        self.print_to_log_file(f"-pretrained_weights {path}: loaded into " +
                               ", ".join(f"{name} ({n} tensors)" for name, n in loaded.items()) + "; segmentation "
                               "heads trained anew", also_print_to_console=True)
        for name, reason in kept.items():
            self.print_to_log_file(f"-pretrained_weights: {name} keeps its random initialisation (another "
                                   f"architecture: {reason.split(' Fix:')[0]})",
                                   also_print_to_console=True)

    def extra_checkpoint_state(self) -> dict:
        """Method-specific state to checkpoint (override together with :meth:`load_extra_checkpoint_state`). Called on
        every DDP rank at the same points (rank 0 writes), so it may gather per-rank state (:meth:`gather_per_rank`)."""
        return {}

    def gather_per_rank(self, value) -> list:
        """``[value of rank 0, value of rank 1, ...]`` (``[value]`` without DDP): per-rank state for a checkpoint,
        which rank 0 alone writes. A collective: every rank must call it at the same point."""
        if not self.is_ddp:
            return [value]
        values = [None] * dist.get_world_size()
        dist.all_gather_object(values, value)
        return values

    def own_rank_entry(self, values: Optional[list], what: str):
        """This rank's entry of a :meth:`gather_per_rank` list read from a checkpoint; None (logged) when the
        checkpoint was written by another number of ranks, or None when it has no such list."""
        if values is None:
            return None
        world = dist.get_world_size() if self.is_ddp else 1
        if len(values) != world:
            self.print_to_log_file(f"Checkpoint was written by {len(values)} rank(s), this run has {world}: {what} "
                                   f"is not restored, the resume is not bit-identical.")
            return None
        return values[self.local_rank]

    def load_extra_checkpoint_state(self, state: dict) -> None:
        pass

    def save_checkpoint(self, filename: str) -> None:
        """nnU-Net's checkpoint plus our state, written atomically. Our state (per-rank random states, the method's
        state) travels in the logger's checkpoint (``checkpoint['logging'][CHECKPOINT_KEY]``, see
        :class:`~nnunet_semi.training.logging.SemiLocalLogger`), a channel nnU-Net saves and hands back on load."""
        # every rank calls save_checkpoint at the same points (nnU-Net's on_epoch_end / on_train_end), so gathering
        # the per-rank random states here is a collective identical on all ranks
        rng_all = self.gather_per_rank(rng_state())
        local_logger = self.logger.local_logger
        gate = None if self.unlabeled_gate is None else self.unlabeled_gate.state_dict()
        local_logger.extra_state = {"rng_states": rng_all, "method_state": self.extra_checkpoint_state(),
                                    "unlabeled_gate": gate}
        writes = self.local_rank == 0 and not self.disable_checkpointing  # where nnU-Net's save_checkpoint writes
        try:
            with atomic_path(filename) if writes else contextlib.nullcontext(filename) as target:
                super().save_checkpoint(target)
        finally:
            local_logger.extra_state = None

    def load_checkpoint(self, filename_or_checkpoint) -> None:
        super().load_checkpoint(filename_or_checkpoint)  # hands checkpoint['logging'] to our logger
        state = self.logger.local_logger.loaded_extra_state
        if state is None:  # written before our state moved into the logging entry: top-level CHECKPOINT_KEY
            checkpoint = filename_or_checkpoint if isinstance(filename_or_checkpoint, dict) else \
                torch.load(filename_or_checkpoint, map_location="cpu", weights_only=False)
            state = semi_checkpoint_state(checkpoint)
        if state is None:
            self.print_to_log_file("Checkpoint has no nnunet-semi state (random streams restart).")
            return
        self.load_extra_checkpoint_state(state["method_state"])
        gate = state.get("unlabeled_gate")
        if gate is not None:
            self.unlabeled_gate = LabeledDiceGate(len(gate["dice_ema"]))
            self.unlabeled_gate.load_state_dict(gate)
        rng_all = state["rng_states"]
        world = dist.get_world_size() if self.is_ddp else 1
        if len(rng_all) == world:
            self._rng_state_to_restore = rng_all[self.local_rank]
        else:
            self.print_to_log_file(f"Checkpoint was written by {len(rng_all)} rank(s), this run has {world}: "
                                   f"random streams are re-seeded, the resume is not bit-identical.")
            self.seed_everything(int(self.current_epoch) * 1000 + self.local_rank)
