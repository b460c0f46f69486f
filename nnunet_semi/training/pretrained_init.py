"""Initialise a trainer's network from a self-supervised pretraining, found by convention.

The checkpoint is ``$nnUNet_results/<Dataset>/<Method>Pretrain__<plans>__<configuration>/fold_<fold>/
checkpoint_final.pth`` (what ``nnunet_semi_pretrain -m <method>`` writes for the same plans, configuration and
fold), or the file named by ``nnUNet_semi_pretrained=<path>`` (e.g. an ablation's checkpoint). It is read with
``torch.load(weights_only=True)``; one that does not fit the planned network is refused with the first mismatching
key and both shapes (:func:`~nnunet_semi.pretrained.loading.load_pretrained_networks`), and so is one whose
recorded method (``checkpoint['pretraining']['method']``) is not among the trainer's
``accepted_pretraining_methods`` (unless ``nnUNet_semi_pretrained_any=1``: deliberate cross-loading). The naming,
the checks and the loading are the contract of :mod:`nnunet_semi.pretrained`; this mixin only says which
pretraining a trainer starts from.
"""
import os
from typing import FrozenSet, Tuple

from nnunet_semi.pretrained import contract
from nnunet_semi.pretrained.contract import PRETRAINED_ENV  # noqa: F401  (the variable's name, for users and tests)
from nnunet_semi.pretrained.loading import load_pretraining


class PretrainedInitialisation:
    """Mixin for nnU-Net trainers: after ``initialize()`` the network starts from the pretraining's weights.

    ``pretraining_method`` names the method (``"CCM"``, ``"IDEAL"``); ``pretrained_skip`` lists substrings of the
    network's state-dict keys that keep their fresh initialisation (default: nnU-Net's segmentation heads).
    """

    pretraining_method: str = None
    pretrained_skip: Tuple[str, ...] = (".seg_layers.",)
    #: ablation suffix of the pretraining's output folder (``Pretrainer.variant_suffix``), e.g. ``"_noMV"``
    pretraining_variant: str = ""
    #: the ``-m`` name (and options) that produce the checkpoint, for the error message; default: method in lower case
    pretraining_command: str = None
    #: recorded methods (``checkpoint['pretraining']['method']``) accepted besides ``pretraining_method`` (whose
    #: ablations record the same name): ``accepted_pretraining_methods`` is both; others need nnUNet_semi_pretrained_any
    extra_accepted_pretraining_methods: Tuple[str, ...] = ()

    @property
    def accepted_pretraining_methods(self) -> FrozenSet[str]:
        return frozenset((self.pretraining_method, *self.extra_accepted_pretraining_methods))

    def pretrained_checkpoint(self) -> str:
        if getattr(self, "_pretrained_weights_file", None):
            return self._pretrained_weights_file
        if os.environ.get(PRETRAINED_ENV):
            return os.environ[PRETRAINED_ENV]
        return contract.checkpoint_path(self.plans_manager.dataset_name, self.pretraining_method,
                                        self.plans_manager.plans_name, self.configuration_name, self.fold,
                                        self.pretraining_variant)

    def load_pretrained_weights_file(self, path: str) -> None:
        """``nnUNetv2_train ... -pretrained_weights PATH`` names the pretraining checkpoint (as
        ``nnUNet_semi_pretrained=PATH``; the same method, key and shape checks)."""
        self._pretrained_weights_file = path
        if not self.was_initialized:
            self.initialize()

    def load_checkpoint(self, filename_or_checkpoint) -> None:
        # --c / --val / --val_best: the training checkpoint holds the weights, the pretraining is not needed (it may be
        # absent, e.g. a model installed from a zip on another machine)
        self._weights_from_checkpoint = True
        super().load_checkpoint(filename_or_checkpoint)

    def _missing_fixes(self) -> str:
        command = contract.pretrain_command(self.plans_manager.dataset_name, self.configuration_name,
                                            self.plans_manager.plans_name, self.fold,
                                            self.pretraining_command or self.pretraining_method.lower())
        return f"run {command} first, or set {PRETRAINED_ENV}=<checkpoint>"

    def initialize(self):
        super().initialize()
        if getattr(self, "_weights_from_checkpoint", False):
            self.print_to_log_file("Weights come from a training checkpoint: the pretraining is not read.")
            return
        path = self.pretrained_checkpoint()
        loaded = load_pretraining(self.network, path, f"{self.pretraining_method} pretraining", self._missing_fixes,
                                  skip=self.pretrained_skip, accepted_methods=self.accepted_pretraining_methods,
                                  user=type(self).__name__)
        self.print_to_log_file(f"Initialised {len(loaded)} tensors from {path} (keys containing "
                               f"{', '.join(self.pretrained_skip)} trained anew)")
