"""LA (2018 Atrial Segmentation Challenge, LGE-MRI, left atrium) -> nnU-Net v2 raw dataset with the papers' protocol.

Two source releases:

* **Original nrrd release** (:func:`convert_la_nrrd`): one folder per case (the case id), directly in the source
  folder or one level below (``Training Set/``), each with ``lgemri.nrrd`` (image) and ``laendo.nrrd`` (label,
  0 / 255; 255 -> 1).
* **UA-MT h5 release** (:func:`convert_la_h5`): ``train.list`` (80 case ids) and ``test.list`` (20) beside the
  case folders (``<case>/mri_norm2.h5``, in the source folder or in ``2018LA_Seg_Training Set/``), keys ``image``
  (float32, normalised, cropped around the atrium) and ``label`` (uint8 0 / 1). The arrays are in (x, y, z) order
  (as ``pynrrd`` reads the nrrd files) and carry no spacing: it is an argument (default 0.625 mm isotropic, the
  challenge's resolution).

Protocol (UA-MT and followers): 80 training cases of which 4, 8 or 16 (5 / 10 / 20 %) are labeled, chosen with a
seed; the other training cases go to ``imagesUnlabeled``; 20 test cases to ``imagesTs``/``labelsTs``. The papers
use no validation set: with ``num_val=0`` (default) fold 0 of ``splits_final.json`` validates on the labeled cases
(nnU-Net needs a non-empty validation set); ``num_val > 0`` takes validation cases (with labels) out of the
training pool before the labeled cases are chosen.

Label: 0 background, 1 left atrium. Command line: ``python -m dataset_conversion.la h5|nrrd ...`` (:func:`la_entry`).
"""
import argparse
import os
from functools import partial
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np

from .common import (ConversionError, add_protocol_args, case_jobs, check_case_id, check_disjoint, check_spacing,
                     id_filter, labeled_from_args, paper_provenance, prepare_target, read_h5_pair, read_image,
                     read_label, read_list, run_entry, sitk_image, source_folder, split_pool, split_training_pool,
                     write_dataset)

DEFAULT_ID = 28
DATASET_NAME = "LA"
LABELS = {"background": 0, "left_atrium": 1}
CHANNELS = {"0": "LGE-MRI"}
DEFAULT_SPACING = (0.625, 0.625, 0.625)
H5_NAME = "mri_norm2.h5"
IMAGE_NRRD, LABEL_NRRD = "lgemri.nrrd", "laendo.nrrd"
H5_SUBFOLDER = "2018LA_Seg_Training Set"


def _binary_label(arr: np.ndarray, path: str) -> np.ndarray:
    values = set(np.unique(arr).tolist())
    bad = sorted(values - {0, 1, 255})
    if bad or {1, 255} <= values:
        raise ConversionError(f"{path}: unexpected label values {bad or sorted(values)}; the left atrium mask must "
                              f"be 0 / 255 (original release) or 0 / 1 (h5 release). Replace the file with the "
                              f"release's.")
    return (arr > 0).astype(np.uint8)


def _filter(cases: Optional[Iterable[str]], known: Sequence[str], where: str) -> Optional[set]:
    return id_filter(cases, known, "cases", where, "Use case ids (case folder names) that exist in the release.")


# ----------------------------------------------------------------------------------------------------------------
# UA-MT h5 release
# ----------------------------------------------------------------------------------------------------------------
def _write_h5_case(files: Dict[str, str], spacing, case: str, img_path: str, lab_path: Optional[str]) -> None:
    import SimpleITK as sitk

    path = files[case]
    image, label = read_h5_pair(path, 3, "UA-MT")
    label = _binary_label(label, path)
    # (x, y, z) arrays -> (z, y, x) for SimpleITK
    sitk.WriteImage(sitk_image(image.astype(np.float32).transpose(2, 1, 0), spacing), img_path, True)
    if lab_path is not None:
        sitk.WriteImage(sitk_image(label.transpose(2, 1, 0), spacing), lab_path, True)


def convert_la_h5(source: str, num_labeled: Optional[int] = None, labeled_ratio: Optional[float] = None,
                  seed: int = 0, selection: str = "random", num_val: int = 0,
                  spacing: Sequence[float] = DEFAULT_SPACING, dataset_id: int = DEFAULT_ID,
                  output_root: Optional[str] = None, overwrite: bool = False,
                  cases: Optional[Iterable[str]] = None) -> str:
    """Convert the UA-MT LA h5 release into ``<output_root or $nnUNet_raw>/Dataset028_LA``.

    ``source`` holds ``train.list`` and ``test.list``; case ``c`` is read from ``source/c/mri_norm2.h5`` or
    ``source/2018LA_Seg_Training Set/c/mri_norm2.h5``. ``num_labeled`` (4 / 8 / 16) or ``labeled_ratio`` of the
    ``train.list`` cases are labeled (``selection='random'``: ``RandomState(seed)`` over the sorted ids;
    ``'list'``: the first cases in ``train.list`` order, as UA-MT's ``labeled_idxs = range(n)`` does), the rest are
    unlabeled; ``test.list`` cases are test cases. ``num_val`` validation cases are taken out of the training pool
    first (default 0: none, fold 0 validates on the labeled cases; a ``labeled_ratio`` applies to the pool left after
    them). The (x, y, z) arrays are written with
    ``spacing`` (z, y, x) mm (default 0.625 isotropic), images float32, labels uint8.
    ``cases`` (optional) restricts both lists to these case ids. Returns the dataset folder.
    """
    source = source_folder(source, "LA h5 folder", "Pass the UA-MT data folder (the one with train.list and "
                           "test.list).")
    spacing = check_spacing(spacing)
    out_root, dataset_name, target = prepare_target(output_root, dataset_id, DATASET_NAME, overwrite)
    lists = {r: [os.path.basename(e) for e in read_list(os.path.join(source, f"{r}.list"), f"{r}.list")]
             for r in ("train", "test")}
    check_disjoint(lists, source, "Case")
    for r in lists:
        for c in lists[r]:
            check_case_id(c, os.path.join(source, f"{r}.list"))
    wanted = _filter(cases, lists["train"] + lists["test"], f"the lists of {source}")
    if wanted is not None:
        lists = {r: [c for c in lists[r] if c in wanted] for r in lists}
    files: Dict[str, str] = {}
    for c in lists["train"] + lists["test"]:
        options = [os.path.join(source, c, H5_NAME), os.path.join(source, H5_SUBFOLDER, c, H5_NAME)]
        found = [p for p in options if os.path.isfile(p)]
        if not found:
            raise ConversionError(f"{options[0]} not found (nor {options[1]}), but {c} is listed. Restore the case "
                                  f"from the UA-MT release or remove it from the list.")
        files[c] = found[0]
    labeled, val, unlabeled = split_training_pool(lists["train"], num_labeled, labeled_ratio, seed, selection,
                                                  num_val, f"training pool of {os.path.join(source, 'train.list')}")
    test = sorted(lists["test"])
    jobs = case_jobs(labeled, val, test, unlabeled, partial(_write_h5_case, files, spacing))
    prov = paper_provenance("LA 2018, UA-MT h5 release", source, seed, selection, labeled_ratio, labeled, val,
                            test, unlabeled, spacing_zyx_mm=list(spacing), array_axes="xyz")
    return write_dataset(out_root, dataset_name, target, jobs, LABELS, CHANNELS, labeled, val, prov, overwrite,
                         "Converting LA (h5)")


# ----------------------------------------------------------------------------------------------------------------
# original nrrd release
# ----------------------------------------------------------------------------------------------------------------
def _find_nrrd_cases(source: str) -> Dict[str, str]:
    found: Dict[str, str] = {}
    parents = [source] + sorted(os.path.join(source, d) for d in os.listdir(source)
                                if os.path.isdir(os.path.join(source, d))
                                and not os.path.isfile(os.path.join(source, d, IMAGE_NRRD)))
    for parent in parents:
        for d in sorted(os.listdir(parent)):
            folder = os.path.join(parent, d)
            if os.path.isfile(os.path.join(folder, IMAGE_NRRD)):
                check_case_id(d, folder)
                if d in found:
                    raise ConversionError(f"Case {d} found twice: {found[d]} and {folder}. Keep one of them.")
                found[d] = folder
    if not found:
        raise ConversionError(f"No case folders with {IMAGE_NRRD} in {source} or its subfolders. Pass the "
                              f"challenge's 'Training Set' folder (or its parent).")
    return found


def _write_nrrd_case(folders: Dict[str, str], case: str, img_path: str, lab_path: Optional[str]) -> None:
    import SimpleITK as sitk

    img_src = os.path.join(folders[case], IMAGE_NRRD)
    img = read_image(img_src)
    sitk.WriteImage(img, img_path, True)
    if lab_path is None:
        return
    lab_src = os.path.join(folders[case], LABEL_NRRD)
    # the label gets the image's geometry; its spacing header has never been compared with the image's here
    lab = read_label(lab_src, img, img_src, same_spacing=False)
    arr = _binary_label(sitk.GetArrayFromImage(lab), lab_src)
    sitk.WriteImage(sitk_image(arr, None, reference=img), lab_path, True)


def convert_la_nrrd(source: str, num_labeled: Optional[int] = None, labeled_ratio: Optional[float] = None,
                    seed: int = 0, selection: str = "random", num_val: int = 0, num_test: int = 20,
                    split_lists: Optional[str] = None, dataset_id: int = DEFAULT_ID,
                    output_root: Optional[str] = None, overwrite: bool = False,
                    cases: Optional[Iterable[str]] = None) -> str:
    """Convert the original LA 2018 challenge release (nrrd) into ``<output_root or $nnUNet_raw>/Dataset028_LA``.

    Cases: folders holding ``lgemri.nrrd`` (and ``laendo.nrrd`` for every case that needs a label) in ``source``
    or one level below. Split: with ``split_lists`` (a folder with UA-MT's ``train.list`` / ``test.list``) the lists
    decide (cases in no list are not converted); otherwise ``RandomState(seed + 1)`` takes ``num_test`` test cases
    (default 20: the 80 / 20 split of the 100 training cases) and the rest is the training pool. Labeled /
    validation selection as in :func:`convert_la_h5`. Images keep their type and geometry (nrrd -> NIfTI); labels
    0 / 255 become 0 / 1 (uint8) with the image's geometry. Returns the dataset folder.
    """
    source = source_folder(source, "LA folder", "Pass the challenge's 'Training Set' folder.")
    out_root, dataset_name, target = prepare_target(output_root, dataset_id, DATASET_NAME, overwrite)
    folders = _find_nrrd_cases(source)
    wanted = _filter(cases, sorted(folders), source)
    if split_lists is not None:
        lists_dir = os.path.abspath(os.path.expanduser(str(split_lists)))
        train, test = ([os.path.basename(e) for e in read_list(os.path.join(lists_dir, f"{r}.list"), f"{r}.list")]
                       for r in ("train", "test"))
        for r, lst in (("train", train), ("test", test)):
            unknown = [c for c in lst if c not in folders]
            if unknown:
                raise ConversionError(f"{os.path.join(lists_dir, r + '.list')} names {unknown[0]}, which has no case "
                                      f"folder with {IMAGE_NRRD} in {source}. Pass the complete 'Training Set'.")
        check_disjoint({"train": train, "test": test}, lists_dir, "Case")
        if wanted is not None:
            train, test = [c for c in train if c in wanted], [c for c in test if c in wanted]
    else:
        pool = sorted(c for c in folders if wanted is None or c in wanted)
        train, _, test = split_pool(pool, 0, num_test, seed, what=f"case pool of {source}")
    labeled, val, unlabeled = split_training_pool(train, num_labeled, labeled_ratio, seed, selection, num_val,
                                                  f"training pool of {source}")
    test = sorted(test)
    for c in labeled + val + test:
        p = os.path.join(folders[c], LABEL_NRRD)
        if not os.path.isfile(p):
            raise ConversionError(f"{p} not found, but case {c} needs its label (labeled / validation / test). "
                                  f"Restore the file from the release.")
    jobs = case_jobs(labeled, val, test, unlabeled, partial(_write_nrrd_case, folders))
    prov = paper_provenance("LA 2018, original nrrd release", source, seed, selection, labeled_ratio, labeled, val,
                            test, unlabeled, split_lists=os.path.abspath(split_lists) if split_lists else None,
                            num_test_requested=None if split_lists else int(num_test))
    return write_dataset(out_root, dataset_name, target, jobs, LABELS, CHANNELS, labeled, val, prov, overwrite,
                         "Converting LA (nrrd)")


# ----------------------------------------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------------------------------------
def la_entry(argv: Optional[List[str]] = None) -> None:
    """``python -m dataset_conversion.la {h5,nrrd} ...``"""
    parser = argparse.ArgumentParser(
        prog="nnunet_semi_convert_la",
        epilog="example: nnunet_semi_convert_la h5 -i data --labeled 8",
        description="Convert the LA 2018 challenge data (UA-MT h5 release or original nrrd release) into an nnU-Net "
                    "v2 raw dataset: labeled (+ validation) cases in imagesTr, test cases in imagesTs, the rest of "
                    "the training pool in imagesUnlabeled, and a one-fold splits_final.json.")
    sub = parser.add_subparsers(dest="release", required=True)
    h5 = sub.add_parser("h5", help="UA-MT release (train.list, test.list, <case>/mri_norm2.h5)")
    h5.add_argument("-i", dest="source", required=True, help="folder with train.list / test.list")
    h5.add_argument("--spacing", type=float, nargs=3, default=list(DEFAULT_SPACING), metavar=("Z", "Y", "X"),
                    help="voxel spacing in mm, (z, y, x) (default 0.625 0.625 0.625)")
    nrrd = sub.add_parser("nrrd", help="original release (<case>/lgemri.nrrd, laendo.nrrd)")
    nrrd.add_argument("-i", dest="source", required=True, help="'Training Set' folder (or its parent)")
    nrrd.add_argument("--test", type=int, default=20, help="test cases of the seeded split (default 20)")
    nrrd.add_argument("--split-lists", default=None, help="folder with UA-MT train.list / test.list")
    for p in (h5, nrrd):
        add_protocol_args(p, DEFAULT_ID, "number of labeled training cases (UA-MT: 4, 8 or 16 of 80)")
        p.add_argument("--val", type=int, default=0,
                       help="validation cases taken from the training pool (default 0: validate on labeled)")
        p.add_argument("--cases", nargs="+", default=None, help="convert only these case ids")
    args = parser.parse_args(argv)
    common = dict(labeled_from_args(args), num_val=args.val, dataset_id=args.dataset_id,
                  output_root=args.output_root, overwrite=args.overwrite, cases=args.cases)
    if args.release == "h5":
        run_entry(parser.prog, lambda: convert_la_h5(args.source, spacing=args.spacing, **common))
    else:
        run_entry(parser.prog, lambda: convert_la_nrrd(args.source, num_test=args.test,
                                                       split_lists=args.split_lists, **common))


if __name__ == "__main__":
    la_entry()
