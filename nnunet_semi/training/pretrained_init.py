"""Initialise a trainer's network from a self-supervised pretraining, found by convention.

The checkpoint is ``$nnUNet_results/<Dataset>/<Method>Pretrain__<plans>__<configuration>/fold_<fold>/
checkpoint_final.pth`` (what ``nnunet_semi_pretrain -m <method>`` writes for the same plans, configuration and
fold), or the file named by ``nnUNet_semi_pretrained=<path>`` (e.g. an ablation's checkpoint). It is read with
``torch.load(weights_only=True)``; one that does not fit the planned network is refused with the first mismatching
key and both shapes (:func:`~nnunet_semi.networks.pretrained.load_pretrained_networks`), and so is one whose
recorded method (``checkpoint['pretraining']['method']``) is not among the trainer's
``accepted_pretraining_methods`` (unless ``nnUNet_semi_pretrained_any=1``: deliberate cross-loading).
"""
import os
from typing import FrozenSet, Tuple

from batchgenerators.utilities.file_and_folder_operations import join

from nnunetv2.paths import nnUNet_results

from nnunet_semi.networks.pretrained import PretrainedWeightsError, load_pretrained_networks

PRETRAINED_ENV = "nnUNet_semi_pretrained"


def pretraining_checkpoint_path(dataset_name: str, method: str, plans_name: str, configuration: str, fold,
                                variant: str = "") -> str:
    """Where ``nnunet_semi_pretrain`` writes the final checkpoint of ``method`` (its ``method_name``, e.g. ``"CCM"``)
    with the ablation suffix ``variant`` (e.g. ``"_noMV"``) for these plans, configuration and fold."""
    folder = f"{method}Pretrain{variant}__{plans_name}__{configuration}"
    return join(nnUNet_results.require(), dataset_name, folder, f"fold_{fold}", "checkpoint_final.pth")


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
        return pretraining_checkpoint_path(self.plans_manager.dataset_name, self.pretraining_method,
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

    def initialize(self):
        super().initialize()
        if getattr(self, "_weights_from_checkpoint", False):
            self.print_to_log_file("Weights come from a training checkpoint: the pretraining is not read.")
            return
        path = self.pretrained_checkpoint()
        if not os.path.isfile(path):
            raise PretrainedWeightsError(
                f"No {self.pretraining_method} pretraining found at {path}. Fix: run nnunet_semi_pretrain -d "
                f"{self.plans_manager.dataset_name} -c {self.configuration_name} -p {self.plans_manager.plans_name} "
                f"-m {self.pretraining_command or self.pretraining_method.lower()} -f {self.fold} first, or set "
                f"{PRETRAINED_ENV}=<checkpoint>.")
        loaded = load_pretrained_networks(self.network, path, skip=self.pretrained_skip,
                                          accepted_methods=self.accepted_pretraining_methods, user=type(self).__name__)
        self.print_to_log_file(f"Initialised {len(loaded)} tensors from {path} (keys containing "
                               f"{', '.join(self.pretrained_skip)} trained anew)")
