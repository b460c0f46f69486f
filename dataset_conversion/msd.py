"""Medical Segmentation Decathlon task -> nnU-Net v2 raw dataset with labeled / validation / test / unlabeled split.

Output layout (``<output_root or $nnUNet_raw>/DatasetXXX_<Name>``)::

    imagesTr/ labelsTr/        labeled training + validation cases   (<case>_0000.nii.gz, <case>.nii.gz)
    imagesTs/ labelsTs/        held-out test cases
    imagesUnlabeled/           unlabeled images (no labels), same naming and channels as imagesTr
    dataset.json               nnU-Net v2 format, plus an 'nnunet_semi' entry documenting the split
    splits_final.json          one fold: train = labeled ids, val = validation ids

``splits_final.json`` lives in the RAW folder. nnU-Net 2.8.1's ``ExperimentPlanner.__init__`` already copies a raw
``splits_final.json`` to ``$nnUNet_preprocessed/<dataset>/`` when none is there, and when one is there it only
asserts that the folds match (a bare ``AssertionError`` after re-converting with another seed). Use
:func:`copy_splits_to_preprocessed` to (re)sync it explicitly: after planning, or before re-planning a re-converted
dataset.

Channels: ``channels`` / ``--channels`` keeps a subset of a multi-channel task's 'modality' (renumbered from 0).
Presets (:data:`PRESETS`, :func:`convert_msd_preset`, ``--preset``) fix a paper's split:

==========================  ================  ========  ==============================================================
preset                      task              channels  split
==========================  ================  ========  ==============================================================
``chaitanya2023-prostate``  Task05_Prostate   0 (T2)    2 validation, 15 test (fixed, ``test_seed`` 0), 22 unlabeled,
                                                        ``--labeled`` 1 or 2 (paper: 1, 2, 8); dataset 032
==========================  ================  ========  ==============================================================
"""
import argparse
import json
import os
import re
import shutil
from functools import partial
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

# ConversionError and the constants are defined in .common and re-exported here (msd's public API).
from .common import (FILE_ENDING, SPLITS_FILE, UNLABELED_FOLDER, ConversionError, check_count,  # noqa: F401
                     dataset_folders_with_id, resolve_output_root, case_jobs, check_compressed, check_dataset_id,
                     check_label_values, prepare_target, read_header, run_entry, source_folder, write_dataset)

_TASK_RE = re.compile(r"^Task\d+_(.+)$")
_DATASET_RE = re.compile(r"^Dataset(\d{3})_(.+)$")

# Papers' splits of MSD tasks: convert_msd_semi arguments (plus the channel the task must have, checked first).
PRESETS: Dict[str, Dict] = {
    # Chaitanya et al. 2023 (pseudo-label local contrastive loss), Sec. IV: MSD Task05_Prostate, T2 only, two
    # structures (1 peripheral zone, 2 transition zone), |X_U| = 22 unlabeled, |X_ts| = 15 test, |X_val| = 2
    # validation volumes, |X_L| = 1 or 2 (also 8) labeled. The test set is drawn once (test_seed) and kept for every
    # run; labeled and validation volumes change with the seed ("for each run, we construct different sets of X_L
    # and X_val by randomly sampling"). Test volumes come from the 32 labeled MSD volumes; the 22 unlabeled from the
    # other labeled volumes (labels dropped) and the 16 MSD imagesTs volumes.
    "chaitanya2023-prostate": {
        "dataset_id": 32, "channels": [0], "num_val": 2, "num_test": 15, "num_unlabeled": 22,
        "unlabeled_from_imagesTs": True, "test_seed": 0, "expect_channel": "T2",
        "paper": "Chaitanya et al. 2023, local contrastive loss with pseudo-label based self-training, Sec. IV",
    },
}


# ----------------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------------
def _case_id(path: str) -> str:
    base = os.path.basename(path)
    if not base.endswith(FILE_ENDING):
        raise ConversionError(f"{path}: expected a '{FILE_ENDING}' file (MSD tasks are NIfTI). Fix the entry in "
                              f"dataset.json or convert the file to {FILE_ENDING}.")
    return base[:-len(FILE_ENDING)]


def _resolve(task_folder: str, rel: str) -> str:
    """MSD dataset.json paths look like './imagesTr/x.nii.gz' (relative to the task folder)."""
    rel = rel[2:] if rel.startswith("./") else rel
    return os.path.normpath(os.path.join(task_folder, rel))


def _check_channels(channels: Optional[Sequence[int]], source_channels: Dict[str, str], djson_path: str) -> List[int]:
    """The selected channel indices (all when None), each an index of dataset.json's 'modality', no repeats."""
    if channels is None:
        return list(range(len(source_channels)))
    try:
        chosen = [int(c) for c in channels]
    except (TypeError, ValueError):
        raise ConversionError(f"channels must be channel indices (e.g. [0]), got {channels!r}.")
    listed = ", ".join(f"{k} {v}" for k, v in source_channels.items())
    bad = [c for c in chosen if str(c) not in source_channels]
    if not chosen or bad or len(set(chosen)) != len(chosen):
        raise ConversionError(f"channels {chosen}: each must be one of the channels of {djson_path} ('modality': "
                              f"{listed}), at least one, none twice. Fix --channels.")
    return chosen


def _write_image(src: str, img_path: str, num_channels: int, channels: Sequence[int]) -> tuple:
    """Write the ``channels`` of the MSD image ``src`` as ``<case>_0000.nii.gz``, ``_0001`` ... (in the order given);
    returns the image's spatial (size, spacing). A single-channel 2D/3D image is copied byte for byte; a 4D image
    whose last axis has ``num_channels`` entries is split, each channel keeping the spatial geometry."""
    import SimpleITK as sitk

    reader = read_header(src, fix="Replace the file with a valid NIfTI.")
    dim, size = reader.GetDimension(), reader.GetSize()
    if dim in (2, 3) and num_channels == 1:
        # copyfile, not copy: the MSD sources are often read-only and we do not want to propagate the mode bits
        shutil.copyfile(src, img_path)
        return tuple(size), tuple(reader.GetSpacing())
    if dim != 4 or size[3] != num_channels:
        raise ConversionError(
            f"{src}: image has dimension {dim} and size {tuple(size)}, but dataset.json 'modality' lists "
            f"{num_channels} channel(s). Expected a 3D image for 1 channel or a 4D image whose last axis has "
            f"{num_channels} entries; fix 'modality' in dataset.json or the image.")
    try:
        img = sitk.ReadImage(src)
    except RuntimeError as e:
        raise ConversionError(f"{src}: cannot read the image ({e}). Replace the file with a valid NIfTI.")
    arr = sitk.GetArrayFromImage(img)  # (channel, z, y, x)
    spacing, origin = img.GetSpacing()[:3], img.GetOrigin()[:3]
    direction = np.asarray(img.GetDirection()).reshape(4, 4)[:3, :3].ravel()
    base = img_path[:-len("_0000" + FILE_ENDING)]
    for out_index, c in enumerate(channels):
        chan = sitk.GetImageFromArray(arr[c])
        chan.SetSpacing(spacing)
        chan.SetOrigin(origin)
        chan.SetDirection(tuple(direction))
        sitk.WriteImage(chan, f"{base}_{out_index:04d}{FILE_ENDING}", True)
    return tuple(size[:3]), tuple(spacing)


def _check_label(src: str, size: tuple, spacing: tuple, img_src: str, labels: Dict[str, int]) -> None:
    """The label must have the image's spatial size and spacing and only values of dataset.json's 'labels'."""
    import SimpleITK as sitk

    try:
        lab = sitk.ReadImage(src)
    except RuntimeError as e:
        raise ConversionError(f"{src}: cannot read the label ({e}). Replace the file with a valid NIfTI.")
    if lab.GetSize() != size:
        raise ConversionError(f"{src}: size {lab.GetSize()} differs from the image's {size} ({img_src}). Replace "
                              f"the label with the task's file.")
    if not np.allclose(lab.GetSpacing(), spacing, rtol=1e-3, atol=1e-4):
        raise ConversionError(f"{src}: spacing {lab.GetSpacing()} differs from the image's {spacing} ({img_src}). "
                              f"Replace the label with the task's file.")
    check_label_values(sitk.GetArrayViewFromImage(lab), labels, src,
                       "Fix the label or the 'labels' entry of the task's dataset.json.")


def _write_case(images: Dict[str, str], labels: Dict[str, str], num_channels: int, channels: Sequence[int],
                label_values: Dict[str, int], case: str, img_path: str, lab_path: Optional[str]) -> None:
    size, spacing = _write_image(images[case], img_path, num_channels, channels)
    if lab_path is not None:
        check_compressed(labels[case], "label", fix="Replace the file with a valid NIfTI.")
        _check_label(labels[case], size, spacing, images[case], label_values)
        shutil.copyfile(labels[case], lab_path)


# ----------------------------------------------------------------------------------------------------------------
# conversion
# ----------------------------------------------------------------------------------------------------------------
def convert_msd_semi(task_folder: str, dataset_id: int, num_labeled: int, num_val: int = 0, num_test: int = 0,
                     num_unlabeled: Optional[int] = None, unlabeled_from_imagesTs: bool = True, seed: int = 0,
                     output_root: Optional[str] = None, overwrite: bool = False,
                     channels: Optional[Sequence[int]] = None, test_seed: Optional[int] = None,
                     extra_provenance: Optional[Dict] = None, fixed_validation: bool = False) -> str:
    """Convert an MSD task into ``<output_root or $nnUNet_raw>/DatasetXXX_<Name>`` for semi-supervised training.

    ``<Name>`` is the task folder name without its ``TaskNN_`` prefix (``Task04_Hippocampus`` + id 901 ->
    ``Dataset901_Hippocampus``).

    Split: the MSD training cases (sorted by case id) are shuffled with ``np.random.RandomState(seed)``; the first
    ``num_labeled`` become labeled training cases, the next ``num_val`` validation cases and the next ``num_test``
    test cases. The remaining training cases (images only, labels dropped) plus, if ``unlabeled_from_imagesTs``,
    the MSD ``imagesTs`` images form the unlabeled pool, which is shuffled with the same RandomState and truncated
    to the first ``num_unlabeled`` (all if None). With ``test_seed`` the ``num_test`` test cases are drawn first, with
    ``RandomState(test_seed)``, so that the test set stays the same for every ``seed``; labeled and validation cases
    then come from the other training cases in ``RandomState(seed)`` order. With ``fixed_validation`` (needs
    ``test_seed``) the ``num_val`` validation cases are the next cases of the ``RandomState(test_seed)`` order after
    the test cases, so that validation, like test, is the same for every ``seed`` (the benchmark protocol: labeled
    draws differ in their labeled cases only); the labeled cases then come from the rest.

    Written: ``imagesTr``/``labelsTr`` = labeled + validation cases, ``imagesTs``/``labelsTs`` = test cases,
    ``imagesUnlabeled`` = unlabeled images, ``dataset.json`` (nnU-Net v2: channel_names, labels name->int,
    numTraining, file_ending, plus an ``nnunet_semi`` entry with source task, seed, counts and case ids) and
    ``splits_final.json`` with ONE fold ``{"train": labeled ids, "val": validation ids}``. If ``num_val == 0`` the
    fold's ``val`` equals its ``train`` list (the labeled cases), because nnU-Net needs a non-empty validation set.

    Single-channel images are copied byte for byte with the ``_0000`` suffix; 4D multi-channel images (e.g.
    BraTS, Prostate) are split into ``_0000``, ``_0001`` ... files. ``channels`` (indices into dataset.json's
    'modality', e.g. ``[0]`` for Prostate's T2) keeps only these channels, renumbered from 0 in the order given;
    dataset.json's ``channel_names`` then lists them alone. Labels are checked (the image's spatial size and spacing,
    only values listed in dataset.json's 'labels') and copied as they are.

    ``extra_provenance`` is added to the ``nnunet_semi`` entry (presets record their name there).

    Everything is written into a hidden temporary sibling folder that is renamed into place at the end, so a
    failure leaves no partial dataset. Raises :class:`ConversionError` (a ``ValueError``) for a missing task folder,
    dataset.json or listed file, a label that does not fit its image, counts larger than the pool, or an existing
    output folder without ``overwrite``.

    Returns the absolute path of the dataset folder.
    """
    task_folder = source_folder(task_folder, "MSD task folder", "Pass the extracted TaskNN_Name folder (the one "
                                "that holds dataset.json, imagesTr/ and labelsTr/).")
    djson_path = os.path.join(task_folder, "dataset.json")
    if not os.path.isfile(djson_path):
        raise ConversionError(f"dataset.json not found: {djson_path}. The task folder must be an extracted MSD task "
                              f"(TaskNN_Name/ with dataset.json, imagesTr/, labelsTr/).")
    try:
        with open(djson_path, encoding="utf-8") as f:
            msd = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ConversionError(f"{djson_path}: cannot parse dataset.json ({e}). Restore the original MSD file.")
    missing_keys = [k for k in ("training", "modality", "labels") if k not in msd]
    if missing_keys:
        raise ConversionError(f"{djson_path}: missing MSD key(s) {missing_keys}. This converter expects the MSD "
                              f"dataset.json format ('training', 'test', 'modality', 'labels').")

    dataset_id = check_dataset_id(dataset_id)
    num_labeled = check_count("num_labeled", num_labeled, 1)
    num_val = check_count("num_val", num_val)
    num_test = check_count("num_test", num_test)
    if num_unlabeled is not None:
        num_unlabeled = check_count("num_unlabeled", num_unlabeled)
    seed = int(seed)

    task_name = os.path.basename(task_folder)
    m = _TASK_RE.match(task_name)
    name = m.group(1) if m else task_name
    out_root = resolve_output_root(output_root)  # no output folder at all: fail before reading the sources

    # ---- gather and check the source files (before anything is written) ----
    source_channels = {str(k): v for k, v in sorted(msd["modality"].items(), key=lambda kv: int(kv[0]))}
    num_channels = len(source_channels)
    channels = _check_channels(channels, source_channels, djson_path)
    channel_names = {str(i): source_channels[str(c)] for i, c in enumerate(channels)}
    if test_seed is not None:
        test_seed = int(test_seed)
    if fixed_validation and test_seed is None:
        raise ConversionError("fixed_validation draws the validation cases with test_seed: pass test_seed too.")
    labels = {v: int(k) for k, v in sorted(msd["labels"].items(), key=lambda kv: int(kv[0]))}

    pool: Dict[str, Dict[str, str]] = {}
    for entry in msd["training"]:
        img, lab = _resolve(task_folder, entry["image"]), _resolve(task_folder, entry["label"])
        case = _case_id(img)
        if case in pool:
            raise ConversionError(f"{djson_path}: case {case} is listed twice in 'training'. Remove the duplicate.")
        pool[case] = {"image": img, "label": lab}
    ts_images: Dict[str, str] = {}
    if unlabeled_from_imagesTs:
        for rel in msd.get("test", []):
            img = _resolve(task_folder, rel)
            case = _case_id(img)
            if case in pool or case in ts_images:
                raise ConversionError(f"{djson_path}: case id {case} of test image {img} is used twice. Rename one "
                                      f"of the files or pass unlabeled_from_imagesTs=False (--no-imagests).")
            ts_images[case] = img
    listed = [p for c in sorted(pool) for p in (pool[c]["image"], pool[c]["label"])] + \
             [ts_images[c] for c in sorted(ts_images)]
    missing = [p for p in listed if not os.path.isfile(p)]
    if missing:
        raise ConversionError(f"File listed in {djson_path} is missing: {missing[0]}"
                              + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                              + ". Restore the file from the MSD archive or remove its entry from dataset.json.")

    # ---- split ----
    # Not common.split_pool: this stream (one RandomState(seed) for labeled, validation, test and then the unlabeled
    # pool; test_seed for a paper's fixed test set) selects the cases of every committed MSD benchmark and of the test
    # fixtures. split_pool draws validation first from RandomState(seed + 1), so using it would change those cases.
    requested = num_labeled + num_val + num_test
    if requested > len(pool):
        raise ConversionError(f"{djson_path} lists {len(pool)} labeled cases, but num_labeled + num_val + num_test = "
                              f"{num_labeled} + {num_val} + {num_test} = {requested}. Reduce the counts.")
    rs = np.random.RandomState(seed)
    sorted_pool = sorted(pool)
    if test_seed is None:
        shuffled = [sorted_pool[i] for i in rs.permutation(len(sorted_pool))]
        test = sorted(shuffled[num_labeled + num_val:requested])
    else:  # fixed test set first, then labeled / validation from the other cases
        test_perm = np.random.RandomState(test_seed).permutation(len(sorted_pool))
        test = sorted(sorted_pool[i] for i in test_perm[:num_test])
        held = sorted(sorted_pool[i] for i in test_perm[num_test:num_test + num_val]) if fixed_validation else []
        remaining = [c for c in sorted_pool if c not in set(test) | set(held)]
        shuffled = [remaining[i] for i in rs.permutation(len(remaining))]
        if fixed_validation:  # labeled | validation | test | rest, as below
            shuffled = shuffled[:num_labeled] + held + test + shuffled[num_labeled:]
        else:
            shuffled = shuffled[:num_labeled + num_val] + test + shuffled[num_labeled + num_val:]
    labeled = sorted(shuffled[:num_labeled])
    val = sorted(shuffled[num_labeled:num_labeled + num_val])
    rest = sorted(shuffled[requested:])
    unl_sources = {c: pool[c]["image"] for c in rest}
    unl_sources.update(ts_images)
    unl_ids = sorted(unl_sources)
    unl_ids = [unl_ids[i] for i in rs.permutation(len(unl_ids))]
    if num_unlabeled is not None:
        if num_unlabeled > len(unl_ids):
            raise ConversionError(
                f"num_unlabeled = {num_unlabeled}, but only {len(unl_ids)} unlabeled images are available from "
                f"{task_folder} ({len(rest)} unused training cases + {len(ts_images)} imagesTs images). "
                f"Reduce num_unlabeled or leave it unset to use all.")
        unl_ids = unl_ids[:num_unlabeled]
    unlabeled = sorted(unl_ids)

    # ---- output checks (after the source checks), then write via a hidden temporary folder ----
    out_root, dataset_name, target = prepare_target(out_root, dataset_id, name, overwrite)
    images = {c: pool[c]["image"] for c in pool}
    images.update(ts_images)
    writer = partial(_write_case, images, {c: pool[c]["label"] for c in pool}, num_channels, channels, labels)
    skip = {"training", "test", "modality", "labels", "numTraining", "numTest", "channel_names", "file_ending"}
    extra_json = {"name": msd.get("name", name)}
    extra_json.update({k: v for k, v in msd.items() if k not in skip and k != "name"})
    provenance = {
        "source": "Medical Segmentation Decathlon",
        "source_task": task_name,
        "source_folder": task_folder,
        "seed": seed,
        "test_seed": test_seed,
        "fixed_validation": bool(fixed_validation),
        "channels": dict(channel_names),
        "source_channel_indices": list(channels),
        "unlabeled_from_imagesTs": bool(unlabeled_from_imagesTs),
        "num_labeled": len(labeled),
        "num_val": len(val),
        "num_test": len(test),
        "num_unlabeled": len(unlabeled),
        "labeled": labeled,
        "val": val,
        "test": test,
        "unlabeled": unlabeled,
    }
    provenance.update(extra_provenance or {})
    return write_dataset(out_root, dataset_name, target, case_jobs(labeled, val, test, unlabeled, writer), labels,
                         channel_names, labeled, val, provenance, overwrite, f"Converting {task_name}",
                         extra_json=extra_json)


def convert_msd_preset(task_folder: str, preset: str, num_labeled: int, seed: int = 0,
                       dataset_id: Optional[int] = None, output_root: Optional[str] = None,
                       overwrite: bool = False) -> str:
    """:func:`convert_msd_semi` with the counts, channels and test seed of ``preset`` (a key of :data:`PRESETS`);
    ``dataset_id`` defaults to the preset's (32 for ``chaitanya2023-prostate``). The task's first selected channel
    must be the preset's (e.g. T2), else a ConversionError (wrong task folder). The preset's name and paper are
    recorded in dataset.json's ``nnunet_semi`` entry."""
    if preset not in PRESETS:
        raise ConversionError(f"Unknown preset {preset!r}; available: {', '.join(sorted(PRESETS))}.")
    p = PRESETS[preset]
    djson_path = os.path.join(os.path.abspath(os.path.expanduser(str(task_folder))), "dataset.json")
    if os.path.isfile(djson_path):  # a missing file is reported by convert_msd_semi
        try:
            with open(djson_path, encoding="utf-8") as f:
                modality = json.load(f).get("modality", {})
        except (OSError, json.JSONDecodeError, AttributeError):
            modality = {}  # convert_msd_semi reports it
        modality = modality if isinstance(modality, dict) else {}
        got = {str(k): v for k, v in modality.items()}.get(str(p["channels"][0]))
        if modality and got != p["expect_channel"]:
            raise ConversionError(f"{djson_path}: preset {preset} keeps channel {p['channels'][0]} = "
                                  f"{p['expect_channel']}, but this task's channel {p['channels'][0]} is {got!r}. "
                                  f"Pass the MSD task the preset is for (Task05_Prostate).")
    return convert_msd_semi(task_folder, p["dataset_id"] if dataset_id is None else dataset_id, num_labeled,
                            p["num_val"], p["num_test"], p["num_unlabeled"], p["unlabeled_from_imagesTs"], seed,
                            output_root, overwrite, channels=p["channels"], test_seed=p["test_seed"],
                            extra_provenance={"preset": preset, "paper": p["paper"]})


# ----------------------------------------------------------------------------------------------------------------
# splits -> nnUNet_preprocessed
# ----------------------------------------------------------------------------------------------------------------
def _dataset_name_from(dataset_name_or_id: Union[str, int], roots: Sequence[str]) -> str:
    s = str(dataset_name_or_id)
    if s.startswith("Dataset"):
        return s
    try:
        did = int(s)
    except ValueError:
        raise ConversionError(f"{s!r} is neither a dataset name (DatasetXXX_Name) nor a dataset id.")
    found = sorted({d for r in roots for d in dataset_folders_with_id(r, did)})
    if len(found) != 1:
        raise ConversionError(f"Dataset id {did}: expected exactly one Dataset{did:03d}_* folder in {list(roots)}, "
                              f"found {found}. Pass the full dataset name instead.")
    return found[0]


def copy_splits_to_preprocessed(dataset_name_or_id: Union[str, int], raw_root: Optional[str] = None,
                                preprocessed_root: Optional[str] = None) -> str:
    """Copy ``<raw>/<dataset>/splits_final.json`` to ``<preprocessed>/<dataset>/splits_final.json``.

    Call it after ``nnUNetv2_plan_and_preprocess`` (which creates the preprocessed folder) and before training.
    An existing file is replaced: nnU-Net 2.8.1's planner copies the raw splits itself only when the preprocessed
    folder has none and otherwise asserts the folds are equal, so after re-converting a dataset with a different
    split, call this before re-planning.
    ``raw_root`` / ``preprocessed_root`` default to ``$nnUNet_raw`` / ``$nnUNet_preprocessed`` (read at call time).
    Returns the path of the copied file.
    """
    raw_root = raw_root or os.environ.get("nnUNet_raw")
    preprocessed_root = preprocessed_root or os.environ.get("nnUNet_preprocessed")
    if not raw_root or not preprocessed_root:
        raise ConversionError("Set the nnUNet_raw and nnUNet_preprocessed environment variables (or pass raw_root "
                              "and preprocessed_root).")
    name = _dataset_name_from(dataset_name_or_id, [raw_root, preprocessed_root])
    src = os.path.join(raw_root, name, SPLITS_FILE)
    if not os.path.isfile(src):
        raise ConversionError(f"{src} not found. Create the dataset with nnunet_semi_convert_msd (or the demo "
                              f"generator), which writes splits_final.json into the raw folder.")
    dst_dir = os.path.join(preprocessed_root, name)
    if not os.path.isdir(dst_dir):
        raise ConversionError(f"Preprocessed folder {dst_dir} does not exist. Run "
                              f"'nnUNetv2_plan_and_preprocess -d {name[7:10]}' first, then copy the splits.")
    dst = os.path.join(dst_dir, SPLITS_FILE)
    shutil.copyfile(src, dst)
    return dst


# ----------------------------------------------------------------------------------------------------------------
# console script
# ----------------------------------------------------------------------------------------------------------------
def convert_msd_entry(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(
        prog="nnunet_semi_convert_msd",
        epilog="example: nnunet_semi_convert_msd -i Task04_Hippocampus -d 901 --labeled 5",
        description="Convert a Medical Segmentation Decathlon task into an nnU-Net v2 raw dataset with labeled, "
                    "validation, test and unlabeled (imagesUnlabeled/) cases and a one-fold splits_final.json.")
    parser.add_argument("-i", dest="task_folder", required=True,
                        help="extracted MSD task folder, e.g. Task04_Hippocampus")
    parser.add_argument("-d", dest="dataset_id", type=int, default=None,
                        help="target nnU-Net dataset id, e.g. 901 (required unless --preset gives one)")
    parser.add_argument("--labeled", type=int, required=True, help="number of labeled training cases")
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None,
                        help="a paper's split: chaitanya2023-prostate = Task05_Prostate, T2 only, 2 validation, 15 "
                             "test (fixed), 22 unlabeled, id 32 (use --labeled 1 or 2); excludes the split options")
    split = parser.add_argument_group("split options (not with --preset)")
    split.add_argument("--val", type=int, default=None, help="number of validation cases (0: val = labeled cases)")
    split.add_argument("--test", type=int, default=None, help="number of held-out test cases (imagesTs/labelsTs)")
    split.add_argument("--unlabeled", type=int, default=None, help="keep only this many unlabeled images (default all)")
    split.add_argument("--no-imagests", dest="imagests", action="store_false", default=None,
                       help="do not add the MSD imagesTs images to the unlabeled pool")
    split.add_argument("--channels", type=int, nargs="+", default=None, metavar="C",
                       help="keep only these channels of 'modality' (e.g. 0 for Prostate's T2; default all)")
    split.add_argument("--test-seed", type=int, default=None,
                       help="draw the test cases first with this seed, the same for every --seed (default: one "
                            "permutation with --seed for all roles)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-o", dest="output_root", default=None, help="output root (default: $nnUNet_raw)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output dataset folder")
    args = parser.parse_args(argv)
    split_args = {"--val": args.val, "--test": args.test, "--unlabeled": args.unlabeled, "--no-imagests": args.imagests,
                  "--channels": args.channels, "--test-seed": args.test_seed}
    if args.preset is not None:
        given = [k for k, v in split_args.items() if v is not None]
        if given:
            parser.error(f"{', '.join(given)} cannot be combined with --preset {args.preset} (it sets the split)")
        out = run_entry(parser.prog, lambda: convert_msd_preset(args.task_folder, args.preset, args.labeled,
                                                                args.seed, args.dataset_id, args.output_root,
                                                                args.overwrite))
    else:
        if args.dataset_id is None:
            parser.error("-d is required without --preset")
        out = run_entry(parser.prog, lambda: convert_msd_semi(
            args.task_folder, args.dataset_id, args.labeled, args.val or 0, args.test or 0, args.unlabeled,
            args.imagests is None, args.seed, args.output_root, args.overwrite, channels=args.channels,
            test_seed=args.test_seed))
    print(f"After nnUNetv2_plan_and_preprocess, copy the split: python -c \"from dataset_conversion.msd import "
          f"copy_splits_to_preprocessed as c; c({os.path.basename(out)!r})\"")


if __name__ == "__main__":
    convert_msd_entry()
