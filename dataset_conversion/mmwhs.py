"""MM-WHS 2017 (Multi-Modality Whole Heart Segmentation, CT or MR) -> nnU-Net v2 raw dataset.

Source layout (as downloaded): ``<mod>_train/<mod>_train_1001_image.nii.gz`` + ``<mod>_train_1001_label.nii.gz``
(20 labeled volumes per modality) and ``<mod>_test/<mod>_test_2001_image.nii.gz`` (40 volumes without labels), with
``<mod>`` = ``ct`` or ``mr``; the files may also lie directly in the source folder.

Labels: the raw codes are mapped to consecutive nnU-Net labels

====  ============================  =====
code  structure                     label
====  ============================  =====
205   LV myocardium                 1
420   left atrium (LA)              2
500   LV blood cavity               3
550   right atrium (RA)             4
600   right ventricle (RV)          5
820   ascending aorta               6
850   pulmonary artery              7
====  ============================  =====

Any other value raises a :class:`ConversionError` naming the file and the values (``extra_codes`` maps extra raw
codes explicitly, e.g. ``{421: 2}`` for a stray code in one MR label).

Protocol: ``num_val`` validation and ``num_test`` test volumes are drawn from the 20 labeled volumes with
``RandomState(seed + 1)``; ``num_labeled`` / ``labeled_ratio`` of the rest are labeled (``RandomState(seed)``), the
remaining labeled volumes lose their labels and go to ``imagesUnlabeled`` together with the 40 test volumes
(``include_test_images``). Command line: ``python -m dataset_conversion.mmwhs -i MMWHS -m ct --labeled 4``
(:func:`mmwhs_entry`).
"""
import argparse
import os
import re
import shutil
from functools import partial
from typing import Dict, List, Mapping, Optional, Tuple

import numpy as np

from .common import (ConversionError, add_protocol_args, case_jobs, labeled_from_args, prepare_target, read_header,
                     read_image, read_label, run_entry, select_labeled, sitk_image, source_folder, split_pool,
                     write_dataset)

CODES = {205: "LV_myocardium", 420: "LA", 500: "LV_blood_cavity", 550: "RA", 600: "RV", 820: "ascending_aorta",
         850: "pulmonary_artery"}
CODE_TO_LABEL = {code: i + 1 for i, code in enumerate(sorted(CODES))}
LABELS = {"background": 0, **{CODES[c]: CODE_TO_LABEL[c] for c in sorted(CODES)}}
DEFAULT_IDS = {"ct": 29, "mr": 30}
CHANNELS = {"ct": {"0": "CT"}, "mr": {"0": "MRI"}}
_FILE_RE = re.compile(r"^(ct|mr)_(train|test)_(\d+)_(image|label)\.nii\.gz$")


def _find_files(source: str, modality: str) -> Tuple[Dict[str, str], Dict[str, str], Dict[str, str]]:
    """(train images, train labels, test images): case id (``ct_train_1001``) -> path."""
    imgs: Dict[str, str] = {}
    labs: Dict[str, str] = {}
    tests: Dict[str, str] = {}
    folders = [source] + sorted(os.path.join(source, d) for d in os.listdir(source)
                                if os.path.isdir(os.path.join(source, d)))
    for folder in folders:
        for name in sorted(os.listdir(folder)):
            m = _FILE_RE.match(name)
            if not m or m.group(1) != modality:
                continue
            if m.group(2) == "test" and m.group(4) == "label":
                continue  # not part of the public release; the test volumes are used as unlabeled images
            case = f"{m.group(1)}_{m.group(2)}_{m.group(3)}"
            target = tests if m.group(2) == "test" else (imgs if m.group(4) == "image" else labs)
            path = os.path.join(folder, name)
            if case in target:
                raise ConversionError(f"{name} found twice: {target[case]} and {path}. Keep one of them.")
            target[case] = path
    return imgs, labs, tests


def _map_labels(arr: np.ndarray, path: str, mapping: Mapping[int, int]) -> np.ndarray:
    values = np.unique(arr)
    if not np.all(np.equal(np.mod(values, 1), 0)):
        raise ConversionError(f"{path}: non-integer label values {[float(v) for v in values[values % 1 != 0][:5]]}. "
                              f"MM-WHS labels use the codes {sorted(CODES)}; replace the file with the release's.")
    unknown = sorted(int(v) for v in values if int(v) != 0 and int(v) not in mapping)
    if unknown:
        raise ConversionError(f"{path}: unknown label values {unknown}; MM-WHS codes are 0 and {sorted(CODES)} "
                              f"({', '.join(f'{c} {n}' for c, n in sorted(CODES.items()))}). Fix the file or map "
                              f"the extra codes explicitly (extra_codes / --map CODE=LABEL).")
    lut = np.zeros(int(values.max()) + 1 if values.size else 1, dtype=np.uint8)
    for code, lab in mapping.items():
        if code < lut.size:
            lut[code] = lab
    return lut[arr if np.issubdtype(arr.dtype, np.integer) else arr.astype(np.int32)]  # values checked above


def _write_case(images: Dict[str, str], labels: Dict[str, str], mapping: Mapping[int, int], case: str,
                img_path: str, lab_path: Optional[str]) -> None:
    import SimpleITK as sitk

    img_src = images[case]
    if lab_path is None:
        reader = read_header(img_src)
        if reader.GetDimension() != 3 or reader.GetNumberOfComponents() != 1:  # as read_image checks
            raise ConversionError(f"{img_src}: expected a 3D single-channel image, got dimension "
                                  f"{reader.GetDimension()} with {reader.GetNumberOfComponents()} channel(s). Replace "
                                  f"it with the release's file.")
        shutil.copyfile(img_src, img_path)
        return
    img = read_image(img_src)
    lab_src = labels[case]
    arr = _map_labels(sitk.GetArrayFromImage(read_label(lab_src, img, img_src)), lab_src, mapping)
    shutil.copyfile(img_src, img_path)
    sitk.WriteImage(sitk_image(arr, None, reference=img), lab_path, True)


def convert_mmwhs(source: str, modality: str = "ct", num_labeled: Optional[int] = None,
                  labeled_ratio: Optional[float] = None, seed: int = 0, selection: str = "random", num_val: int = 0,
                  num_test: int = 0, include_test_images: bool = True,
                  extra_codes: Optional[Mapping[int, int]] = None, dataset_id: Optional[int] = None,
                  output_root: Optional[str] = None, overwrite: bool = False) -> str:
    """Convert MM-WHS (one modality) into ``<output_root or $nnUNet_raw>/Dataset029_MMWHS_CT`` (CT, id 29) or
    ``Dataset030_MMWHS_MR`` (MR, id 30) unless ``dataset_id`` is given.

    The labeled pool is every ``<mod>_train_NNNN_image.nii.gz`` with its ``_label.nii.gz`` (20 in the release; a
    missing label is an error). ``num_val`` / ``num_test`` of them become validation (imagesTr) / test (imagesTs)
    cases (``RandomState(seed + 1)``), ``num_labeled`` or ``labeled_ratio`` of the rest are labeled
    (``selection='random'``: ``RandomState(seed)`` over sorted ids; ``'list'``: lowest case numbers first), the
    others go to imagesUnlabeled, as do the ``<mod>_test_NNNN_image.nii.gz`` volumes with ``include_test_images``.
    With ``num_val == 0`` fold 0 validates on the labeled cases. Case ids are the file stems (``ct_train_1001``).
    Images are copied byte for byte; labels are mapped with :data:`CODE_TO_LABEL` (plus ``extra_codes``, raw code
    -> label 1..7) and written as uint8 with the image's geometry. Returns the dataset folder.
    """
    modality = str(modality).lower()
    if modality not in DEFAULT_IDS:
        raise ConversionError(f"modality must be 'ct' or 'mr', got {modality!r}.")
    mapping = dict(CODE_TO_LABEL)
    for code, lab in (extra_codes or {}).items():
        if int(code) in CODES or int(code) <= 0:
            raise ConversionError(f"extra_codes: {code} is background or already a standard MM-WHS code; only map "
                                  f"additional raw codes.")
        if int(lab) not in range(1, len(CODES) + 1):
            raise ConversionError(f"extra_codes: code {code} -> {lab}, but labels are 1..{len(CODES)} "
                                  f"({', '.join(f'{v} {k}' for k, v in LABELS.items() if v)}).")
        mapping[int(code)] = int(lab)
    source = source_folder(source, "MM-WHS folder", f"Pass the folder holding {modality}_train/ and "
                                                    f"{modality}_test/.")
    dataset_id = DEFAULT_IDS[modality] if dataset_id is None else dataset_id
    out_root, dataset_name, target = prepare_target(output_root, dataset_id, f"MMWHS_{modality.upper()}", overwrite)
    imgs, labs, tests = _find_files(source, modality)
    if not imgs:
        raise ConversionError(f"No {modality}_train_NNNN_image.nii.gz files in {source} or its subfolders. Pass the "
                              f"MM-WHS folder holding {modality}_train/.")
    for case in sorted(imgs):
        if case not in labs:
            raise ConversionError(f"Label missing for {imgs[case]}: expected {case}_label.nii.gz beside it. Restore "
                                  f"it from the release.")
    orphans = sorted(set(labs) - set(imgs))
    if orphans:
        raise ConversionError(f"{labs[orphans[0]]} has no image ({orphans[0]}_image.nii.gz). Restore the image or "
                              f"remove the label.")
    pool = sorted(imgs, key=lambda c: int(c.rsplit("_", 1)[1]))
    num_val, num_test = int(num_val), int(num_test)
    if num_val or num_test:
        train, val, test = split_pool(pool, num_val, num_test, seed, what=f"labeled pool of {source}")
        train = [c for c in pool if c in set(train)]
    else:
        train, val, test = pool, [], []
    labeled = select_labeled(train, num_labeled, labeled_ratio, seed, selection, what=f"training pool of {source}")
    unlabeled = sorted(set(train) - set(labeled))
    test_images = sorted(tests) if include_test_images else []
    all_images = dict(imgs, **tests)
    jobs = case_jobs(labeled, val, test, unlabeled + test_images, partial(_write_case, all_images, labs, mapping))
    prov = {"source": f"MM-WHS 2017, {modality.upper()}", "source_folder": source, "seed": int(seed),
            "selection": selection, "labeled_ratio": labeled_ratio, "num_labeled_patients": len(labeled),
            "include_test_images": bool(include_test_images),
            "label_codes": {str(code): lab for code, lab in sorted(mapping.items())},
            "labeled": sorted(labeled), "val": sorted(val), "test": sorted(test),
            "unlabeled": sorted(unlabeled + test_images)}
    return write_dataset(out_root, dataset_name, target, jobs, LABELS, CHANNELS[modality], sorted(labeled),
                         sorted(val), prov, overwrite, f"Converting MM-WHS {modality.upper()}")


def _parse_map(items: Optional[List[str]]) -> Dict[int, int]:
    out = {}
    for item in items or []:
        try:
            code, lab = item.split("=")
            out[int(code)] = int(lab)
        except ValueError:
            raise ConversionError(f"--map expects CODE=LABEL (e.g. 421=2), got {item!r}.")
    return out


def mmwhs_entry(argv: Optional[List[str]] = None) -> None:
    """``python -m dataset_conversion.mmwhs -i MMWHS -m ct|mr (--labeled N | --ratio R) ...``"""
    parser = argparse.ArgumentParser(
        prog="nnunet_semi_convert_mmwhs",
        epilog="example: nnunet_semi_convert_mmwhs -i MMWHS -m ct --labeled 4",
        description="Convert MM-WHS 2017 (CT or MR) into an nnU-Net v2 raw dataset: raw codes 205, 420, 500, 550, "
                    "600, 820, 850 -> labels 1..7; labeled (+ validation) volumes in imagesTr, test volumes in "
                    "imagesTs, the other training volumes and the 40 unlabeled test volumes in imagesUnlabeled.")
    parser.add_argument("-i", dest="source", required=True, help="folder holding <mod>_train/ and <mod>_test/")
    parser.add_argument("-m", dest="modality", choices=("ct", "mr"), default="ct", help="modality (default ct)")
    parser.add_argument("--val", type=int, default=0, help="validation volumes from the 20 labeled (default 0)")
    parser.add_argument("--test", type=int, default=0, help="test volumes from the 20 labeled (default 0)")
    parser.add_argument("--no-test-images", dest="test_images", action="store_false",
                        help="do not add the unlabeled <mod>_test volumes to imagesUnlabeled")
    parser.add_argument("--map", nargs="+", default=None, metavar="CODE=LABEL",
                        help="map extra raw label codes, e.g. 421=2")
    add_protocol_args(parser, None, "number of labeled training volumes",
                      id_help="nnU-Net dataset id (default 29 for CT, 30 for MR)")
    args = parser.parse_args(argv)
    run_entry(parser.prog, lambda: convert_mmwhs(
        args.source, args.modality, num_val=args.val, num_test=args.test, include_test_images=args.test_images,
        extra_codes=_parse_map(args.map), dataset_id=args.dataset_id, output_root=args.output_root,
        overwrite=args.overwrite, **labeled_from_args(args)))


if __name__ == "__main__":
    mmwhs_entry()
