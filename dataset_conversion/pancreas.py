"""NIH Pancreas-CT (82 abdominal CT volumes, pancreas masks) -> nnU-Net v2 raw dataset with the papers' protocol.

Two source releases:

* **TCIA release** (:func:`convert_pancreas_dicom`): one CT series per patient,
  ``Pancreas-CT/PANCREAS_0001/<study>/<series>/*.dcm`` (512 x 512 x 181-466), and the label volumes
  ``TCIA_pancreas_labels-02-05-2017/label0001.nii.gz`` (0 background, 1 pancreas). The series is read with
  SimpleITK's ``ImageSeriesReader`` (slices ordered by position, rescale slope / intercept applied): the image keeps
  its Hounsfield units and the spacing, origin and direction of the DICOM headers. The label must lie on the
  series' voxel grid (size, spacing, origin, direction; a label stored with flipped or permuted axes is reoriented
  exactly, without interpolation) and is written with the image's geometry.
* **h5 release** of UA-MT's family (DTC, MC-Net, MCF, the dual-stream paper): ``train.list`` (62 cases) and
  ``test.list`` (20) beside ``Pancreas_h5/<case>_norm.h5`` (e.g. ``image0001_norm.h5``; also looked up directly in
  the source folder and without ``_norm``), keys ``image`` (float32, soft-tissue window and normalisation already
  applied, cropped around the pancreas with a margin) and ``label`` (0 / 1). The arrays are taken to be in (x, y, z)
  order like UA-MT's LA release (``array_axes='zyx'`` for copies saved the other way) and carry no spacing: it is
  an argument (default 1.0 mm isotropic, an assumption: pass the true spacing if distances in mm matter).

Protocol (UA-MT, MC-Net, the dual-stream paper Sec. 3 / Table 2): 62 training and 20 test volumes; 6 or 12
(10 % / 20 %, ``floor(ratio * 62)``) training volumes are labeled, chosen with a seed (or the first ones of
``train.list``); the other training volumes go to ``imagesUnlabeled``; the test volumes to
``imagesTs``/``labelsTs``. The TCIA release ships no split: ``num_test`` (default 20) test patients are drawn with
``RandomState(seed + 1)``, or ``split_lists`` (a folder with the h5 release's ``train.list`` / ``test.list``;
entries are matched by their number, ``image0001`` -> ``PANCREAS_0001``) reproduces the h5 split. With
``num_val=0`` (default, as in the papers) fold 0 validates on the labeled cases.

Command line: ``python -m dataset_conversion.pancreas dicom|h5 ...`` (:func:`pancreas_entry`).
"""
import argparse
import os
import re
from functools import partial
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from .common import (ConversionError, add_protocol_args, case_jobs, check_case_id, check_compressed, check_disjoint,
                     check_label_values, check_spacing, id_filter, keeps_locale, labeled_from_args, paper_provenance,
                     prepare_target, read_h5_pair, read_list, run_entry, sitk_image, source_folder, split_pool,
                     split_training_pool, write_dataset)

DEFAULT_ID = 31
DATASET_NAME = "Pancreas"
LABELS = {"background": 0, "pancreas": 1}
CHANNELS = {"0": "CT"}
DEFAULT_H5_SPACING = (1.0, 1.0, 1.0)  # (z, y, x) mm; the h5 release stores none
LABELS_FOLDER = "TCIA_pancreas_labels-02-05-2017"
H5_FOLDER = "Pancreas_h5"
ARRAY_AXES = ("xyz", "zyx")
_PATIENT_RE = re.compile(r"^PANCREAS_(\d{4})$")
_LAST_NUMBER_RE = re.compile(r"(\d+)(?!.*\d)")
_LABEL_FIX = "Replace the label with the release's file."


def _filter(cases: Optional[Iterable[str]], known: Sequence[str], where: str) -> Optional[set]:
    return id_filter(cases, known, "cases", where, "Use case ids that exist in the release (e.g. PANCREAS_0001 "
                     "for the TCIA release, the list entries for the h5 release).")


def _check_binary(arr: np.ndarray, path: str) -> np.ndarray:
    check_label_values(arr, LABELS, path, _LABEL_FIX)
    return arr.astype(np.uint8, copy=False)


# ----------------------------------------------------------------------------------------------------------------
# TCIA release: DICOM series + NIfTI labels
# ----------------------------------------------------------------------------------------------------------------
def _find_patients(source: str) -> Dict[str, str]:
    """PANCREAS_NNNN -> folder, in ``source`` or up to two levels below (``Pancreas-CT/``, ``manifest-*/...``)."""
    found: Dict[str, str] = {}
    level = [source]
    for _ in range(3):
        below = []
        for parent in level:
            for d in sorted(os.listdir(parent)):
                path = os.path.join(parent, d)
                if not os.path.isdir(path):
                    continue
                if _PATIENT_RE.match(d):
                    if d in found:
                        raise ConversionError(f"Patient {d} found twice: {found[d]} and {path}. Keep one of them.")
                    found[d] = path
                else:
                    below.append(path)
        if found:
            break
        level = below
    if not found:
        raise ConversionError(f"No PANCREAS_NNNN patient folders in {source} or the two levels below it. Pass the "
                              f"TCIA 'Pancreas-CT' folder (or the download folder holding it).")
    return found


def _labels_folder(source: str, labels: Optional[str]) -> str:
    if labels is not None:
        return source_folder(labels, "Pancreas label folder", f"Pass the folder holding label0001.nii.gz ... "
                             f"({LABELS_FOLDER} in the TCIA download).")
    for parent in (source, os.path.dirname(source), os.path.dirname(os.path.dirname(source))):
        cand = os.path.join(parent, LABELS_FOLDER)
        if os.path.isdir(cand):
            return cand
    raise ConversionError(f"No label folder: {LABELS_FOLDER} is neither in {source} nor beside it. Pass the folder "
                          f"holding label0001.nii.gz ... (labels=..., --labels).")


def _label_path(labels_dir: str, patient: str) -> str:
    return os.path.join(labels_dir, f"label{_PATIENT_RE.match(patient).group(1)}.nii.gz")


@keeps_locale()
def _find_series(folder: str) -> Tuple[str, List[str]]:
    """(series folder, slice files ordered by position) of the one DICOM series under a patient folder."""
    import SimpleITK as sitk

    found = []
    for d, dirs, files in os.walk(folder):
        dirs.sort()
        if files:
            found += [(d, sid) for sid in sitk.ImageSeriesReader.GetGDCMSeriesIDs(d)]
    if not found:
        raise ConversionError(f"{folder}: no DICOM series found. Every PANCREAS_NNNN folder holds one CT series "
                              f"(<study>/<series>/*.dcm); restore it from the TCIA download or leave the patient out "
                              f"(cases=..., --cases).")
    if len(found) > 1:
        raise ConversionError(f"{folder}: {len(found)} DICOM series ({', '.join(f'{d} [{s}]' for d, s in found)}); "
                              f"the release has one CT series per patient. Remove the extra series.")
    d, sid = found[0]
    return d, list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(d, sid))


@keeps_locale()
def _read_series(series_dir: str, files: List[str]):
    """The CT volume in HU: int16 when the rescaled values are integers in its range, else float32."""
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    try:
        img = reader.Execute()
    except RuntimeError as e:
        raise ConversionError(f"{series_dir}: cannot read the DICOM series ({e}). Restore the series from the TCIA "
                              f"download.")
    if img.GetDimension() != 3 or img.GetNumberOfComponentsPerPixel() != 1:
        raise ConversionError(f"{series_dir}: expected a 3D single-channel CT series, got dimension "
                              f"{img.GetDimension()} with {img.GetNumberOfComponentsPerPixel()} channel(s). Restore "
                              f"the series from the TCIA download.")
    arr = sitk.GetArrayViewFromImage(img)
    if np.issubdtype(arr.dtype, np.integer):
        if arr.size and arr.min() >= np.iinfo(np.int16).min and arr.max() <= np.iinfo(np.int16).max:
            return sitk.Cast(img, sitk.sitkInt16)
        return img
    return sitk.Cast(img, sitk.sitkFloat32)


def _label_on_grid(lab, img, lab_path: str, series_dir: str):
    """``lab`` on the voxel grid of ``img`` (reoriented exactly if stored with other axis directions), else a
    ConversionError naming both and what differs."""
    import SimpleITK as sitk

    if lab.GetDimension() != 3 or lab.GetNumberOfComponentsPerPixel() != 1:
        raise ConversionError(f"{lab_path}: expected a 3D single-channel label, got dimension {lab.GetDimension()}. "
                              f"{_LABEL_FIX}")
    if not np.allclose(lab.GetDirection(), img.GetDirection(), atol=1e-3):
        code = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(img.GetDirection())
        lab = sitk.DICOMOrient(lab, code)
    problems = []
    if lab.GetSize() != img.GetSize():
        problems.append(f"size {lab.GetSize()} vs {img.GetSize()}")
    if not np.allclose(lab.GetSpacing(), img.GetSpacing(), rtol=1e-3, atol=1e-4):
        problems.append(f"spacing {lab.GetSpacing()} vs {img.GetSpacing()}")
    if not np.allclose(lab.GetDirection(), img.GetDirection(), atol=1e-3):
        problems.append(f"direction {lab.GetDirection()} vs {img.GetDirection()}")
    if not np.allclose(lab.GetOrigin(), img.GetOrigin(), rtol=0, atol=0.1 * min(img.GetSpacing())):
        problems.append(f"origin {lab.GetOrigin()} vs {img.GetOrigin()}")
    if problems:
        raise ConversionError(f"{lab_path}: label geometry differs from the CT series {series_dir} (label vs image: "
                              f"{'; '.join(problems)}). The label must lie on the series' voxel grid: check that it "
                              f"belongs to this patient and replace it with the release's file.")
    return lab


def _write_dicom_case(series: Dict[str, Tuple[str, List[str]]], labels_dir: str, case: str, img_path: str,
                      lab_path: Optional[str]) -> None:
    import SimpleITK as sitk

    series_dir, files = series[case]
    img = _read_series(series_dir, files)
    if lab_path is not None:
        src = _label_path(labels_dir, case)
        check_compressed(src, "label", fix=_LABEL_FIX)
        try:
            lab = sitk.ReadImage(src)
        except RuntimeError as e:
            raise ConversionError(f"{src}: cannot read the label ({e}). {_LABEL_FIX}")
        lab = _label_on_grid(lab, img, src, series_dir)
        arr = _check_binary(sitk.GetArrayFromImage(lab), src)
        sitk.WriteImage(sitk_image(arr, None, reference=img), lab_path, True)
    sitk.WriteImage(img, img_path, True)


def _split_from_lists(lists_dir: str, patients: Dict[str, str]) -> Tuple[List[str], List[str]]:
    """(train, test) patients of the h5 release's lists, entries matched by number (image0001 -> PANCREAS_0001)."""
    lists = {}
    for role in ("train", "test"):
        path = os.path.join(lists_dir, f"{role}.list")
        pats = []
        for entry in read_list(path, f"{role}.list"):
            m = _LAST_NUMBER_RE.search(os.path.basename(entry))
            p = f"PANCREAS_{int(m.group(1)):04d}" if m else None
            if p not in patients:
                raise ConversionError(f"{path} names {entry!r}, which matches no PANCREAS_NNNN patient folder (by its "
                                      f"number). Pass the complete TCIA release or fix the list.")
            pats.append(p)
        lists[role] = pats
    check_disjoint(lists, lists_dir)
    return lists["train"], lists["test"]


def convert_pancreas_dicom(source: str, labels: Optional[str] = None, num_labeled: Optional[int] = None,
                           labeled_ratio: Optional[float] = None, seed: int = 0, selection: str = "random",
                           num_val: int = 0, num_test: int = 20, split_lists: Optional[str] = None,
                           dataset_id: int = DEFAULT_ID, output_root: Optional[str] = None, overwrite: bool = False,
                           cases: Optional[Iterable[str]] = None) -> str:
    """Convert the TCIA NIH Pancreas-CT release into ``<output_root or $nnUNet_raw>/Dataset031_Pancreas``.

    ``source``: the ``Pancreas-CT`` folder (``PANCREAS_NNNN/<study>/<series>/*.dcm``) or a folder up to two levels
    above it. ``labels``: the folder with ``labelNNNN.nii.gz`` (default: ``TCIA_pancreas_labels-02-05-2017`` in
    ``source`` or beside it). Case ids are the patient folder names. Split: ``split_lists`` (a folder with the h5
    release's ``train.list`` / ``test.list``; patients in no list are not converted) or ``num_test`` test patients
    drawn with ``RandomState(seed + 1)``; then ``num_val`` validation and ``num_labeled`` / ``labeled_ratio``
    labeled patients of the training pool (:func:`~dataset_conversion.common.split_training_pool`; ``'list'``
    selection follows ``train.list``, else patient order), the rest unlabeled (image only: their labels are neither
    needed nor read). Images: the series in HU (int16 when it fits), geometry from DICOM; labels: 0 / 1, uint8,
    reoriented onto the image grid. Every patient's series (exactly one) and every needed label file are found
    before anything is written. ``cases`` restricts the conversion to these patients. Returns the dataset folder.
    """
    source = source_folder(source, "Pancreas-CT folder", "Pass the TCIA 'Pancreas-CT' folder (PANCREAS_NNNN/...).")
    out_root, dataset_name, target = prepare_target(output_root, dataset_id, DATASET_NAME, overwrite)
    patients = _find_patients(source)
    labels_dir = _labels_folder(source, labels)
    wanted = _filter(cases, sorted(patients), source)
    if split_lists is not None:
        lists_dir = source_folder(split_lists, "split list folder", "Pass the folder with the h5 release's "
                                  "train.list and test.list.")
        train, test = _split_from_lists(lists_dir, patients)
        if wanted is not None:
            train, test = [p for p in train if p in wanted], [p for p in test if p in wanted]
    else:
        lists_dir = None
        pool = sorted(p for p in patients if wanted is None or p in wanted)
        train, _, test = split_pool(pool, 0, num_test, seed, what=f"patient pool of {source}")
    labeled, val, unlabeled = split_training_pool(train, num_labeled, labeled_ratio, seed, selection, num_val,
                                                  f"training pool of {source}")
    test = sorted(test)
    for p in labeled + val + test:
        path = _label_path(labels_dir, p)
        if not os.path.isfile(path):
            raise ConversionError(f"{path} not found, but patient {p} needs its label (labeled / validation / test). "
                                  f"Restore the file from {LABELS_FOLDER}.")
    series = {p: _find_series(patients[p]) for p in sorted(labeled + val + test + unlabeled)}
    jobs = case_jobs(labeled, val, test, unlabeled, partial(_write_dicom_case, series, labels_dir))
    prov = paper_provenance("NIH Pancreas-CT, TCIA DICOM release", source, seed, selection, labeled_ratio, labeled,
                            val, test, unlabeled, labels_folder=labels_dir, split_lists=lists_dir,
                            num_test_requested=None if split_lists else int(num_test))
    return write_dataset(out_root, dataset_name, target, jobs, LABELS, CHANNELS, labeled, val, prov, overwrite,
                         "Converting Pancreas-CT (DICOM)")


# ----------------------------------------------------------------------------------------------------------------
# h5 release (UA-MT family)
# ----------------------------------------------------------------------------------------------------------------
def _h5_case(entry: str, list_path: str) -> str:
    name = os.path.basename(entry)
    return check_case_id(name[:-len("_norm")] if name.endswith("_norm") else name, list_path)


def _find_h5(source: str, case: str) -> str:
    options = [os.path.join(folder, case + suffix) for suffix in ("_norm.h5", ".h5")
               for folder in (os.path.join(source, H5_FOLDER), source)]
    found = [p for p in options if os.path.isfile(p)]
    if not found:
        raise ConversionError(f"{options[0]} not found (nor {', '.join(options[1:])}), but {case} is listed. Restore "
                              f"the file from the h5 release or remove the case from its list.")
    return found[0]


def _write_h5_case(files: Dict[str, str], spacing, axes: str, case: str, img_path: str,
                   lab_path: Optional[str]) -> None:
    import SimpleITK as sitk

    path = files[case]
    image, label = read_h5_pair(path, 3, "Pancreas h5")
    order = (2, 1, 0) if axes == "xyz" else (0, 1, 2)  # -> (z, y, x) for SimpleITK
    sitk.WriteImage(sitk_image(image.astype(np.float32).transpose(order), spacing), img_path, True)
    if lab_path is not None:
        sitk.WriteImage(sitk_image(_check_binary(label, path).transpose(order), spacing), lab_path, True)


def convert_pancreas_h5(source: str, num_labeled: Optional[int] = None, labeled_ratio: Optional[float] = None,
                        seed: int = 0, selection: str = "random", num_val: int = 0,
                        spacing: Sequence[float] = DEFAULT_H5_SPACING, array_axes: str = "xyz",
                        dataset_id: int = DEFAULT_ID, output_root: Optional[str] = None, overwrite: bool = False,
                        cases: Optional[Iterable[str]] = None) -> str:
    """Convert the Pancreas h5 release (UA-MT family) into ``<output_root or $nnUNet_raw>/Dataset031_Pancreas``.

    ``source`` holds ``train.list`` and ``test.list`` (entries such as ``image0001``, ``image0001_norm`` or
    ``Pancreas_h5/image0001_norm.h5``; the case id is the name without ``_norm``), and the h5 files in
    ``Pancreas_h5/`` or in ``source`` itself. ``num_labeled`` (6 / 12) or ``labeled_ratio`` (0.1 / 0.2 of 62 ->
    6 / 12) of the ``train.list`` cases are labeled (``selection='random'``: ``RandomState(seed)`` over the sorted
    ids; ``'list'``: the first cases of ``train.list``), the rest go to ``imagesUnlabeled``; ``test.list`` cases are
    test cases. ``num_val`` validation cases are taken out of the training pool first (default 0: fold 0 validates
    on the labeled cases). ``array_axes``: axis order of the stored arrays, ``'xyz'`` (default) or ``'zyx'``;
    ``spacing`` (z, y, x) mm (default 1.0 isotropic). Images float32, labels uint8 0 / 1. ``cases`` restricts both
    lists to these case ids. Returns the dataset folder.
    """
    source = source_folder(source, "Pancreas h5 folder", "Pass the folder with train.list, test.list and "
                           f"{H5_FOLDER}/.")
    spacing = check_spacing(spacing)
    if array_axes not in ARRAY_AXES:
        raise ConversionError(f"array_axes must be one of {ARRAY_AXES}, got {array_axes!r}.")
    out_root, dataset_name, target = prepare_target(output_root, dataset_id, DATASET_NAME, overwrite)
    lists = {}
    for role in ("train", "test"):
        path = os.path.join(source, f"{role}.list")
        lists[role] = [_h5_case(e, path) for e in read_list(path, f"{role}.list")]
    check_disjoint(lists, source, "Case")
    wanted = _filter(cases, lists["train"] + lists["test"], f"the lists of {source}")
    if wanted is not None:
        lists = {r: [c for c in lists[r] if c in wanted] for r in lists}
    files = {c: _find_h5(source, c) for c in lists["train"] + lists["test"]}
    labeled, val, unlabeled = split_training_pool(lists["train"], num_labeled, labeled_ratio, seed, selection,
                                                  num_val, f"training pool of {os.path.join(source, 'train.list')}")
    test = sorted(lists["test"])
    jobs = case_jobs(labeled, val, test, unlabeled, partial(_write_h5_case, files, spacing, array_axes))
    prov = paper_provenance("NIH Pancreas-CT, h5 release (UA-MT family)", source, seed, selection, labeled_ratio,
                            labeled, val, test, unlabeled, spacing_zyx_mm=list(spacing), array_axes=array_axes)
    return write_dataset(out_root, dataset_name, target, jobs, LABELS, CHANNELS, labeled, val, prov, overwrite,
                         "Converting Pancreas-CT (h5)")


# ----------------------------------------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------------------------------------
def pancreas_entry(argv: Optional[List[str]] = None) -> None:
    """``nnunet_semi_convert_pancreas {dicom,h5} ...`` (also ``python -m dataset_conversion.pancreas``)."""
    parser = argparse.ArgumentParser(
        prog="nnunet_semi_convert_pancreas",
        epilog="example: nnunet_semi_convert_pancreas dicom -i Pancreas-CT --ratio 0.2",
        description="Convert NIH Pancreas-CT (TCIA DICOM release or the UA-MT family's h5 release) into an nnU-Net "
                    "v2 raw dataset: labeled (+ validation) cases in imagesTr, test cases in imagesTs, the rest of "
                    "the training pool in imagesUnlabeled, and a one-fold splits_final.json.")
    sub = parser.add_subparsers(dest="release", required=True)
    dcm = sub.add_parser("dicom", help="TCIA release (Pancreas-CT/PANCREAS_NNNN/<study>/<series>/*.dcm + labels)")
    dcm.add_argument("-i", dest="source", required=True, help="'Pancreas-CT' folder (or a folder above it)")
    dcm.add_argument("--labels", default=None,
                     help=f"folder with labelNNNN.nii.gz (default: {LABELS_FOLDER} in or beside -i)")
    dcm.add_argument("--test", type=int, default=20, help="test patients of the seeded split (default 20)")
    dcm.add_argument("--split-lists", default=None,
                     help="folder with the h5 release's train.list / test.list: use their split (matched by number)")
    h5 = sub.add_parser("h5", help="h5 release (train.list, test.list, Pancreas_h5/<case>_norm.h5)")
    h5.add_argument("-i", dest="source", required=True, help="folder with train.list / test.list")
    h5.add_argument("--spacing", type=float, nargs=3, default=list(DEFAULT_H5_SPACING), metavar=("Z", "Y", "X"),
                    help="voxel spacing in mm, (z, y, x); the release stores none (default 1 1 1)")
    h5.add_argument("--axes", choices=ARRAY_AXES, default="xyz",
                    help="axis order of the stored arrays (default xyz, as UA-MT's h5 files)")
    for p in (dcm, h5):
        add_protocol_args(p, DEFAULT_ID, "number of labeled training cases (papers: 6 or 12 of 62)")
        p.add_argument("--val", type=int, default=0,
                       help="validation cases taken from the training pool (default 0: validate on labeled)")
        p.add_argument("--cases", nargs="+", default=None, help="convert only these case ids")
    args = parser.parse_args(argv)
    common = dict(labeled_from_args(args), num_val=args.val, dataset_id=args.dataset_id,
                  output_root=args.output_root, overwrite=args.overwrite, cases=args.cases)
    if args.release == "dicom":
        run_entry(parser.prog, lambda: convert_pancreas_dicom(args.source, labels=args.labels, num_test=args.test,
                                                              split_lists=args.split_lists, **common))
    else:
        run_entry(parser.prog, lambda: convert_pancreas_h5(args.source, spacing=args.spacing, array_axes=args.axes,
                                                           **common))


if __name__ == "__main__":
    pancreas_entry()
