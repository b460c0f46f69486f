"""ACDC (Automated Cardiac Diagnosis Challenge, cine MRI) -> nnU-Net v2 raw dataset with the papers' protocols.

Two source releases:

* **SSL4MIS h5 release** (:func:`convert_acdc_h5`): ``train.list`` (training volumes, e.g. ``patient099_frame01``),
  ``val.list``, optional ``test.list``, and ``data/`` with one h5 file per training slice
  (``patientXXX_frameYY_slice_N.h5``, keys ``image`` H×W float32 scaled 0-1 per volume and ``label`` uint8; also
  looked up in ``data/slices/``) and one per validation / test volume (``patientXXX_frameYY.h5``, Z×H×W).
  Training volumes are rebuilt from their slices 1..n (stacked along z in slice order); no voxel spacing is stored,
  so it is an argument (default (10.0, 1.5, 1.5) mm in (z, y, x) order).
* **Original release** (:func:`convert_acdc_original`): ``patientXXX/`` folders (directly in the source folder or
  one level below, e.g. ``training/`` and ``testing/``) with ``Info.cfg`` (``ED: n`` / ``ES: n``, 1-based frame
  numbers), ``patientXXX_frameYY.nii.gz`` + ``patientXXX_frameYY_gt.nii.gz`` for the ED and ES frames and
  ``patientXXX_4d.nii.gz`` (the whole cine). Optionally the other cine frames of the training patients become
  unlabeled images.

Labels: 0 background, 1 RV (right ventricle), 2 Myo (myocardium), 3 LV (left ventricle).

Protocol (both releases): the training pool is split by PATIENT (both frames of a patient stay together) into
labeled patients, chosen by count (SSL4MIS: 3 or 7 of 70) or ratio (CCM: 5 % / 10 %, i.e. floor(ratio * 70) = 3 / 7)
with a seed, and unlabeled patients. Written:

* ``imagesTr``/``labelsTr``: labeled training cases + validation cases
* ``imagesUnlabeled``: the other training patients' images (no labels), plus cine frames if requested
* ``imagesTs``/``labelsTs``: test cases
* ``splits_final.json``: one fold, train = labeled cases, val = validation cases
* ``dataset.json`` with an ``nnunet_semi`` entry recording release, seed, spacing and every patient list.

Command line: ``python -m dataset_conversion.acdc h5 -i ACDC --labeled 7`` or
``python -m dataset_conversion.acdc original -i ACDC/database --ratio 0.1 --cine`` (see ``--help``);
the function behind it is :func:`acdc_entry`.
"""
import argparse
import os
import re
import shutil
from functools import partial
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from .common import (ConversionError, Job, add_protocol_args, check_compressed, check_count, check_disjoint,
                     check_spacing, id_filter, labeled_from_args, prepare_target, read_h5_pair, read_header, read_image,
                     read_label, read_list, run_entry, select_labeled, sitk_image, source_folder, split_pool, write_dataset)

DEFAULT_ID = 27
DATASET_NAME = "ACDC"
LABELS = {"background": 0, "RV": 1, "Myo": 2, "LV": 3}
CHANNELS = {"0": "cineMRI"}
DEFAULT_SPACING = (10.0, 1.5, 1.5)  # (z, y, x) mm; ACDC: ~1.5 mm in-plane, 5-10 mm between slices
_VOLUME_RE = re.compile(r"^(patient\d+)_frame\d+$")
_SLICE_RE = re.compile(r"^(patient\d+_frame\d+)_slice_(\d+)\.h5$")
_PATIENT_RE = re.compile(r"^patient\d+$")


def _check_labels(values: np.ndarray, path: str) -> None:
    bad = sorted(set(np.unique(values).tolist()) - set(LABELS.values()))
    if bad:
        raise ConversionError(f"{path}: unexpected label values {bad}; ACDC labels are 0 background, 1 RV, 2 Myo, "
                              f"3 LV. Replace the file with the original release's.")


def _filter(patients: Optional[Iterable[str]], known: Sequence[str], where: str) -> Optional[set]:
    return id_filter(patients, known, "patients", where, "Use ids like 'patient001' that exist in the release.")


# ----------------------------------------------------------------------------------------------------------------
# SSL4MIS h5 release
# ----------------------------------------------------------------------------------------------------------------
def _read_h5(path: str, ndim: int) -> Tuple[np.ndarray, np.ndarray]:
    image, label = read_h5_pair(path, ndim, "SSL4MIS")
    _check_labels(label, path)
    return image.astype(np.float32, copy=False), label.astype(np.uint8, copy=False)


def _write_arrays(image: np.ndarray, label: np.ndarray, spacing: Sequence[float], img_path: str,
                  lab_path: Optional[str]) -> None:
    import SimpleITK as sitk

    sitk.WriteImage(sitk_image(image, spacing), img_path, True)
    if lab_path is not None:
        sitk.WriteImage(sitk_image(label, spacing), lab_path, True)


def _write_from_slices(slice_files: List[str], spacing, img_path: str, lab_path: Optional[str]) -> None:
    images, labels = [], []
    for p in slice_files:
        image, label = _read_h5(p, 2)
        if images and image.shape != images[0].shape:
            raise ConversionError(f"{p}: slice shape {image.shape} differs from {images[0].shape} of "
                                  f"{slice_files[0]}; all slices of a volume must have the same size. Replace the "
                                  f"file with the release's.")
        images.append(image)
        labels.append(label)
    _write_arrays(np.stack(images), np.stack(labels), spacing, img_path, lab_path)


def _write_from_volume(path: str, spacing, img_path: str, lab_path: Optional[str]) -> None:
    image, label = _read_h5(path, 3)
    _write_arrays(image, label, spacing, img_path, lab_path)


def _patient_of(volume: str, list_path: str) -> str:
    m = _VOLUME_RE.match(volume)
    if not m:
        raise ConversionError(f"{list_path}: entry {volume!r} is not a volume name like 'patient001_frame01'. Fix "
                              f"the list file.")
    return m.group(1)


def _slice_index(source: str, data_dir: str, volumes: List[str]) -> Dict[str, Dict[int, str]]:
    """volume -> {slice number: path} for the training volumes; slice files are looked up in data/slices/ (the
    SSL4MIS repository layout) and data/."""
    found: Dict[str, Dict[int, str]] = {v: {} for v in volumes}
    for d in (os.path.join(data_dir, "slices"), data_dir):
        if not os.path.isdir(d):
            continue
        for name in os.listdir(d):
            m = _SLICE_RE.match(name)
            if m and m.group(1) in found:
                found[m.group(1)].setdefault(int(m.group(2)), os.path.join(d, name))
    listed: Dict[str, set] = {}
    slices_list = os.path.join(source, "train_slices.list")
    if os.path.isfile(slices_list):
        for entry in read_list(slices_list, "train_slices.list"):
            m = _SLICE_RE.match(entry + ".h5")
            if m and m.group(1) in found:
                listed.setdefault(m.group(1), set()).add(int(m.group(2)))
    for v in volumes:
        n = max(set(found[v]) | listed.get(v, set()), default=0)
        first_missing = next((k for k in range(1, n + 1) if k not in found[v]), None) if n else 1
        if first_missing is not None:
            expected = os.path.join(data_dir, f"{v}_slice_{first_missing}.h5")
            raise ConversionError(
                f"Slice file missing: {expected} (training volume {v}"
                + (f" has slices up to {n}" if n else " has no slice files") + " in data/ or data/slices/). The "
                "slices of a volume must be numbered 1..n without gaps; restore the file from the SSL4MIS release.")
    return found


def convert_acdc_h5(source: str, num_labeled: Optional[int] = None, labeled_ratio: Optional[float] = None,
                    seed: int = 0, selection: str = "random", spacing: Sequence[float] = DEFAULT_SPACING,
                    dataset_id: int = DEFAULT_ID, output_root: Optional[str] = None, overwrite: bool = False,
                    patients: Optional[Iterable[str]] = None, val_as_test: bool = False,
                    num_val_from_train: int = 0, val_seed: int = 0, val_reserved_first: Optional[int] = None) -> str:
    """Convert the SSL4MIS ACDC h5 release into ``<output_root or $nnUNet_raw>/Dataset027_ACDC``.

    ``source`` holds ``train.list``, ``val.list``, optionally ``test.list`` and ``data/``. Training patients are the
    patients of ``train.list`` (70 in the release); ``num_labeled`` (SSL4MIS: 3 or 7) or ``labeled_ratio`` (CCM:
    0.05 / 0.1 -> floor(ratio * 70) = 3 / 7) of them are labeled, chosen with ``np.random.RandomState(seed)`` over
    the sorted patient ids (``selection='random'``) or as the first patients in ``train.list`` order
    (``selection='list'``, which is SSL4MIS's own choice: their first 68 / 136 slices are 3 / 7 whole patients).
    The other training patients go to ``imagesUnlabeled``; ``val.list`` volumes are validation cases in
    imagesTr/labelsTr; ``test.list`` volumes (if the file exists) go to imagesTs/labelsTs.

    Training volumes are rebuilt from ``<volume>_slice_1.h5 .. _slice_n.h5`` (n = the highest number found on disk
    or in ``train_slices.list``), stacked along z in slice order; a gap raises a :class:`ConversionError` naming the
    first missing slice file. ``spacing`` is (z, y, x) in mm (SimpleITK stores it reversed, as (x, y, z)); the
    default (10.0, 1.5, 1.5) is typical for ACDC: the release stores no spacing, so distances in mm computed on this
    dataset are only as right as this argument. Images are written as float32 (the release's 0-1 intensities),
    labels as uint8.

    ``patients`` (optional) restricts every list to these patient ids (e.g. for quick tests).
    ``val_as_test``: the ``val.list`` volumes become test cases (imagesTs/labelsTs) and the fold validates on its
    labeled cases, for releases without ``test.list`` whose validation patients serve as the held-out test set
    (the benchmarks' ACDC CPU profile).
    ``num_val_from_train``: this many training patients become labeled validation cases (imagesTr, the fold's
    ``val``) instead of unlabeled ones: a validation set for choosing settings that is neither labeled for training nor
    test. They are drawn with ``np.random.RandomState(val_seed)`` over the sorted training patients, leaving out the
    first ``val_reserved_first`` (default ``num_labeled``) patients of ``train.list`` (SSL4MIS's own labeled
    patients, so that the ``'list'`` draw stays possible), and independently of ``seed``: every labeled draw of a
    benchmark (and its all-labeled bound, with ``val_reserved_first=3``) sees the same validation patients. The
    labeled patients are then chosen from the remaining training patients.
    Returns the absolute path of the dataset folder.
    """
    source = source_folder(source, "ACDC h5 folder", "Pass the SSL4MIS ACDC folder (the one with train.list, "
                           "val.list and data/).")
    data_dir = os.path.join(source, "data")
    if not os.path.isdir(data_dir):
        raise ConversionError(f"{data_dir} not found. The SSL4MIS ACDC folder must contain data/ with the h5 files.")
    spacing = check_spacing(spacing)
    out_root, dataset_name, target = prepare_target(output_root, dataset_id, DATASET_NAME, overwrite)

    lists: Dict[str, List[str]] = {}
    for role in ("train", "val", "test"):
        path = os.path.join(source, f"{role}.list")
        if role == "test" and not os.path.isfile(path):
            lists[role] = []
            continue
        lists[role] = read_list(path, f"{role}.list")
    origin = {v: f"{r}.list" for r in lists for v in lists[r]}  # for messages
    if val_as_test:
        lists["test"], lists["val"] = lists["test"] + lists["val"], []
    patient_of = {v: _patient_of(v, os.path.join(source, origin[v])) for r in lists for v in lists[r]}
    pats = {r: list(dict.fromkeys(patient_of[v] for v in lists[r])) for r in lists}  # list order, unique
    check_disjoint(pats, source)
    wanted = _filter(patients, [p for r in pats for p in pats[r]], f"the lists of {source}")
    if wanted is not None:
        lists = {r: [v for v in lists[r] if patient_of[v] in wanted] for r in lists}
        pats = {r: [p for p in pats[r] if p in wanted] for r in pats}

    reserved = val_reserved_first if val_reserved_first is not None else num_labeled if num_labeled is not None else 0
    held_out = _validation_from_train(pats["train"], num_val_from_train, val_seed, check_count("val_reserved_first",
                                                                                               reserved))
    train_pool = [p for p in pats["train"] if p not in held_out]
    labeled_pats = select_labeled(train_pool, num_labeled, labeled_ratio, seed, selection,
                                  what=f"training pool of {os.path.join(source, 'train.list')}")
    slices = _slice_index(source, data_dir, lists["train"])
    for v in lists["val"] + lists["test"]:
        p = os.path.join(data_dir, f"{v}.h5")
        if not os.path.isfile(p):
            raise ConversionError(f"Volume file missing: {p} (listed in {origin[v]}). Restore it from the SSL4MIS "
                                  f"release or remove the entry from the list.")

    jobs: List[Job] = []
    labeled_ids = sorted(v for v in lists["train"] if patient_of[v] in labeled_pats)
    held_out_ids = sorted(v for v in lists["train"] if patient_of[v] in held_out)
    unlabeled_ids = sorted(v for v in lists["train"] if patient_of[v] not in labeled_pats and
                           patient_of[v] not in held_out)
    val_ids, test_ids = sorted(lists["val"] + held_out_ids), sorted(lists["test"])
    for v in labeled_ids + held_out_ids + unlabeled_ids:
        files = [slices[v][k] for k in range(1, len(slices[v]) + 1)]
        labeled = v not in unlabeled_ids
        jobs.append(Job(v, "tr" if labeled else "unl", partial(_write_from_slices, files, spacing), labeled))
    for v in sorted(lists["val"]) + test_ids:
        jobs.append(Job(v, "ts" if v in test_ids else "tr",
                        partial(_write_from_volume, os.path.join(data_dir, f"{v}.h5"), spacing)))
    jobs.sort(key=lambda j: ({"tr": 0, "ts": 1, "unl": 2}[j.dest], j.case_id))

    provenance = {
        "source": "ACDC, SSL4MIS h5 release",
        "source_folder": source,
        "spacing_zyx_mm": list(spacing),
        "seed": int(seed),
        "selection": selection,
        "num_labeled_patients": len(labeled_pats),
        "labeled_ratio": labeled_ratio,
        "labeled_patients": labeled_pats,
        "unlabeled_patients": sorted(set(train_pool) - set(labeled_pats)),
        "val_patients": sorted(pats["val"] + held_out),
        "val_from_train_patients": held_out,
        "val_seed": int(val_seed) if held_out else None,
        "test_patients": sorted(pats["test"]),
        "labeled": labeled_ids, "val": val_ids, "test": test_ids, "unlabeled": unlabeled_ids,
    }
    return write_dataset(out_root, dataset_name, target, jobs, LABELS, CHANNELS, labeled_ids, val_ids, provenance,
                         overwrite, "Converting ACDC (h5)")


def _validation_from_train(train: Sequence[str], count: int, val_seed: int, num_reserved: int) -> List[str]:
    """``count`` training patients held out as labeled validation cases (sorted): ``RandomState(val_seed)`` over the
    sorted patients other than the first ``num_reserved`` of ``train`` (list order)."""
    count = check_count("num_val_from_train", count)
    if not count:
        return []
    candidates = sorted(set(train) - set(list(train)[:num_reserved]))
    if count > len(candidates):
        raise ConversionError(f"num_val_from_train = {count}, but the training pool has only {len(candidates)} "
                              f"patients outside its first {num_reserved}. Reduce the number of validation patients.")
    perm = np.random.RandomState(int(val_seed)).permutation(len(candidates))
    return sorted(candidates[i] for i in perm[:count])


# ----------------------------------------------------------------------------------------------------------------
# original release
# ----------------------------------------------------------------------------------------------------------------
def _find_patients(source: str) -> Dict[str, str]:
    """patient id -> folder, for patientXXX folders in ``source`` or one level below (training/, testing/)."""
    found: Dict[str, str] = {}
    candidates = [source] + sorted(os.path.join(source, d) for d in os.listdir(source)
                                   if os.path.isdir(os.path.join(source, d)) and not _PATIENT_RE.match(d))
    for parent in candidates:
        for d in sorted(os.listdir(parent)):
            path = os.path.join(parent, d)
            if _PATIENT_RE.match(d) and os.path.isdir(path):
                if d in found:
                    raise ConversionError(f"Patient {d} found twice: {found[d]} and {path}. Keep one of them.")
                found[d] = path
    if not found:
        raise ConversionError(f"No patientXXX folders in {source} or its subfolders. Pass the ACDC database folder "
                              f"(the one with training/ and testing/, or the patient folders themselves).")
    return found


def _read_info(folder: str, patient: str) -> Tuple[int, int]:
    path = os.path.join(folder, "Info.cfg")
    if not os.path.isfile(path):
        raise ConversionError(f"{path} not found. Every ACDC patient folder has Info.cfg with the ED and ES frame "
                              f"numbers; restore it from the release.")
    values = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if ":" in line:
                k, v = line.split(":", 1)
                values[k.strip()] = v.strip()
    frames = []
    for key in ("ED", "ES"):
        try:
            n = int(float(values[key]))
            if n < 1 or n != float(values[key]):
                raise ValueError
        except (KeyError, ValueError):
            raise ConversionError(f"{path}: needs a line '{key}: <frame number>' with a positive integer (1-based), "
                                  f"got {values.get(key)!r}. Restore the file from the release.")
        frames.append(n)
    return frames[0], frames[1]


def _copy_labeled(img_src: str, gt_src: str, img_path: str, lab_path: Optional[str]) -> None:
    import SimpleITK as sitk

    img = read_image(img_src)
    shutil.copyfile(img_src, img_path)
    if lab_path is None:
        return
    arr = sitk.GetArrayFromImage(read_label(gt_src, img, img_src))
    _check_labels(arr, gt_src)
    sitk.WriteImage(sitk_image(arr.astype(np.uint8), None, reference=img), lab_path, True)


def _write_cine_frame(path_4d: str, frame: int, img_path: str, lab_path: Optional[str]) -> None:
    import SimpleITK as sitk

    img = _read_4d(path_4d, frame)
    size = list(img.GetSize())
    frame_img = sitk.Extract(img, size[:3] + [0], [0, 0, 0, frame - 1])
    sitk.WriteImage(frame_img, img_path, True)


_CACHE_4D: Dict[str, object] = {}


def _read_4d(path_4d: str, frame: int):
    """Read (and keep while this patient's frames are written) a 4D cine; check the frame exists."""
    import SimpleITK as sitk

    if path_4d not in _CACHE_4D:
        _CACHE_4D.clear()
        check_compressed(path_4d, "4D cine")
        try:
            img = sitk.ReadImage(path_4d)
        except RuntimeError as e:
            raise ConversionError(f"{path_4d}: cannot read the 4D cine ({e}). Replace it with the release's file.")
        _CACHE_4D[path_4d] = img
    img = _CACHE_4D[path_4d]
    if img.GetDimension() != 4:
        raise ConversionError(f"{path_4d}: expected a 4D image (x, y, z, time), got dimension {img.GetDimension()}. "
                              f"Replace it with the release's file.")
    if frame > img.GetSize()[3]:
        raise ConversionError(f"{path_4d}: has {img.GetSize()[3]} frames, but frame {frame} was requested (Info.cfg "
                              f"ED/ES). Fix Info.cfg or replace the 4D file.")
    return img


def _num_frames(path_4d: str) -> int:
    reader = read_header(path_4d, "4D cine")
    if reader.GetDimension() != 4:
        raise ConversionError(f"{path_4d}: expected a 4D image (x, y, z, time), got dimension "
                              f"{reader.GetDimension()}. Replace it with the release's file.")
    return int(reader.GetSize()[3])


def _split_from_lists(split_lists: str, known: Sequence[str]) -> Tuple[List[str], List[str], List[str]]:
    """SSL4MIS's train.list / val.list / test.list (volume names) -> patient ids per role, train in list order."""
    folder = os.path.abspath(os.path.expanduser(str(split_lists)))
    out = []
    for role in ("train", "val", "test"):
        path = os.path.join(folder, f"{role}.list")
        if role == "test" and not os.path.isfile(path):
            out.append([])
            continue
        entries = read_list(path, f"{role}.list")
        pats = list(dict.fromkeys(_patient_of(e, path) if "_frame" in e else e for e in entries))
        missing = [p for p in pats if p not in known]
        if missing:
            raise ConversionError(f"{path} names {missing[0]}, which has no patient folder in the source. Pass the "
                                  f"complete ACDC database or the patients filter.")
        out.append(pats)
    check_disjoint(dict(zip(("train", "val", "test"), out)), folder)
    return out[0], out[1], out[2]


def convert_acdc_original(source: str, num_labeled: Optional[int] = None, labeled_ratio: Optional[float] = None,
                          seed: int = 0, selection: str = "random", num_val: int = 10, num_test: int = 20,
                          split_lists: Optional[str] = None, include_cine: bool = False,
                          dataset_id: int = DEFAULT_ID, output_root: Optional[str] = None, overwrite: bool = False,
                          patients: Optional[Iterable[str]] = None) -> str:
    """Convert the original ACDC release into ``<output_root or $nnUNet_raw>/Dataset027_ACDC``.

    Patients: ``patientXXX`` folders in ``source`` or one level below it. Each needs ``Info.cfg`` (ED / ES frame
    numbers, 1-based), ``patientXXX_frameYY.nii.gz`` and ``patientXXX_frameYY_gt.nii.gz`` for both frames (case ids
    ``patientXXX_frameYY`` with the release's frame numbers) and, with ``include_cine``, ``patientXXX_4d.nii.gz``.

    Split by patient: with ``split_lists`` (a folder with SSL4MIS-style ``train.list`` / ``val.list`` / optional
    ``test.list``, entries ``patientXXX_frameYY`` or ``patientXXX``) the lists decide and patients in no list are
    not converted; otherwise the patients are
    split with ``RandomState(seed + 1)`` into ``num_val`` validation, ``num_test`` test and the rest training
    patients (SSL4MIS uses 70 / 10 / 20 of the 100 training patients: the defaults on the 100-patient training
    folder). ``num_labeled`` / ``labeled_ratio`` / ``seed`` / ``selection`` pick the labeled training patients as in
    :func:`convert_acdc_h5` (``selection='list'``: the order of ``train.list``, or sorted ids without lists).

    Images are copied byte for byte; labels are checked (values 0-3, same size and spacing as the image) and written
    as uint8 with the image's geometry. With ``include_cine`` every other frame of the 4D cine of each TRAINING
    patient (labeled and unlabeled; not validation / test) is added to ``imagesUnlabeled`` as
    ``patientXXX_frameYY`` (frame number 1-based, as in the file names), extracted with the 4D image's geometry.

    ``patients`` (optional) restricts the conversion to these patient ids. Returns the dataset folder.
    """
    source = source_folder(source, "ACDC folder", "Pass the extracted ACDC database folder (with training/ and "
                           "testing/ or the patientXXX folders).")
    out_root, dataset_name, target = prepare_target(output_root, dataset_id, DATASET_NAME, overwrite)
    folders = _find_patients(source)
    wanted = _filter(patients, sorted(folders), source)
    if split_lists is not None:
        train, val, test = _split_from_lists(split_lists, sorted(folders))
        if wanted is not None:
            train, val, test = ([p for p in x if p in wanted] for x in (train, val, test))
    else:
        if wanted is not None:
            folders = {p: f for p, f in folders.items() if p in wanted}
        train, val, test = split_pool(sorted(folders), num_val, num_test, seed, what=f"patient pool of {source}")
    labeled_pats = select_labeled(train, num_labeled, labeled_ratio, seed, selection,
                                  what=f"training pool of {source}")

    # ---- check every needed source file before writing ----
    frames: Dict[str, Tuple[int, int]] = {}
    for p in sorted(set(train) | set(val) | set(test)):
        ed, es = _read_info(folders[p], p)
        if ed == es:
            raise ConversionError(f"{os.path.join(folders[p], 'Info.cfg')}: ED and ES are the same frame ({ed}). "
                                  f"Restore the file from the release.")
        frames[p] = (ed, es)
        for fr in (ed, es):
            for suffix in ("", "_gt"):
                path = os.path.join(folders[p], f"{p}_frame{fr:02d}{suffix}.nii.gz")
                if not os.path.isfile(path):
                    raise ConversionError(f"{path} not found (frame {fr} from Info.cfg). Restore the file from the "
                                          f"release or drop the patient with the patients filter.")
    cine: Dict[str, int] = {}
    if include_cine:
        for p in train:
            path = os.path.join(folders[p], f"{p}_4d.nii.gz")
            if not os.path.isfile(path):
                raise ConversionError(f"{path} not found, but include_cine (--cine) needs the 4D cine of every "
                                      f"training patient. Restore the file or convert without --cine.")
            cine[p] = _num_frames(path)
            if max(frames[p]) > cine[p]:
                raise ConversionError(f"{path}: has {cine[p]} frames, but Info.cfg names frame {max(frames[p])}. "
                                      f"Fix Info.cfg or replace the 4D file.")

    def frame_case(p: str, fr: int) -> str:
        return f"{p}_frame{fr:02d}"

    jobs: List[Job] = []
    ids: Dict[str, List[str]] = {"labeled": [], "val": [], "test": [], "unlabeled": []}
    for role, pats in (("labeled", labeled_pats), ("val", val), ("test", test),
                       ("unlabeled", [p for p in train if p not in labeled_pats])):
        dest = {"labeled": "tr", "val": "tr", "test": "ts", "unlabeled": "unl"}[role]
        for p in sorted(pats):
            for fr in frames[p]:
                stem = os.path.join(folders[p], f"{p}_frame{fr:02d}")
                jobs.append(Job(frame_case(p, fr), dest, partial(_copy_labeled, stem + ".nii.gz",
                                                                 stem + "_gt.nii.gz"), dest != "unl"))
                ids[role].append(frame_case(p, fr))
    cine_ids = []
    for p in sorted(cine):
        for fr in range(1, cine[p] + 1):
            if fr not in frames[p]:
                jobs.append(Job(frame_case(p, fr), "unl",
                                partial(_write_cine_frame, os.path.join(folders[p], f"{p}_4d.nii.gz"), fr), False))
                cine_ids.append(frame_case(p, fr))

    provenance = {
        "source": "ACDC, original release",
        "source_folder": source,
        "split_lists": os.path.abspath(split_lists) if split_lists is not None else None,
        "seed": int(seed),
        "selection": selection,
        "include_cine": bool(include_cine),
        "num_labeled_patients": len(labeled_pats),
        "labeled_ratio": labeled_ratio,
        "labeled_patients": sorted(labeled_pats),
        "unlabeled_patients": sorted(set(train) - set(labeled_pats)),
        "val_patients": sorted(val),
        "test_patients": sorted(test),
        "ed_es_frames": {p: list(frames[p]) for p in sorted(frames)},
        "labeled": sorted(ids["labeled"]), "val": sorted(ids["val"]), "test": sorted(ids["test"]),
        "unlabeled": sorted(ids["unlabeled"] + cine_ids),
    }
    try:
        return write_dataset(out_root, dataset_name, target, jobs, LABELS, CHANNELS, sorted(ids["labeled"]),
                             sorted(ids["val"]), provenance, overwrite, "Converting ACDC (original)")
    finally:
        _CACHE_4D.clear()


# ----------------------------------------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------------------------------------
def acdc_entry(argv: Optional[List[str]] = None) -> None:
    """``python -m dataset_conversion.acdc {h5,original} ...``"""
    parser = argparse.ArgumentParser(
        prog="nnunet_semi_convert_acdc",
        epilog="example: nnunet_semi_convert_acdc h5 -i ACDC --labeled 7 --selection list",
        description="Convert ACDC (SSL4MIS h5 release or original release) into an nnU-Net v2 raw dataset with "
                    "labeled / validation (imagesTr), test (imagesTs) and unlabeled (imagesUnlabeled) cases and a "
                    "one-fold splits_final.json (labeled vs. validation).")
    sub = parser.add_subparsers(dest="release", required=True)
    h5 = sub.add_parser("h5", help="SSL4MIS h5 release (train.list, val.list, [test.list], data/)")
    h5.add_argument("-i", dest="source", required=True, help="SSL4MIS ACDC folder (with train.list and data/)")
    h5.add_argument("--spacing", type=float, nargs=3, default=list(DEFAULT_SPACING), metavar=("Z", "Y", "X"),
                    help="voxel spacing in mm in (z, y, x) order; the release stores none (default 10 1.5 1.5)")
    h5.add_argument("--val-as-test", action="store_true",
                    help="val.list volumes become the test set (imagesTs/labelsTs); the fold validates on its labeled "
                         "cases (for copies without test.list)")
    h5.add_argument("--val-from-train", type=int, default=0, metavar="N",
                    help="hold N training patients out as labeled validation cases (the fold's val; drawn with "
                         "--val-seed, independent of --seed, never among the first --labeled patients of train.list)")
    h5.add_argument("--val-seed", type=int, default=0, help="seed of the --val-from-train draw (default 0)")
    orig = sub.add_parser("original", help="original release (patientXXX/ with Info.cfg, frames, _gt, _4d)")
    orig.add_argument("-i", dest="source", required=True,
                      help="folder of patientXXX/ (or its parent); ACDC/database/training for the 70/10/20 split")
    orig.add_argument("--val", type=int, default=10, help="validation patients for the seeded split (default 10)")
    orig.add_argument("--test", type=int, default=20, help="test patients for the seeded split (default 20)")
    orig.add_argument("--split-lists", default=None,
                      help="folder with SSL4MIS train.list / val.list / [test.list]: use their patient split")
    orig.add_argument("--cine", action="store_true",
                      help="add the other cine frames of the training patients (from the 4D file) as unlabeled")
    for p in (h5, orig):
        add_protocol_args(p, DEFAULT_ID, "number of labeled training patients (SSL4MIS: 3 or 7)")
        p.add_argument("--patients", nargs="+", default=None, help="convert only these patient ids")
    args = parser.parse_args(argv)
    common = dict(labeled_from_args(args), dataset_id=args.dataset_id, output_root=args.output_root,
                  overwrite=args.overwrite, patients=args.patients)
    if args.release == "h5":
        run_entry(parser.prog, lambda: convert_acdc_h5(args.source, spacing=args.spacing,
                                                       val_as_test=args.val_as_test,
                                                       num_val_from_train=args.val_from_train,
                                                       val_seed=args.val_seed, **common))
    else:
        run_entry(parser.prog, lambda: convert_acdc_original(args.source, num_val=args.val, num_test=args.test,
                                                             split_lists=args.split_lists, include_cine=args.cine,
                                                             **common))


if __name__ == "__main__":
    acdc_entry()
