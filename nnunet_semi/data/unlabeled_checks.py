"""Checks of the unlabeled images against the dataset's other images: leakage, label maps, orientation.

Each image file is summarised once, when it is read (an unlabeled case when it is preprocessed, an ``imagesTr`` /
``imagesTs`` file when it is new or changed), and the summary is kept in the cache manifest; the checks then compare
summaries, so a trainer's start costs a ``stat`` per file and no image read. A summary holds:

* ``voxel_sha256``: SHA-256 of the array the plans' reader returns (float32, with its shape): identical voxel data
  gives the same digest whatever the file's compression, gzip header or NIfTI header fields;
* ``label_like``: every voxel is an integer label value of dataset.json and at least one is a foreground label (what
  a label map renamed into ``imagesUnlabeled`` looks like; intensity images practically never do);
* ``orientation``: for each voxel axis the world axis it points closest to and its sign, e.g. ``+x,+y,+z``, from
  the reader's direction matrix (SimpleITKIO) or affine (NibabelIO; after reorientation for NibabelIOWithReorient),
  or None when the reader gives neither. Comparing these codes, not the matrices, tolerates oblique acquisitions
  (directions within 45 degrees of each other, which nnU-Net's rotation augmentation covers) and catches flipped
  or permuted axes, which nnU-Net does not undo: it trains on the voxel array as stored.
"""
import hashlib
import os
import re
from copy import deepcopy
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets

from nnunet_semi.utils.environment import ALLOW_DUPLICATES_ENV

LABELED_FOLDER, TEST_FOLDER = 'imagesTr', 'imagesTs'
_CHANNEL_SUFFIX = re.compile(r'(?P<case>.+)_(?P<channel>\d{4})')
_MAX_LISTED = 10  # warnings of one kind printed in full; the rest are counted


def split_channel_name(name: str, file_ending: str) -> Optional[Tuple[str, int]]:
    """``('case', 1)`` for ``case_0001<file_ending>``; None for other names."""
    if not name.endswith(file_ending):
        return None
    match = _CHANNEL_SUFFIX.fullmatch(name[:-len(file_ending)])
    return (match['case'], int(match['channel'])) if match else None


def label_values(dataset_json: dict) -> List[int]:
    """The integer values of dataset.json's 'labels' (regions' member labels included)."""
    values = set()
    for value in dataset_json['labels'].values():
        values.update(int(v) for v in (value if isinstance(value, (list, tuple)) else [value]))
    return sorted(values)


def image_summary(channels: np.ndarray, properties: dict, labels: Sequence[int]) -> dict:
    """Summary of one case (or one file: a single channel) as read by an nnU-Net reader: ``channels`` is its
    (c, ...) array, ``properties`` its properties."""
    return {'voxel_sha256': [voxel_digest(c) for c in channels],
            'label_like': [looks_like_label_map(c, labels) for c in channels],
            'orientation': orientation_code(properties)}


def voxel_digest(array: np.ndarray) -> str:
    array = np.ascontiguousarray(array, dtype=np.float32)
    digest = hashlib.sha256(repr(array.shape).encode())
    digest.update(memoryview(array).cast('B'))
    return digest.hexdigest()


def looks_like_label_map(array: np.ndarray, labels: Sequence[int]) -> bool:
    """All voxels are values of ``labels`` and one is a foreground (nonzero) label. Cheap for intensity images: the
    range test fails first."""
    if array.size == 0 or not labels:
        return False
    low, high = array.min(), array.max()
    if low < min(labels) or high > max(labels) or high <= 0:
        return False
    if not np.array_equal(array, np.rint(array)):
        return False
    return set(np.unique(array).astype(int).tolist()) <= set(labels)


def orientation_code(properties: dict) -> Optional[str]:
    """``'+x,-y,+z'``: per voxel axis (ITK order for SimpleITKIO, the file's for NibabelIO), the world axis its
    direction is closest to and the sign; None without a direction matrix."""
    if 'sitk_stuff' in properties:
        direction = np.asarray(properties['sitk_stuff']['direction'], dtype=float)
        n = int(round(np.sqrt(direction.size)))
        matrix = direction.reshape(n, n)
    elif 'nibabel_stuff' in properties:
        stuff = properties['nibabel_stuff']
        matrix = np.asarray(stuff.get('reoriented_affine', stuff.get('original_affine')), dtype=float)[:3, :3]
    else:
        return None
    axes = 'xyz'
    code = []
    for column in matrix.T:  # a column is one voxel axis' direction in world coordinates
        world = int(np.argmax(np.abs(column)))
        code.append(('+' if column[world] >= 0 else '-') + axes[world])
    return ','.join(code)


def reference_files(raw_dataset_folder: str, dataset_json: dict) -> Dict[str, Tuple[str, str, int]]:
    """``{path: (folder, case, channel)}`` of the images in imagesTr (or dataset.json's 'dataset' entries) and
    imagesTs; missing folders give nothing."""
    found = {}
    if 'dataset' in dataset_json:
        for case, entry in get_filenames_of_train_images_and_targets(raw_dataset_folder,
                                                                    deepcopy(dataset_json)).items():
            found.update({path: (LABELED_FOLDER, case, c) for c, path in enumerate(entry['images'])})
    else:
        found.update(_channel_files(os.path.join(raw_dataset_folder, LABELED_FOLDER), dataset_json['file_ending'],
                                    LABELED_FOLDER))
    found.update(_channel_files(os.path.join(raw_dataset_folder, TEST_FOLDER), dataset_json['file_ending'],
                                TEST_FOLDER))
    return found


def _channel_files(folder: str, file_ending: str, kind: str) -> Dict[str, Tuple[str, str, int]]:
    if not os.path.isdir(folder):
        return {}
    found = {}
    for name in sorted(os.listdir(folder)):
        parsed = split_channel_name(name, file_ending)
        if parsed and not name.startswith('.'):
            found[os.path.join(folder, name)] = (kind, *parsed)
    return found


def case_digest(channel_digests: Iterable[str]) -> str:
    return hashlib.sha256('\n'.join(channel_digests).encode()).hexdigest()


@dataclass
class ReferenceIndex:
    """The summaries of the imagesTr / imagesTs files (``{path: entry}``, entries as in the manifest) by case."""
    references: Dict[str, dict]
    by_digest: Dict[str, List[str]] = field(init=False, default_factory=dict)  # case digest -> its files
    by_case: Dict[str, List[str]] = field(init=False, default_factory=dict)  # case id -> its files
    orientations: Dict[str, str] = field(init=False, default_factory=dict)  # imagesTr code -> an example file
    label_like_channels: set = field(init=False, default_factory=set)  # imagesTr channels holding label maps

    def __post_init__(self):
        cases: Dict[Tuple[str, str], Dict[int, Tuple[str, dict]]] = {}
        for path, entry in self.references.items():
            cases.setdefault((entry['folder'], entry['case']), {})[entry['channel']] = (path, entry)
            if entry['folder'] == LABELED_FOLDER and 'error' not in entry:
                if entry['orientation'] is not None:
                    self.orientations.setdefault(entry['orientation'], path)
                if entry['label_like'][0]:
                    self.label_like_channels.add(entry['channel'])
        for (_, case), channels in sorted(cases.items()):
            files = [channels[c][0] for c in sorted(channels)]
            self.by_case.setdefault(case, files)
            if all('error' not in entry for _, entry in channels.values()):
                digest = case_digest(channels[c][1]['voxel_sha256'][0] for c in sorted(channels))
                self.by_digest.setdefault(digest, files)

    def duplicate_of(self, summary: dict) -> Optional[List[str]]:
        """The files of the imagesTr / imagesTs case with the same voxel data as this unlabeled case, if any."""
        return self.by_digest.get(case_digest(summary['voxel_sha256']))

    def warnings(self, cases: Dict[str, List[str]], summaries: Dict[str, dict], reader_name: str) -> List[str]:
        """Warnings (one line each) for unlabeled cases ``{case: files}`` with their summaries: a case id of
        imagesTr / imagesTs, a label map, an orientation no labeled image has. Long lists are cut."""
        same_id, label_maps, oriented = [], [], []
        for case, files in cases.items():
            summary = summaries[case]
            if case in self.by_case and self.duplicate_of(summary) is None:  # duplicates have their own message
                same_id.append(f"{files[0]} has the case id '{case}' of {self.by_case[case][0]} (other voxel data). "
                               f"If it is another image of the same subject (e.g. another time point), training on "
                               f"it leaks that subject into validation / testing: remove it; otherwise rename it to "
                               f"an unused case id.")
            for channel, (path, label_like) in enumerate(zip(files, summary['label_like'])):
                if label_like and channel not in self.label_like_channels:
                    label_maps.append(f"{path} looks like a label map, not an image: all its voxels are label "
                                      f"values of dataset.json. It would be trained on as an image: move it out of "
                                      f"imagesUnlabeled (a label belongs in labelsTr, with its image in imagesTr) "
                                      f"or replace it with the image itself.")
            code = summary['orientation']
            if code is not None and self.orientations and code not in self.orientations:
                labeled = ' / '.join(f"{c} (e.g. {p})" for c, p in sorted(self.orientations.items()))
                oriented.append(f"{files[0]} is oriented {code} (the world axis each voxel axis points along), "
                                f"unlike every labeled image, {labeled}: {reader_name} does not reorient, so "
                                f"nnU-Net would train on its anatomy flipped or with permuted axes. Fix: reorient "
                                f"it like the labeled images (e.g. SimpleITK.DICOMOrient) or remove it.")
        unreadable = [f"cannot read {path} ({entry['error']}), so unlabeled images are not compared with it: "
                      f"replace it with a valid image" for path, entry in sorted(self.references.items())
                      if 'error' in entry]
        return [f"Warning: {line}" for group in (unreadable, same_id, label_maps, oriented) for line in _cut(group)]


def _cut(lines: List[str]) -> List[str]:
    if len(lines) <= _MAX_LISTED:
        return lines
    return lines[:_MAX_LISTED] + [f"... and {len(lines) - _MAX_LISTED} more like the above."]


def duplicate_message(unlabeled_files: Sequence[str], reference_files_: Sequence[str], allowed: bool) -> str:
    same = f"{', '.join(unlabeled_files)} holds the same voxel data as {', '.join(reference_files_)}"
    if allowed:
        return f"Warning: {same}; used as unlabeled data anyway ({ALLOW_DUPLICATES_ENV}=1 or --allow-duplicates)."
    return (f"{same}: a labeled (imagesTr, validated on in some fold) or test (imagesTs) case would also be trained "
            f"on as unlabeled data, which inflates its validation / test score (leakage). Fix: remove it from "
            f"imagesUnlabeled, or, if intended, set {ALLOW_DUPLICATES_ENV}=1 (nnunet_semi_preprocess_unlabeled "
            f"--allow-duplicates).")
