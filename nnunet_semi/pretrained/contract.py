"""The pretraining -> fine-tuning contract, in one place: where ``nnunet_semi_pretrain`` writes a checkpoint (its
folder name), the ablation variants' folder suffixes, the provenance record it stores, and the error when a
fine-tuning (or a later pretraining stage) finds no checkpoint.

Both sides import this module: the pretraining runner (:mod:`pretraining.runner`, writing) and the trainers
(:mod:`nnunet_semi.training.pretrained_init`, reading); nothing here imports either.

Folder: ``$nnUNet_results/<Dataset>/<Method>Pretrain<variant>__<plans>__<configuration>/fold_<fold>/``, final
checkpoint ``checkpoint_final.pth``; ``<Method>`` is the pretrainer's ``method_name`` (``CCM``, ``IDEAL``, ...),
``<variant>`` its ablation suffix (``_noCon``, ``_noMV``, ...; empty for the method itself).
"""
import os
from typing import Callable, Optional, Union

from batchgenerators.utilities.file_and_folder_operations import join

from nnunetv2.paths import nnUNet_results

#: ``nnUNet_semi_pretrained=<checkpoint>``: the checkpoint a fine-tuning starts from, instead of the convention's
PRETRAINED_ENV = "nnUNet_semi_pretrained"
#: the checkpoint's provenance record: ``checkpoint[PROVENANCE_KEY]['method']`` names the pretraining method
PROVENANCE_KEY = "pretraining"
FINAL_CHECKPOINT = "checkpoint_final.pth"
#: ``nnUNet_semi_pretrained_any=1``: load a checkpoint of any pretraining method (deliberate cross-loading; keys and
#: shapes still checked)
ANY_METHOD_ENV = "nnUNet_semi_pretrained_any"


class PretrainedWeightsError(ValueError):
    """The pretrained checkpoint is missing, does not fit the network built from the plans, or comes from another
    method."""

# ablation suffixes of the output folder (appended in this order)
#: CCM without the contrastive / the reconstruction term
NO_CONTRASTIVE = "_noCon"
NO_RECONSTRUCTION = "_noRec"
#: MMGL: transaxial slices only (no multi-view), both stages
NO_MULTI_VIEW = "_noMV"
#: MMGL stage 2 from a random encoder (no global stage 1)
NO_GLOBAL = "_noMG"
#: the recorded method (``checkpoint['pretraining']['method']``, ``Pretrainer.method_name``) -> the
#: ``nnunet_semi_pretrain -m`` option that writes it (what the errors tell a user to run; a test checks it against the
#: pretraining registry, so that the library does not import the pretraining command to write a message)
PRETRAIN_OPTIONS = {"CCM": "ccm", "Genesis": "genesis", "GlobalLocal": "globallocal", "IDEAL": "ideal",
                    "MMGLGlobal": "mmgl_global", "MMGLLocal": "mmgl_local", "SimCLR": "simclr"}
#: two single-network pretrainings paired into the two networks of CPS (``nnunet_semi_pair_pretrained``)
PAIR = "_pair"


def tag_suffix(tag: Optional[str]) -> str:
    """The folder suffix of ``nnunet_semi_pretrain --tag <tag>`` (e.g. ``_seed1``: a second run of the same method
    that must not overwrite the first); empty without a tag."""
    if not tag:
        return ""
    if not all(c.isalnum() or c in "-." for c in tag):
        raise ValueError(f"--tag {tag!r}: use letters, digits, '-' and '.' only (it becomes part of a folder name, "
                         f"after '_')")
    return f"_{tag}"


def mmgl_variant(multi_view: bool = True, use_global: bool = True) -> str:
    """The folder suffix of an MMGL pretraining (both stages; ``use_global`` concerns stage 2 only)."""
    return ("" if multi_view else NO_MULTI_VIEW) + ("" if use_global else NO_GLOBAL)


def folder_name(method: str, plans_name: str, configuration: str, variant: str = "") -> str:
    """``<method>Pretrain<variant>__<plans>__<configuration>`` (the results folder of one pretraining)."""
    return f"{method}Pretrain{variant}__{plans_name}__{configuration}"


def output_folder(dataset_name: str, method: str, plans_name: str, configuration: str, fold, variant: str = "") -> str:
    """The fold folder a pretraining writes its checkpoints, progress.png and W&B run to."""
    return join(nnUNet_results.require(), dataset_name, folder_name(method, plans_name, configuration, variant),
                f"fold_{fold}")


def checkpoint_path(dataset_name: str, method: str, plans_name: str, configuration: str, fold,
                    variant: str = "") -> str:
    """Where ``nnunet_semi_pretrain`` writes the final checkpoint of ``method`` (its ``method_name``, e.g. ``"CCM"``)
    with the ablation suffix ``variant`` (e.g. ``"_noMV"``) for these plans, configuration and fold."""
    return join(output_folder(dataset_name, method, plans_name, configuration, fold, variant), FINAL_CHECKPOINT)


def provenance(method: str, dataset_name: str, plans_name: str, configuration: str, fold, **settings) -> dict:
    """What a pretraining checkpoint records about how it was made (``checkpoint[PROVENANCE_KEY]``): the method
    (checked by the fine-tuning side, :func:`recorded_method`), the data and the hyper-parameters."""
    return {"method": method, "dataset": dataset_name, "plans": plans_name, "configuration": configuration,
            "fold": str(fold), **settings}


def recorded_method(checkpoint: dict) -> Optional[str]:
    """The pretraining method a checkpoint records (None: not written by ``nnunet_semi_pretrain``)."""
    record = checkpoint.get(PROVENANCE_KEY)
    return record.get("method") if isinstance(record, dict) else None


def pretrain_command(dataset_name: str, configuration: str, plans_name: str, fold, method_option: str) -> str:
    """The ``nnunet_semi_pretrain`` command line that writes the checkpoint (``method_option``: ``-m`` and options)."""
    return f"nnunet_semi_pretrain -d {dataset_name} -c {configuration} -p {plans_name} -m {method_option} -f {fold}"


def require_checkpoint(path: str, what: str, fixes: Union[str, Callable[[], str]]) -> str:
    """``path`` if it is a file, else :class:`PretrainedWeightsError` "No <what> at <path>. Fix: <fixes>" (``fixes``
    may be a function that writes them, called only then)."""
    if not os.path.isfile(path):
        raise PretrainedWeightsError(f"No {what} at {path}. Fix: {fixes() if callable(fixes) else fixes}.")
    return path
