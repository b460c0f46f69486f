"""The pretraining loop shared by every method: data, optimiser, schedule, progress, checkpoints, resume, DDP.

A method subclasses :class:`Pretrainer` and implements :meth:`build_model` and :meth:`compute_loss` (and names
its hyper-parameters in :meth:`hyperparameters`). Networks come from the dataset's plans through nnU-Net's own
``build_network_architecture``, so the pretrained weights have the keys and shapes of the networks that
fine-tuning builds.
"""
import math
import os
import random
from typing import Dict, Optional, Tuple

import matplotlib

matplotlib.use("agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from batchgenerators.dataloading.nondet_multi_threaded_augmenter import NonDetMultiThreadedAugmenter  # noqa: E402
from batchgenerators.dataloading.single_threaded_augmenter import SingleThreadedAugmenter  # noqa: E402
from batchgenerators.utilities.file_and_folder_operations import isfile, join, load_json, maybe_mkdir_p  # noqa
from torch import distributed as dist  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn.parallel import DistributedDataParallel as DDP  # noqa: E402
from tqdm import tqdm  # noqa: E402

from nnunetv2.paths import nnUNet_preprocessed, nnUNet_raw  # noqa: E402
from nnunetv2.training.logging.nnunet_logger import MetaLogger  # noqa: E402
from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader  # noqa: E402
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer  # noqa: E402
from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name  # noqa: E402
from nnunetv2.utilities.default_n_proc_DA import get_allowed_n_proc_DA  # noqa: E402
from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels  # noqa: E402
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager  # noqa: E402

from nnunet_semi.networks.dual import unwrap  # noqa: E402
from nnunet_semi.pretrained import contract  # noqa: E402
from nnunet_semi.utils.checkpoint_io import atomic_save, rng_state, set_rng_state  # noqa: E402
from pretraining.data import pretraining_dataset  # noqa: E402


def add_contrastive_arguments(group, projection_dim: int, temperature: float) -> None:
    """``--proj-dim`` / ``--temperature`` for a contrastive method's option group (defaults shown in the help)."""
    group.add_argument("--proj-dim", type=int, default=None,
                       help=f"projection head output size (default: {projection_dim})")
    group.add_argument("--temperature", type=float, default=None,
                       help=f"contrastive temperature (default: {temperature})")


def contrastive_kwargs(args) -> dict:
    """The options of :func:`add_contrastive_arguments` that were given, as constructor keyword arguments."""
    return {k: v for k, v in (("projection_dim", args.proj_dim), ("temperature", args.temperature)) if v is not None}


class Pretrainer:
    """Base class; see the module docstring. ``method_name`` names the output folder (``<name>Pretrain``)."""

    method_name: str = None
    #: True: batches carry segmentations and :meth:`compute_loss` receives ``(data, target)`` (see
    #: :meth:`build_dataset`, which then must return labeled cases)
    needs_labels: bool = False

    def __init__(self, dataset_name_or_id, configuration: str, fold="0", plans_identifier: str = "nnUNetPlans",
                 device: torch.device = torch.device("cpu"), num_epochs: int = 400, batch_size: Optional[int] = None,
                 iterations_per_epoch: Optional[int] = None, learning_rate: float = 1e-3, weight_decay: float = 0.0,
                 seed: Optional[int] = None, tag: Optional[str] = None):
        self.dataset_name = str(maybe_convert_to_dataset_name(dataset_name_or_id))  # may be a numpy str
        self.preprocessed_base = join(nnUNet_preprocessed.require(), self.dataset_name)
        plans_file = join(self.preprocessed_base, plans_identifier + ".json")
        if not isfile(plans_file):
            raise FileNotFoundError(f"{plans_file} does not exist. Fix: run nnUNetv2_plan_and_preprocess -d "
                                    f"{dataset_name_or_id} -c {configuration} first.")
        self.plans_manager = PlansManager(plans_file)
        self.configuration_name = configuration
        self.configuration_manager = self.plans_manager.get_configuration(configuration)
        self.dataset_json = load_json(join(self.preprocessed_base, "dataset.json"))
        self.num_input_channels = determine_num_input_channels(self.plans_manager, self.configuration_manager,
                                                               self.dataset_json)
        self.fold = fold if fold == "all" else int(fold)
        self.device = torch.device(device)
        self.is_ddp = dist.is_available() and dist.is_initialized()
        self.rank = dist.get_rank() if self.is_ddp else 0
        self.world_size = dist.get_world_size() if self.is_ddp else 1
        self.num_epochs = num_epochs
        self.batch_size = batch_size  # global; None -> method default (see default_batch_size)
        self.iterations_per_epoch = iterations_per_epoch  # None -> one pass over the images (see run)
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.tag_suffix = contract.tag_suffix(tag)  # --tag: a second run of the same method in a folder of its own
        self.seed = seed
        if seed is not None:
            random.seed(seed + self.rank)
            np.random.seed(seed + self.rank)
            torch.manual_seed(seed + self.rank)
        self.model: Optional[nn.Module] = None
        self.history: Dict[str, list] = {}
        self.current_epoch = 0  # the epoch being trained (methods with stages read it in compute_loss)

    # ------------------------------------------------------------------ method hooks
    def build_model(self) -> nn.Module:
        raise NotImplementedError

    def compute_loss(self, data: torch.Tensor, target: Optional[torch.Tensor] = None
                     ) -> Tuple[torch.Tensor, Dict[str, float]]:
        """Return the loss to minimise and ``{term: value}`` for the curves (the first term is the total).
        ``target`` (the batch's segmentations, ``(B, 1, *patch)``) is given only when :attr:`needs_labels`."""
        raise NotImplementedError

    def sample_transform(self):
        """A per-sample transform run inside nnU-Net's data-loader workers (``nnUNet_n_proc_DA`` processes, beside
        the training step instead of in it), called as nnU-Net's loader calls its augmentation: ``t(image=...,
        segmentation=...) -> {'image': ..., 'segmentation': ...}`` on one cropped patch ``(C, *patch)``. What it
        returns as ``'segmentation'`` arrives as the batch's ``'target'``. Default: none (patches as sampled)."""
        return None

    def compute_batch_loss(self, batch: dict) -> Tuple[torch.Tensor, Dict[str, float]]:
        """The loss of one loader batch: :meth:`compute_loss` on its data (and its segmentations when
        :attr:`needs_labels`). Methods whose :meth:`sample_transform` makes the target override this."""
        data = batch["data"].to(self.device, non_blocking=True)
        if self.needs_labels:
            return self.compute_loss(data, batch["target"].to(self.device, non_blocking=True))
        return self.compute_loss(data)

    def build_dataset(self):
        """The nnU-Net dataset the patches are sampled from: by default the fold's training images (labels unused)
        plus imagesUnlabeled (:func:`pretraining.data.pretraining_dataset`)."""
        return pretraining_dataset(join(nnUNet_raw.require(), self.dataset_name), self.preprocessed_base,
                                   self.plans_manager, self.configuration_manager, self.dataset_json, self.fold,
                                   num_processes=max(1, get_allowed_n_proc_DA()))

    def hyperparameters(self) -> dict:
        return {}

    # ------------------------------------------------------------------ command line (nnunet_semi_pretrain)
    @classmethod
    def add_arguments(cls, group) -> None:
        """Add this method's options to ``nnunet_semi_pretrain -m <method>`` (an argparse argument group)."""

    @classmethod
    def kwargs_from_args(cls, args) -> dict:
        """Constructor keyword arguments from the parsed options; options left unset keep the method's defaults."""
        return {}

    def variant_suffix(self) -> str:
        """Appended to the output folder name for ablations (e.g. ``_noCon``; :mod:`nnunet_semi.pretrained.contract`
        names the suffixes fine-tuning looks for), so variants never overwrite."""
        return ""

    def network_weights(self) -> dict:
        """The weights fine-tuning loads (``checkpoint['network_weights']``)."""
        return unwrap(self.model).state_dict()

    def default_batch_size(self) -> int:
        return self.configuration_manager.batch_size

    def build_scheduler(self, optimizer) -> torch.optim.lr_scheduler.LRScheduler:
        """The learning-rate schedule, stepped once per epoch (default: cosine annealing over all epochs)."""
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=self.num_epochs)

    def has_unused_parameters(self) -> bool:
        """True when some parameters get no gradient (ablations): DDP must then look for them."""
        return False

    # ------------------------------------------------------------------ helpers for methods
    def build_planned_network(self, num_output_channels: int) -> nn.Module:
        """nnU-Net's planned network for this configuration, without deep supervision.

        Without deep supervision the decoder runs only its last segmentation layer; the lower-resolution heads
        (``decoder.seg_layers[:-1]``) never see data, so they are frozen (no gradient): DDP's reducer then does not
        wait for them, and the checkpoint keeps every key of the planned network (fine-tuning trains its heads
        anew either way)."""
        network = nnUNetTrainer.build_network_architecture(self.plans_manager, self.configuration_manager,
                                                           self.num_input_channels, num_output_channels,
                                                           enable_deep_supervision=False)
        for head in network.decoder.seg_layers[:-1]:
            head.requires_grad_(False)
        return network

    @property
    def output_folder(self) -> str:
        return contract.output_folder(self.dataset_name, self.method_name, self.plans_manager.plans_name,
                                      self.configuration_name, self.fold,
                                      self.variant_suffix() + self.tag_suffix)

    # ------------------------------------------------------------------ loop
    def _loader(self, per_rank_batch: int):
        dataset = self.build_dataset()
        patch = self.configuration_manager.patch_size
        loader = nnUNetDataLoader(dataset, per_rank_batch, patch, patch,
                                  self.plans_manager.get_label_manager(self.dataset_json),
                                  oversample_foreground_percent=0.0, transforms=self.sample_transform())
        n_proc = get_allowed_n_proc_DA()
        augmenter = SingleThreadedAugmenter(loader, None) if n_proc == 0 else NonDetMultiThreadedAugmenter(
            loader, None, n_proc, max(2, n_proc // 2), pin_memory=self.device.type == "cuda")
        # one epoch = one pass over the images: slices for 2D configurations, volumes for 3D
        if len(patch) == 2:
            n_images = sum(dataset.load_case(i)[0].shape[1] for i in dataset.identifiers)
        else:
            n_images = len(dataset.identifiers)
        return augmenter, n_images

    def _save(self, filename: str, optimizer, scheduler, epoch: int) -> None:
        if self.rank != 0:
            return
        checkpoint = {
            "network_weights": self.network_weights(),
            "model_state": unwrap(self.model).state_dict(),
            "optimizer_state": optimizer.state_dict(),
            "scheduler_state": scheduler.state_dict(),
            "epoch": epoch,
            "history": self.history,
            "rng_state": rng_state(),
            contract.PROVENANCE_KEY: contract.provenance(
                self.method_name, self.dataset_name, self.plans_manager.plans_name, self.configuration_name,
                self.fold, num_epochs=self.num_epochs, learning_rate=self.learning_rate,
                weight_decay=self.weight_decay, seed=self.seed, **self.hyperparameters()),
        }
        atomic_save(checkpoint, filename)

    def _plot(self) -> None:
        if self.rank != 0 or not self.history:
            return
        terms = [k for k in self.history if k != "lr"]
        fig, (ax, ax_lr) = plt.subplots(2, 1, figsize=(10, 9))
        for key in terms:
            ax.plot(self.history[key], label=key, linewidth=2)
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss")
        ax.set_title(f"{self.method_name} pretraining, {self.dataset_name} {self.configuration_name}")
        ax.legend()
        ax_lr.plot(self.history["lr"], linewidth=2)
        ax_lr.set_xlabel("epoch")
        ax_lr.set_ylabel("learning rate")
        fig.tight_layout()
        fig.savefig(join(self.output_folder, "progress.png"))
        plt.close(fig)

    def _start_external_loggers(self, resume: bool) -> None:
        """nnU-Net's own external loggers (``nnUNet_wandb_enabled=1`` -> Weights & Biases, with nnU-Net's
        ``nnUNet_wandb_project`` / ``nnUNet_wandb_mode``), rank 0 only: the pretraining curves go where a training's
        go, in a run stored in the output folder (``wandb/``) and continued by ``--c``."""
        self._external_loggers = MetaLogger(self.output_folder, resume).loggers if self.rank == 0 else []
        for logger in self._external_loggers:
            logger.update_config({"pretraining_method": self.method_name, "dataset": self.dataset_name,
                                  "plans": self.plans_manager.plans_name, "configuration": self.configuration_name,
                                  "fold": str(self.fold), "num_epochs": self.num_epochs,
                                  "learning_rate": self.learning_rate, **self.hyperparameters()})

    def _log_external(self, epoch: int) -> None:
        for logger in self._external_loggers:
            for key, values in self.history.items():
                logger.log(key, values[-1], epoch)

    def _check_finite(self, loss: torch.Tensor, terms: Dict[str, float], epoch: int, iteration: int, latest: str,
                      learning_rate: float) -> None:
        """Stop at a non-finite loss before it reaches the weights, on every DDP rank together (one all-reduce of a
        flag per step, the same on every rank), with the step and the fix: training on would save NaN weights."""
        bad = (~torch.isfinite(loss.detach())).any().float().reshape(1)  # on the loss's device: one sync (.item())
        if self.is_ddp:
            dist.all_reduce(bad)
        if bad.item() == 0:
            return
        saved = f"{latest} holds the last finished epoch" if isfile(latest) else "no epoch had finished"
        raise FloatingPointError(
            f"{self.method_name} pretraining of {self.dataset_name} {self.configuration_name}: the loss is not finite "
            f"at epoch {epoch + 1}, iteration {iteration + 1} ({', '.join(f'{k}={v:.4g}' for k, v in terms.items())}"
            f"{'' if not self.is_ddp else ', on at least one rank'}); nothing of this epoch was saved, {saved}. Fix: "
            f"a lower learning rate (--lr; now {learning_rate:.3g}), then --c to continue; or look for NaN / inf "
            f"values in the images (nnUNetv2_plan_and_preprocess --verify_dataset_integrity).")

    def run(self, continue_training: bool = False) -> str:
        """Pretrain (or continue an interrupted run) and return the final checkpoint's path."""
        maybe_mkdir_p(self.output_folder)
        global_batch = self.batch_size or self.default_batch_size()
        per_rank_batch = max(1, global_batch // self.world_size)
        self.model = self.build_model().to(self.device)
        optimizer = torch.optim.Adam(self.model.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay)
        scheduler = self.build_scheduler(optimizer)
        start_epoch = 0
        latest, final = join(self.output_folder, "checkpoint_latest.pth"), join(self.output_folder,
                                                                              "checkpoint_final.pth")
        resume_state = None
        if continue_training and (isfile(latest) or isfile(final)):
            resume_state = torch.load(latest if isfile(latest) else final, map_location="cpu", weights_only=True)
            unwrap(self.model).load_state_dict(resume_state["model_state"])
            optimizer.load_state_dict(resume_state["optimizer_state"])
            scheduler.load_state_dict(resume_state["scheduler_state"])
            self.history = resume_state["history"]
            start_epoch = resume_state["epoch"]
        self._start_external_loggers(resume=resume_state is not None)
        if self.is_ddp:
            self.model = DDP(self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                             find_unused_parameters=self.has_unused_parameters())

        loader, n_images = self._loader(per_rank_batch)
        iterations = self.iterations_per_epoch or max(1, math.ceil(n_images / global_batch))
        if resume_state is not None:
            set_rng_state(resume_state["rng_state"])  # after the loader started: as in the original run
        if self.rank == 0:
            print(f"{self.method_name} pretraining of {self.dataset_name} {self.configuration_name} fold {self.fold}: "
                  f"{n_images} images, batch {global_batch} ({per_rank_batch} per rank), {iterations} iterations x "
                  f"{self.num_epochs} epochs (from epoch {start_epoch}) -> {self.output_folder}")
        try:
            for epoch in range(start_epoch, self.num_epochs):
                self.current_epoch = epoch
                self.model.train()
                sums: Dict[str, float] = {}
                bar = tqdm(range(iterations), desc=f"epoch {epoch + 1}/{self.num_epochs}", disable=self.rank != 0)
                for iteration in bar:
                    batch = next(loader)
                    optimizer.zero_grad(set_to_none=True)
                    loss, terms = self.compute_batch_loss(batch)
                    self._check_finite(loss, terms, epoch, iteration, latest, optimizer.param_groups[0]["lr"])
                    loss.backward()
                    optimizer.step()
                    for k, v in terms.items():
                        sums[k] = sums.get(k, 0.0) + v
                    # a term a stage does not use is NaN (a gap in progress.png); a NaN loss stops above
                    bar.set_postfix({k: f"{v:.4f}" for k, v in terms.items() if math.isfinite(v)})
                self.history.setdefault("lr", []).append(optimizer.param_groups[0]["lr"])
                scheduler.step()
                for k, v in sums.items():
                    mean = torch.tensor(v / iterations, dtype=torch.float64)
                    if self.is_ddp:
                        dist.all_reduce(mean)
                        mean /= self.world_size
                    self.history.setdefault(k, []).append(float(mean))
                self._save(latest, optimizer, scheduler, epoch + 1)
                self._plot()
                self._log_external(epoch)
            self._save(final, optimizer, scheduler, self.num_epochs)
            if self.rank == 0 and isfile(latest):
                os.remove(latest)
        finally:  # an error (a non-finite loss, an interrupt) stops the loader's workers too
            if isinstance(loader, NonDetMultiThreadedAugmenter):
                loader._finish()
        return final
