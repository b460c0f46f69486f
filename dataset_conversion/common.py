"""Pieces shared by every converter (:mod:`.msd`, :mod:`.acdc`, :mod:`.la`, :mod:`.mmwhs`, :mod:`.pancreas`) and
:mod:`.metrics`.

House style: one :class:`ConversionError` per problem, naming the file or folder and the fix; the output location
checked before anything is written (:func:`prepare_target`); everything written into a hidden temporary sibling
folder that is renamed into place at the end (:func:`write_dataset`), with ``splits_final.json`` (one fold),
``dataset.json`` in nnU-Net v2 format plus an ``nnunet_semi`` provenance entry, and ``imagesUnlabeled/`` named like
``imagesTr/``; console scripts report errors as ``<prog>: error: <message>`` with exit status 1 (:func:`run_entry`).

Protocol helpers:

* :func:`num_from_ratio` / :func:`select_labeled`: the labeled subset of a training pool, chosen by patient
  (all cases of a patient stay together), by count or by ratio, either in a seeded random order or in the
  order of the release's own list (which reproduces SSL4MIS's fixed choice of labeled patients).
* :func:`split_pool`: a seeded split of a patient pool into training / validation / test patients, for releases
  that do not ship a split.
* :func:`split_training_pool`: validation, labeled and unlabeled cases of a training pool (LA, Pancreas);
  :func:`paper_provenance`: the ``nnunet_semi`` entry of such a conversion.

Source helpers: :func:`source_folder`, :func:`read_list`, :func:`check_disjoint`, :func:`id_filter`,
:func:`check_case_id`, :func:`read_h5_pair` (h5 releases), :func:`read_header`, :func:`read_image` /
:func:`read_label` (a label image checked against its image), :func:`check_label_values` (values against
dataset.json's labels); each image reader first reads a gzip-compressed file's whole stream
(:func:`check_compressed`), because ITK reads a truncated ``.nii.gz`` as zeros past the cut without an error.
"""
import contextlib
import json
import locale
import math
import os
import re
import shutil
import sys
import uuid
from dataclasses import dataclass, field
from functools import partial
from itertools import combinations
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Type

import numpy as np
from tqdm import tqdm

from nnunet_semi.utils.gzip_check import gzip_problem

__all__ = ["ConversionError", "FILE_ENDING", "SPLITS_FILE", "UNLABELED_FOLDER", "SELECTIONS", "Job",
           "num_from_ratio", "select_labeled", "split_pool", "split_training_pool", "paper_provenance",
           "check_case_id", "check_label_values", "sitk_image", "read_list", "source_folder",
           "check_disjoint", "id_filter", "read_h5_pair", "check_compressed", "keeps_locale", "read_header", "read_image", "read_label",
           "check_spacing", "check_dataset_id", "prepare_target", "case_jobs", "write_dataset", "add_protocol_args",
           "labeled_from_args", "summary_line", "print_dataset", "run_entry"]

FILE_ENDING = ".nii.gz"
UNLABELED_FOLDER = "imagesUnlabeled"
SPLITS_FILE = "splits_final.json"
SELECTIONS = ("random", "list")


class ConversionError(ValueError):
    """A dataset cannot be converted; the message names the offending file or folder and the fix."""


# ----------------------------------------------------------------------------------------------------------------
# basics
# ----------------------------------------------------------------------------------------------------------------
def check_count(name: str, value, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConversionError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def resolve_output_root(output_root: Optional[str]) -> str:
    root = output_root if output_root is not None else os.environ.get("nnUNet_raw")
    if not root:
        raise ConversionError("No output folder: pass output_root (-o) or set the nnUNet_raw environment variable.")
    return os.path.abspath(root)


def dataset_folders_with_id(root: str, dataset_id: int) -> List[str]:
    if not os.path.isdir(root):
        return []
    prefix = f"Dataset{dataset_id:03d}_"
    return sorted(d for d in os.listdir(root) if d.startswith(prefix) and os.path.isdir(os.path.join(root, d)))


def _write_json(obj, path: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=4, sort_keys=False)
        f.write("\n")


def _commit_folder(tmp: str, target: str, overwrite: bool) -> None:
    """Move the fully written temporary folder into place (atomic rename on the same file system)."""
    if os.path.exists(target):
        if not overwrite:  # somebody created it while we were converting
            raise ConversionError(f"Output dataset folder already exists: {target}. Pass overwrite=True "
                                  f"(--overwrite) or choose another dataset id.")
        old = f"{os.path.join(os.path.dirname(target), '.' + os.path.basename(target))}.old-{uuid.uuid4().hex[:8]}"
        os.replace(target, old)
        try:
            os.replace(tmp, target)
        except BaseException:
            os.replace(old, target)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, target)


# ----------------------------------------------------------------------------------------------------------------
# protocol
# ----------------------------------------------------------------------------------------------------------------
def num_from_ratio(ratio: float, pool_size: int) -> int:
    """Number of labeled patients for a ratio: ``floor(ratio * pool_size)``, at least 1.

    ``floor`` reproduces the papers' counts: 5 % / 10 % of ACDC's 70 training patients are 3 / 7 patients
    (SSL4MIS, CCM); 5 % / 10 % / 20 % of LA's 80 training cases are 4 / 8 / 16.
    """
    try:
        ratio = float(ratio)
    except (TypeError, ValueError):
        raise ConversionError(f"labeled_ratio must be a number in (0, 1], got {ratio!r}.")
    if not 0.0 < ratio <= 1.0 or math.isnan(ratio):
        raise ConversionError(f"labeled_ratio must be in (0, 1] (e.g. 0.05 for 5 %), got {ratio!r}.")
    return max(1, int(math.floor(ratio * pool_size + 1e-9)))


def select_labeled(patients: Sequence[str], num_labeled: Optional[int] = None, labeled_ratio: Optional[float] = None,
                   seed: int = 0, selection: str = "random", what: str = "training pool") -> List[str]:
    """Pick the labeled patients of a training pool. Exactly one of ``num_labeled`` / ``labeled_ratio`` is given.

    ``selection='random'``: the patients sorted by id, permuted with ``np.random.RandomState(seed)``, first ``n``.
    ``selection='list'``: the first ``n`` patients in the order given (the release's list order; ``seed`` unused).
    Returns the chosen patient ids sorted.
    """
    if selection not in SELECTIONS:
        raise ConversionError(f"selection must be one of {SELECTIONS}, got {selection!r}.")
    if (num_labeled is None) == (labeled_ratio is None):
        raise ConversionError("Give exactly one of num_labeled (--labeled N) and labeled_ratio (--ratio R).")
    if not patients:
        raise ConversionError(f"The {what} is empty: there are no patients to label.")
    n = (check_count("num_labeled", num_labeled, 1) if num_labeled is not None
         else num_from_ratio(labeled_ratio, len(patients)))
    if n > len(patients):
        raise ConversionError(f"num_labeled = {n}, but the {what} has only {len(patients)} patients. Reduce the "
                              f"number of labeled patients.")
    if selection == "list":
        return sorted(list(patients)[:n])
    ordered = sorted(patients)
    perm = np.random.RandomState(int(seed)).permutation(len(ordered))
    return sorted(ordered[i] for i in perm[:n])


def split_pool(patients: Sequence[str], num_val: int, num_test: int, seed: int = 0,
               what: str = "patient pool") -> Tuple[List[str], List[str], List[str]]:
    """Seeded split of ``patients`` into (train, val, test): sorted ids permuted with ``RandomState(seed + 1)``
    (a different stream from :func:`select_labeled`), the first ``num_val`` are validation, the next ``num_test``
    test, the rest training. Each list is returned sorted."""
    num_val, num_test = check_count("num_val", num_val), check_count("num_test", num_test)
    ordered = sorted(patients)
    if num_val + num_test >= len(ordered):
        raise ConversionError(f"The {what} has {len(ordered)} patients, but num_val + num_test = {num_val} + "
                              f"{num_test} leaves no training patients. Reduce the counts.")
    perm = [ordered[i] for i in np.random.RandomState(int(seed) + 1).permutation(len(ordered))]
    return (sorted(perm[num_val + num_test:]), sorted(perm[:num_val]), sorted(perm[num_val:num_val + num_test]))


def split_training_pool(train: Sequence[str], num_labeled: Optional[int], labeled_ratio: Optional[float], seed: int,
                        selection: str, num_val: int, what: str) -> Tuple[List[str], List[str], List[str]]:
    """A training pool (in the release's list order) -> (labeled, val, unlabeled), each sorted: ``num_val``
    validation cases are drawn first (:func:`split_pool`, ``RandomState(seed + 1)``), then the labeled cases of the
    rest (:func:`select_labeled`; ``selection='list'`` keeps the list order); the others are unlabeled."""
    num_val = check_count("num_val", num_val)
    if num_val:
        rest, val, _ = split_pool(train, num_val, 0, seed, what=what)
        rest_set = set(rest)
        rest = [c for c in train if c in rest_set]  # keep list order for selection='list'
    else:
        rest, val = list(train), []
    labeled = select_labeled(rest, num_labeled, labeled_ratio, seed, selection, what=what)
    unlabeled = sorted(set(rest) - set(labeled))
    return labeled, sorted(val), unlabeled


def paper_provenance(source_name: str, source: str, seed, selection, labeled_ratio, labeled, val, test, unlabeled,
                     **extra) -> Dict:
    """The ``nnunet_semi`` provenance entry of a paper converter: release, source folder, protocol, ``extra``, then
    the case lists."""
    d = {"source": source_name, "source_folder": source, "seed": int(seed), "selection": selection,
         "labeled_ratio": labeled_ratio, "num_labeled_patients": len(labeled)}
    d.update(extra)
    d.update({"labeled": labeled, "val": val, "test": test, "unlabeled": unlabeled})
    return d


def read_list(path: str, what: str) -> List[str]:
    """Lines of a release's ``*.list`` file (stripped, blank lines and a ``.h5`` suffix dropped), in file order."""
    if not os.path.isfile(path):
        raise ConversionError(f"{what} not found: {path}. Restore the list file from the release.")
    with open(path, encoding="utf-8") as f:
        out = []
        for line in f:
            s = line.strip().replace("\\", "/")
            if not s:
                continue
            s = s.rstrip("/")
            out.append(s[:-3] if s.endswith(".h5") else s)
    if not out:
        raise ConversionError(f"{path} is empty. Restore the list file from the release.")
    seen: set = set()
    dup = sorted({s for s in out if s in seen or seen.add(s)})
    if dup:
        raise ConversionError(f"{path} lists {dup[0]} more than once. Remove the duplicate line.")
    return out


_CASE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def check_case_id(case: str, where: str) -> str:
    """``case`` if it can be an nnU-Net case id (letters, digits, '_', '-', '.'; no '.h5' ending), else a
    ConversionError naming ``where``."""
    if not _CASE_RE.match(case) or case.endswith(".h5"):
        raise ConversionError(f"{where}: case name {case!r} cannot be an nnU-Net case id (letters, digits, '_', '-', "
                              f"'.'). Rename the case folder.")
    return case


def check_label_values(arr: np.ndarray, labels: Mapping[str, int], path: str, fix: str) -> None:
    """Every value of the label array ``arr`` read from ``path`` must be one of ``labels`` (name -> value, as in
    dataset.json); else a ConversionError ``'<path>: unknown label values [...]; expected ... . <fix>'``."""
    allowed = {int(v) for v in labels.values()}
    values = np.unique(arr)
    bad = sorted({float(v) if float(v) % 1 else int(v) for v in values.tolist()} - allowed)
    if bad:
        shown = ", ".join(f"{v} {k}" for k, v in sorted(labels.items(), key=lambda kv: kv[1]))
        raise ConversionError(f"{path}: unknown label values {bad[:10]}; expected only {shown}. {fix}")


def source_folder(path: str, what: str, fix: str) -> str:
    """``path`` as an absolute path (``~`` expanded); unless it is a folder, ConversionError
    ``'<what> not found: <path>. <fix>'``."""
    path = os.path.abspath(os.path.expanduser(str(path)))
    if not os.path.isdir(path):
        raise ConversionError(f"{what} not found: {path}. {fix}")
    return path


def check_disjoint(lists: Mapping[str, Iterable[str]], folder: str, what: str = "Patient") -> None:
    """``lists``: role -> ids read from ``<folder>/<role>.list``. An id (a ``what``) in two of them is a
    ConversionError naming both list files."""
    for (a, ids_a), (b, ids_b) in combinations(lists.items(), 2):
        both = sorted(set(ids_a) & set(ids_b))
        if both:
            raise ConversionError(f"{what} {both[0]} is in both {a}.list and {b}.list of {folder}. A {what.lower()} "
                                  f"must belong to one list; fix the lists.")


def id_filter(ids: Optional[Iterable[str]], known: Iterable[str], what: str, where: str,
              fix: str) -> Optional[set]:
    """An optional filter (``--patients`` / ``--cases``): ``None`` when not given, else the set of ``ids``; an id
    not in ``known`` is a ConversionError ``'<what> filter names <id>, which is not in <where>. <fix>'``."""
    if ids is None:
        return None
    wanted = set(ids)
    unknown = sorted(wanted - set(known))
    if unknown:
        raise ConversionError(f"{what} filter names {unknown[0]}, which is not in {where}. {fix}")
    return wanted


# ----------------------------------------------------------------------------------------------------------------
# images
# ----------------------------------------------------------------------------------------------------------------
def sitk_image(array_zyx: np.ndarray, spacing_zyx: Sequence[float], reference=None):
    """numpy array in (z, y, x) order -> SimpleITK image.

    ``spacing_zyx`` is given in the numpy axis order (z, y, x) and reversed for SimpleITK, whose spacing is
    (x, y, z). With ``reference`` (a SimpleITK image of the same size) its spacing, origin and direction are
    copied instead.
    """
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(np.ascontiguousarray(array_zyx))
    if reference is not None:
        img.CopyInformation(reference)
    else:
        img.SetSpacing(tuple(float(s) for s in reversed(tuple(spacing_zyx))))
    return img


def check_spacing(spacing: Sequence[float], name: str = "spacing") -> Tuple[float, float, float]:
    try:
        sp = tuple(float(s) for s in spacing)
    except (TypeError, ValueError):
        raise ConversionError(f"{name} must be three positive numbers (z, y, x) in mm, got {spacing!r}.")
    if len(sp) != 3 or not all(s > 0 and math.isfinite(s) for s in sp):
        raise ConversionError(f"{name} must be three positive numbers (z, y, x) in mm, got {spacing!r}.")
    return sp


def read_h5_pair(path: str, ndim: int, release: str) -> Tuple[np.ndarray, np.ndarray]:
    """The ``image`` and ``label`` arrays of an h5 file of the ``release`` (named in the messages), checked to
    be ``ndim``-D arrays of the same shape (one slice for 2, one volume for 3) with a finite image; anything else is
    a ConversionError naming the file. The label values are the caller's to check."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in ("image", "label") if k not in f]
            if missing:
                raise ConversionError(f"{path}: missing key(s) {missing} (the {release} release stores 'image' and "
                                      f"'label'). Replace the file with the release's.")
            image, label = np.asarray(f["image"][()]), np.asarray(f["label"][()])
    except OSError as e:
        raise ConversionError(f"{path}: cannot read the h5 file ({e}). Replace the file with the release's.")
    kind = "slice" if ndim == 2 else "volume"
    if image.ndim != ndim or label.shape != image.shape:
        raise ConversionError(f"{path}: expected 'image' and 'label' of the same {ndim}D shape (one {kind}), got "
                              f"image {image.shape} and label {label.shape}. Replace the file with the release's.")
    if not np.all(np.isfinite(image)):
        raise ConversionError(f"{path}: 'image' contains NaN or infinite values. Replace the file with the "
                              f"release's.")
    return image, label


class keeps_locale(contextlib.ContextDecorator):
    """Restore the process locale afterwards: GDCM (SimpleITK's DICOM reader) sets ``LC_ALL=C``, which silently turns
    Python's default text encoding into ASCII for the rest of the process (e.g. ``subprocess.run(text=True)`` then
    fails on nnU-Net's progress bars)."""

    def __enter__(self):
        self._saved = locale.setlocale(locale.LC_ALL)
        return self

    def __exit__(self, *exc):
        locale.setlocale(locale.LC_ALL, self._saved)
        return False


def check_compressed(path: str, what: str = "image", fix: str = "Replace it with the release's file.") -> None:
    """A gzip-compressed ``path`` (``.nii.gz``, ...) must decompress to its end-of-stream marker (a streamed read,
    :func:`nnunet_semi.utils.gzip_check.gzip_problem`); else a ConversionError ``'<path>: the <what> is a truncated
    or corrupt gzip file (<reason>). <fix>'``."""
    problem = gzip_problem(path)
    if problem:
        raise ConversionError(f"{path}: the {what} is a truncated or corrupt gzip file ({problem}). {fix}")


def read_header(path: str, what: str = "image", fix: str = "Replace it with the release's file."):
    """SimpleITK ``ImageFileReader`` of ``path`` with the header read (no voxels), after :func:`check_compressed`;
    an unreadable header is a ConversionError ``'<path>: cannot read the <what> header (<reason>). <fix>'``."""
    import SimpleITK as sitk

    check_compressed(path, what, fix)
    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    try:
        reader.ReadImageInformation()
    except RuntimeError as e:
        raise ConversionError(f"{path}: cannot read the {what} header ({e}). {fix}")
    return reader


def read_image(path: str):
    """SimpleITK image of ``path``, which must be a readable 3D single-channel image (else a ConversionError naming
    the file)."""
    import SimpleITK as sitk

    check_compressed(path)
    try:
        img = sitk.ReadImage(path)
    except RuntimeError as e:
        raise ConversionError(f"{path}: cannot read the image ({e}). Replace it with the release's file.")
    if img.GetDimension() != 3 or img.GetNumberOfComponentsPerPixel() != 1:
        raise ConversionError(f"{path}: expected a 3D single-channel image, got dimension {img.GetDimension()} with "
                              f"{img.GetNumberOfComponentsPerPixel()} channel(s). Replace it with the release's file.")
    return img


def read_label(path: str, image, image_path: str, same_spacing: bool = True):
    """SimpleITK label image of ``path`` for ``image`` (read from ``image_path`` by :func:`read_image`): it must be
    readable and have the image's size and, with ``same_spacing``, its spacing (relative tolerance 1e-3); else a
    ConversionError naming both files. The label values are the caller's to check."""
    import SimpleITK as sitk

    check_compressed(path, "label")
    try:
        lab = sitk.ReadImage(path)
    except RuntimeError as e:
        raise ConversionError(f"{path}: cannot read the label ({e}). Replace it with the release's file.")
    if lab.GetSize() != image.GetSize():
        raise ConversionError(f"{path}: size {lab.GetSize()} differs from the image's {image.GetSize()} "
                              f"({image_path}). Replace the label with the release's file.")
    if same_spacing and not np.allclose(lab.GetSpacing(), image.GetSpacing(), rtol=1e-3, atol=1e-4):
        raise ConversionError(f"{path}: spacing {lab.GetSpacing()} differs from the image's {image.GetSpacing()} "
                              f"({image_path}). Replace the label with the release's file.")
    return lab


# ----------------------------------------------------------------------------------------------------------------
# writing a dataset
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class Job:
    """One output case. ``dest`` is 'tr' (imagesTr/labelsTr), 'ts' (imagesTs/labelsTs) or 'unl'
    (imagesUnlabeled). ``write`` is called with (image_path, label_path or None) and writes the file(s)."""
    case_id: str
    dest: str
    write: Callable[[str, Optional[str]], None]
    has_label: bool = True
    extra: Dict = field(default_factory=dict)


def check_dataset_id(dataset_id) -> int:
    dataset_id = check_count("dataset_id", dataset_id, 1)
    if dataset_id > 999:
        raise ConversionError(f"dataset_id must be between 1 and 999 (nnU-Net uses three digits), got {dataset_id}.")
    return dataset_id


def prepare_target(output_root: Optional[str], dataset_id: int, name: str, overwrite: bool) -> Tuple[str, str, str]:
    """Check the output location before anything is written: returns (output root, dataset name, target folder).

    ``output_root`` defaults to ``$nnUNet_raw``. A ConversionError if the target folder exists (unless
    ``overwrite``) or another ``DatasetXXX_*`` folder there uses the same id. :func:`write_dataset` checks the
    target again when it renames its temporary folder into place."""
    dataset_id = check_dataset_id(dataset_id)
    dataset_name = f"Dataset{dataset_id:03d}_{name}"
    out_root = resolve_output_root(output_root)
    target = os.path.join(out_root, dataset_name)
    if os.path.exists(target) and not overwrite:
        raise ConversionError(f"Output dataset folder already exists: {target}. Pass overwrite=True (--overwrite) "
                              f"to replace it or choose another dataset id.")
    others = [d for d in dataset_folders_with_id(out_root, dataset_id) if d != dataset_name]
    if others:
        raise ConversionError(f"Dataset id {dataset_id} is already used by {os.path.join(out_root, others[0])}; "
                              f"nnU-Net needs unique ids. Choose another dataset id or remove that folder.")
    return out_root, dataset_name, target


def case_jobs(labeled: Sequence[str], val: Sequence[str], test: Sequence[str], unlabeled: Sequence[str],
              writer: Callable[[str, str, Optional[str]], None]) -> List[Job]:
    """Jobs for a case-per-file release: labeled + validation cases to imagesTr/labelsTr, test cases to
    imagesTs/labelsTs, unlabeled cases to imagesUnlabeled (no label), each group sorted by case id;
    ``writer(case, image_path, label_path or None)`` writes one case."""
    jobs = [Job(c, "tr", partial(writer, c)) for c in sorted(list(labeled) + list(val))]
    jobs += [Job(c, "ts", partial(writer, c)) for c in sorted(test)]
    jobs += [Job(c, "unl", partial(writer, c), False) for c in sorted(unlabeled)]
    return jobs


def write_dataset(out_root: str, dataset_name: str, target: str, jobs: List[Job], labels: Dict[str, int],
                  channel_names: Dict[str, str], labeled_ids: List[str], val_ids: List[str], provenance: Dict,
                  overwrite: bool, desc: str, extra_json: Optional[Dict] = None) -> str:
    """Run ``jobs`` into a hidden temporary sibling folder, write dataset.json and splits_final.json, rename it to
    ``target``. On any failure the temporary folder is removed and nothing else is touched; a ``target`` that
    appeared meanwhile is an error unless ``overwrite`` (then it is replaced).

    ``dataset.json``: ``name`` (the dataset name without ``DatasetXXX_``), then ``extra_json`` (which may replace
    ``name``), then ``channel_names``, ``labels``, ``numTraining``, ``file_ending`` and ``nnunet_semi`` =
    ``provenance`` plus the case counts (``num_labeled_cases``, ``num_val_cases``, ``num_test_cases``,
    ``num_unlabeled_cases``), ``unlabeled_folder``, ``splits_file`` and ``val_is_train``.
    ``splits_final.json`` holds one fold ``{"train": labeled_ids, "val": val_ids}``; with no validation cases the
    fold's ``val`` is the labeled list (nnU-Net needs a non-empty validation set) and ``val_is_train`` says so.
    """
    ids = [j.case_id for j in jobs]
    dup = sorted({c for c in ids if ids.count(c) > 1})
    if dup:  # a programming error of a converter or clashing names in the source
        raise ConversionError(f"Case id {dup[0]} would be written twice. Rename one of its source files.")
    num_training = sum(1 for j in jobs if j.dest == "tr")
    os.makedirs(out_root, exist_ok=True)
    tmp = os.path.join(out_root, f".{dataset_name}.partial-{uuid.uuid4().hex[:8]}")
    os.mkdir(tmp)
    try:
        folders = {"tr": ("imagesTr", "labelsTr"), "ts": ("imagesTs", "labelsTs"), "unl": (UNLABELED_FOLDER, None)}
        for d in ("imagesTr", "labelsTr", "imagesTs", "labelsTs", UNLABELED_FOLDER):
            os.mkdir(os.path.join(tmp, d))
        for job in tqdm(jobs, desc=desc, unit="case"):
            img_dir, lab_dir = folders[job.dest]
            img = os.path.join(tmp, img_dir, f"{job.case_id}_0000{FILE_ENDING}")
            lab = os.path.join(tmp, lab_dir, job.case_id + FILE_ENDING) if (lab_dir and job.has_label) else None
            job.write(img, lab)
        djson = {"name": dataset_name.split("_", 1)[1]}
        djson.update(extra_json or {})
        djson.update({
            "channel_names": channel_names,
            "labels": labels,
            "numTraining": num_training,
            "file_ending": FILE_ENDING,
            "nnunet_semi": dict(provenance, **{
                "num_labeled_cases": len(labeled_ids),
                "num_val_cases": len(val_ids),
                "num_test_cases": sum(1 for j in jobs if j.dest == "ts"),
                "num_unlabeled_cases": sum(1 for j in jobs if j.dest == "unl"),
                "unlabeled_folder": UNLABELED_FOLDER,
                "splits_file": SPLITS_FILE,
                "val_is_train": not val_ids,
            }),
        })
        _write_json(djson, os.path.join(tmp, "dataset.json"))
        _write_json([{"train": list(labeled_ids), "val": list(val_ids) if val_ids else list(labeled_ids)}],
                    os.path.join(tmp, SPLITS_FILE))
        _commit_folder(tmp, target, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


# ----------------------------------------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------------------------------------
def add_protocol_args(parser, default_id: Optional[int], labeled_help: str, id_help: Optional[str] = None) -> None:
    """Arguments every paper converter shares: labeled count / ratio, seed, selection, id, output, overwrite."""
    g = parser.add_mutually_exclusive_group(required=True)
    g.add_argument("--labeled", type=int, default=None, help=labeled_help)
    g.add_argument("--ratio", type=float, default=None,
                   help="fraction of the training patients that are labeled, floor(ratio * n), e.g. 0.05 or 0.1")
    parser.add_argument("--seed", type=int, default=0, help="seed of the labeled selection (default 0)")
    parser.add_argument("--selection", choices=SELECTIONS, default="random",
                        help="'random': seeded permutation of the sorted ids; 'list': first patients in the "
                             "release's list order (default random)")
    parser.add_argument("-d", dest="dataset_id", type=int, default=default_id,
                        help=id_help or f"nnU-Net dataset id (default {default_id})")
    parser.add_argument("-o", dest="output_root", default=None, help="output root (default: $nnUNet_raw)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output dataset folder")


def labeled_from_args(args) -> Dict:
    return {"num_labeled": args.labeled, "labeled_ratio": args.ratio, "seed": args.seed,
            "selection": args.selection}


def summary_line(target: str) -> str:
    """One line with the case counts of a dataset written by :func:`write_dataset`, read from its dataset.json."""
    with open(os.path.join(target, "dataset.json"), encoding="utf-8") as f:
        info = json.load(f)["nnunet_semi"]
    return (f"imagesTr: {info['num_labeled_cases'] + info['num_val_cases']} ({info['num_labeled_cases']} labeled + "
            f"{info['num_val_cases']} validation{', val = labeled' if info['val_is_train'] else ''}), imagesTs: "
            f"{info['num_test_cases']}, {UNLABELED_FOLDER}: {info['num_unlabeled_cases']}")


def print_dataset(target: str) -> None:
    """Print a converted dataset's folder and its :func:`summary_line`."""
    print(target)
    print(summary_line(target))


def run_entry(prog: str, run: Callable[[], Any], errors: Tuple[Type[BaseException], ...] = (ConversionError,),
              report: Callable[[Any], None] = print_dataset) -> Any:
    """The end of every console script here: ``result = run()``; if it raises one of ``errors``, print
    ``<prog>: error: <message>`` to stderr and exit with status 1; otherwise ``report(result)`` (default: the
    dataset folder and its summary line) and return ``result``."""
    try:
        result = run()
    except errors as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        sys.exit(1)
    report(result)
    return result
