"""Unlabeled images for semi-supervised training: discovery, validation and cached preprocessing.

Unlabeled images live in the raw dataset folder next to ``imagesTr``, in ``imagesUnlabeled/``, with the same naming
and channels (``<case>_<XXXX><file_ending>``) and no labels. They are preprocessed with nnU-Net's own preprocessor
for the chosen plans and configuration into ``<nnUNet_preprocessed>/<Dataset>/<data_identifier>_unlabeled/`` in
nnU-Net's blosc2 format, so nnU-Net's dataset and data loader classes read them unchanged. That folder sits beside
(not inside) ``<data_identifier>/``, which nnU-Net deletes whenever it preprocesses again.

Checks beyond readability (:mod:`nnunet_semi.data.unlabeled_checks`): an unlabeled case with the voxel data of an
``imagesTr`` / ``imagesTs`` case is refused (leakage; ``nnUNet_semi_allow_duplicates=1`` accepts it), and a case id of
those folders, a label map and an orientation no labeled image has are warned about, at every call (a trainer's
start included), from summaries kept in the manifest: only new or changed files are read.

Interruptions (a scheduler's SIGTERM, SIGKILL, a crash): every finished case is appended to a journal beside the
manifest as it lands, and merged into the manifest at the next start, so only unfinished cases are redone. Cases are
written into ``.tmp_<host>_<pid>_<token>/``; a next start removes such folders whose process is gone (same host), or,
of another host (shared file system) or without that name, whose newest file is older than a day: a folder of a
concurrently running process is never removed.
"""
import argparse
import hashlib
import json
import multiprocessing
import os
import re
import secrets
import shutil
import socket
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from importlib.metadata import version
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from batchgenerators.utilities.file_and_folder_operations import isfile, join, load_json
from nnunetv2.paths import nnUNet_preprocessed, nnUNet_raw
from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2, comp_blosc2_params
from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager
from tqdm import tqdm

from nnunet_semi.data.unlabeled_checks import (ReferenceIndex, duplicate_message, image_summary, label_values,
                                               reference_files, split_channel_name)
from nnunet_semi.utils.environment import ALLOW_DUPLICATES_ENV
from nnunet_semi.utils.gzip_check import gzip_problem
from nnunet_semi.utils.nifti_check import nifti_has_non_finite

UNLABELED_IMAGES_FOLDER = 'imagesUnlabeled'
UNLABELED_FOLDER_SUFFIX = '_unlabeled'
MANIFEST_FILE = 'unlabeled_manifest.json'
JOURNAL_FILE = 'unlabeled_manifest.journal'  # one JSON line per case finished since the manifest was written
#: bump when the manifest's case entries change: older caches are then rebuilt once
_MANIFEST_FORMAT = 2
_TMP_PREFIX = '.tmp_'
_TMP_NAME = re.compile(r'\.tmp_(?P<host>.*)_(?P<pid>\d+)_[0-9a-f]{8}')
#: a temporary folder that cannot be tied to a live process on this host is removed once this old
STALE_TMP_AGE_S = 24 * 3600
# Files of one preprocessed case, in the order they are moved into place: nnU-Net lists a case by its '.b2nd' file,
# so that comes last; the '.pkl' marks a (possibly incomplete) case for clean-up, so it is removed last.
_CASE_FILE_SUFFIXES = ('_seg.b2nd', '.pkl', '.b2nd')
# Configuration keys that do not change the preprocessed values (network, batch, blosc2 chunking): plans variants
# that differ only there and share a data_identifier (e.g. a smaller network) also share the cache.
_KEYS_NOT_AFFECTING_PREPROCESSING = ('architecture', 'batch_size', 'batch_dice', 'patch_size',
                                     'median_image_size_in_voxels', 'next_stage', 'previous_stage')
_PLANS_KEYS_AFFECTING_PREPROCESSING = ('transpose_forward', 'foreground_intensity_properties_per_channel',
                                       'image_reader_writer')


class UnlabeledDataError(ValueError):
    """Invalid unlabeled data or setup; the message names the offending file or folder and how to fix it."""


def unlabeled_preprocessed_folder(preprocessed_dataset_folder_base: str, data_identifier: str) -> str:
    """Folder of the preprocessed unlabeled cases of one configuration: a sibling of ``<data_identifier>/``."""
    return join(preprocessed_dataset_folder_base, data_identifier + UNLABELED_FOLDER_SUFFIX)


def find_unlabeled_cases(raw_dataset_folder: str, dataset_json: dict) -> Dict[str, List[str]]:
    """Map each case in ``imagesUnlabeled/`` to its channel files (full paths, in channel order).

    Raises UnlabeledDataError for a missing or empty folder, a wrong file ending, a missing or out-of-range channel
    suffix and a case without all channels. Hidden files are ignored.
    """
    folder = join(raw_dataset_folder, UNLABELED_IMAGES_FOLDER)
    file_ending = dataset_json['file_ending']
    num_channels = _num_channels(dataset_json)
    naming_hint = _naming_hint(file_ending, num_channels)
    if not os.path.isdir(folder):
        raise UnlabeledDataError(f"No folder {folder}: create it and put the unlabeled images there ({naming_hint}).")
    names = sorted(n for n in os.listdir(folder) if not n.startswith('.'))
    if not names:
        raise UnlabeledDataError(f"{folder} is empty: add unlabeled images ({naming_hint}).")

    channels_per_case: Dict[str, Dict[int, str]] = {}
    for name in names:
        path = join(folder, name)
        if not name.endswith(file_ending):
            raise UnlabeledDataError(f"{path} does not end with the dataset's file ending '{file_ending}': convert "
                                     f"it or move it out of {folder} ({naming_hint}).")
        parsed = split_channel_name(name, file_ending)
        if parsed is None:
            raise UnlabeledDataError(f"{path} has no channel suffix _XXXX: rename it ({naming_hint}).")
        case, channel = parsed
        if channel >= num_channels:
            raise UnlabeledDataError(f"{path} is channel {channel}, but dataset.json has only {num_channels} "
                                     f"channel(s): rename or remove it ({naming_hint}).")
        channels_per_case.setdefault(case, {})[channel] = path

    for case, channels in channels_per_case.items():
        missing = [f"{case}_{c:04d}{file_ending}" for c in range(num_channels) if c not in channels]
        if missing:
            raise UnlabeledDataError(f"Case '{case}' in {folder} lacks {', '.join(missing)}: add the missing "
                                     f"channel file(s) or remove the case ({naming_hint}).")
    return {case: [channels[c] for c in range(num_channels)] for case, channels in sorted(channels_per_case.items())}


def ensure_unlabeled_preprocessed(raw_dataset_folder: str, preprocessed_dataset_folder_base: str,
                                  plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                                  dataset_json: dict, num_processes: int = 2, show_progress: bool = True,
                                  allow_duplicates: Optional[bool] = None,
                                  log: Callable[[str], None] = print) -> str:
    """Bring the preprocessed unlabeled cases up to date with ``imagesUnlabeled/`` and these plans; return the folder.

    Only new or changed source cases are preprocessed; cases whose source is gone are removed, and everything is
    rebuilt when the plans changed in a way that changes preprocessing. Each case appears atomically (written to a
    temporary folder, then moved into place) and is journaled as it lands, so after a failure or a kill the folder
    holds only complete cases and a re-run redoes only the unfinished ones.

    A case with the voxel data of an imagesTr / imagesTs case raises UnlabeledDataError unless ``allow_duplicates``
    (default: ``nnUNet_semi_allow_duplicates=1`` in the environment); warnings (a case id of those folders, a label
    map, an unlabeled orientation) go to ``log``, one line each, at every call.
    """
    if allow_duplicates is None:
        allow_duplicates = os.environ.get(ALLOW_DUPLICATES_ENV) == '1'
    cases = find_unlabeled_cases(raw_dataset_folder, dataset_json)
    output_folder = unlabeled_preprocessed_folder(preprocessed_dataset_folder_base,
                                                  configuration_manager.data_identifier)
    os.makedirs(output_folder, exist_ok=True)
    _remove_stale_temporary_folders(output_folder)
    fingerprint = _preprocessing_fingerprint(plans_manager, configuration_manager)
    manifest = _open_cache(output_folder, fingerprint)
    sources = {case: _file_stats(files) for case, files in cases.items()}
    for case in _stored_cases(output_folder) - sources.keys():
        _remove_case(output_folder, case)
    manifest['cases'] = {case: entry for case, entry in manifest['cases'].items() if case in sources}
    todo = [case for case in cases
            if manifest['cases'].get(case, {}).get('files') != sources[case] or not _is_complete(output_folder, case)]
    labels = label_values(dataset_json)

    def refuse_duplicate(case: str, summary: dict) -> None:
        duplicate = references.duplicate_of(summary)
        if duplicate is not None:
            if not allow_duplicates:
                raise UnlabeledDataError(duplicate_message(cases[case], duplicate, allowed=False))
            log(duplicate_message(cases[case], duplicate, allowed=True))

    tmp_folder = _make_temporary_folder(output_folder)
    progress = None

    def move_into_place(result: Tuple[str, dict]) -> None:
        case, summary = result
        refuse_duplicate(case, summary)
        entry = {'files': sources[case], **summary}
        if isfile(join(output_folder, case + '.b2nd')):  # an older version: incomplete from here until replaced
            os.remove(join(output_folder, case + '.b2nd'))
        _append_journal(output_folder, fingerprint, case, entry)
        for suffix in _CASE_FILE_SUFFIXES:
            os.replace(join(tmp_folder, case + suffix), join(output_folder, case + suffix))
        manifest['cases'][case] = entry
        progress.update()

    try:
        references = _update_references(raw_dataset_folder, dataset_json, manifest, plans_manager, labels,
                                        num_processes, output_folder)
        for case in cases.keys() - set(todo):
            refuse_duplicate(case, manifest['cases'][case])
        progress = tqdm(total=len(todo), desc='Preprocessing unlabeled cases', disable=not show_progress)
        _run_jobs(_preprocess_case, [(case, cases[case], tmp_folder, plans_manager, configuration_manager,
                                      dataset_json, labels) for case in todo], num_processes, move_into_place)
    finally:
        if progress is not None:
            progress.close()
        shutil.rmtree(tmp_folder, ignore_errors=True)
        _write_manifest(output_folder, manifest)
    for line in references.warnings(cases, manifest['cases'], plans_manager.image_reader_writer_class.__name__):
        log(line)
    return output_folder


def preprocess_unlabeled(dataset_name_or_id: Union[int, str], configuration: str,
                         plans_identifier: str = 'nnUNetPlans', num_processes: int = 2,
                         show_progress: bool = True, allow_duplicates: Optional[bool] = None) -> str:
    """Preprocess the dataset's unlabeled images for one configuration of an existing nnU-Net plans file."""
    try:
        raw_base, preprocessed_base = nnUNet_raw.require(), nnUNet_preprocessed.require()
        dataset_name = maybe_convert_to_dataset_name(dataset_name_or_id)
    except (RuntimeError, ValueError) as e:
        raise UnlabeledDataError(str(e)) from e
    preprocessed_dataset_folder = join(preprocessed_base, dataset_name)
    plans_file = join(preprocessed_dataset_folder, plans_identifier + '.json')
    if not isfile(plans_file):
        raise UnlabeledDataError(f"No plans file {plans_file}: run nnUNetv2_plan_and_preprocess -d "
                                 f"{dataset_name_or_id} first (plans identifier '{plans_identifier}').")
    plans_manager = PlansManager(plans_file)
    if configuration not in plans_manager.available_configurations:
        raise UnlabeledDataError(f"Configuration '{configuration}' is not in {plans_file}: use one of "
                                 f"{plans_manager.available_configurations}.")
    return ensure_unlabeled_preprocessed(join(raw_base, dataset_name), preprocessed_dataset_folder, plans_manager,
                                         plans_manager.get_configuration(configuration),
                                         load_json(join(preprocessed_dataset_folder, 'dataset.json')),
                                         num_processes, show_progress, allow_duplicates)


def preprocess_unlabeled_entry():
    """Console script ``nnunet_semi_preprocess_unlabeled``."""
    parser = argparse.ArgumentParser(
        epilog="example: nnunet_semi_preprocess_unlabeled -d 27 -c 2d -np 8",
        description=f"Preprocess nnUNet_raw/<dataset>/{UNLABELED_IMAGES_FOLDER} with existing nnU-Net plans (run "
                    f"nnUNetv2_plan_and_preprocess first). Only new or changed images are processed.")
    parser.add_argument('-d', required=True, help='dataset name or id')
    parser.add_argument('-c', nargs='+', action='extend', required=True,
                        help='configuration(s), e.g. 2d 3d_fullres (may be repeated)')
    parser.add_argument('-p', default='nnUNetPlans', help='plans identifier (default: nnUNetPlans)')
    parser.add_argument('-np', type=int, default=2, help='number of worker processes (default: 2)')
    parser.add_argument('--allow-duplicates', action='store_true',
                        help=f'accept unlabeled images whose voxel data equal an imagesTr / imagesTs image (refused '
                             f'by default: leakage); trainers read {ALLOW_DUPLICATES_ENV}=1 instead')
    args = parser.parse_args()
    try:
        for configuration in dict.fromkeys(args.c):
            folder = preprocess_unlabeled(args.d, configuration, args.p, args.np,
                                          allow_duplicates=True if args.allow_duplicates else None)
            print(f"{folder}: {len(nnUNetDatasetBlosc2.get_identifiers(folder))} unlabeled cases")
    except UnlabeledDataError as e:
        sys.exit(f"Error: {e}")


def _naming_hint(file_ending: str, num_channels: int) -> str:
    names = ' ... '.join(dict.fromkeys(f'<case>_{c:04d}{file_ending}' for c in (0, num_channels - 1)))
    return f"name them like imagesTr: {names}, one file per channel in dataset.json 'channel_names'"


def _num_channels(dataset_json: dict) -> int:
    """Number of input channels; like nnU-Net, accept the legacy 'modality' key."""
    return len(dataset_json['channel_names'] if 'channel_names' in dataset_json else dataset_json['modality'])


def _preprocessing_fingerprint(plans_manager: PlansManager, configuration_manager: ConfigurationManager) -> str:
    """Hash of the plans entries (and the nnU-Net version) that determine the preprocessed arrays."""
    relevant = {
        'configuration': {k: v for k, v in configuration_manager.configuration.items()
                          if k not in _KEYS_NOT_AFFECTING_PREPROCESSING},
        'plans': {k: plans_manager.plans.get(k) for k in _PLANS_KEYS_AFFECTING_PREPROCESSING},
        'nnunetv2': version('nnunetv2'),
        'manifest_format': _MANIFEST_FORMAT,
    }
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()


def _file_stats(files: Sequence[str]) -> List[list]:
    """(name, size, mtime_ns) per source file, as JSON-compatible lists: a change means the case is redone."""
    return [[os.path.basename(f), stat.st_size, stat.st_mtime_ns] for f, stat in zip(files, map(os.stat, files))]


def _open_cache(output_folder: str, fingerprint: str) -> dict:
    """Load the manifest and merge the journal of an interrupted run into it; if the manifest is missing,
    unreadable or made with other plans, clear the folder and start anew. The manifest is written at once when it
    is new (so that a first run's journal has a manifest to merge into) or took journal entries."""
    try:
        manifest = load_json(join(output_folder, MANIFEST_FILE))
        if manifest['fingerprint'] == fingerprint:
            journal = _read_journal(output_folder, fingerprint)
            manifest['cases'].update(journal)
            manifest.setdefault('references', {})
            if journal:
                _write_manifest(output_folder, manifest)
            return manifest
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    for case in _stored_cases(output_folder):
        _remove_case(output_folder, case)
    manifest = {'fingerprint': fingerprint, 'cases': {}, 'references': {}}
    _write_manifest(output_folder, manifest)  # also drops a journal made with other plans
    return manifest


def _append_journal(output_folder: str, fingerprint: str, case: str, entry: dict) -> None:
    """Record a case as finished with one append (a single write: a kill leaves the line whole or absent)."""
    line = json.dumps({'fingerprint': fingerprint, 'case': case, 'entry': entry}) + '\n'
    fd = os.open(join(output_folder, JOURNAL_FILE), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def _read_journal(output_folder: str, fingerprint: str) -> Dict[str, dict]:
    """The journal's entries made with these plans; unreadable lines are skipped (their cases are redone)."""
    entries = {}
    try:
        with open(join(output_folder, JOURNAL_FILE)) as f:
            lines = f.readlines()
    except OSError:
        return entries
    for line in lines:
        try:
            record = json.loads(line)
            if record['fingerprint'] == fingerprint:
                entries[record['case']] = record['entry']
        except (ValueError, KeyError, TypeError):
            continue
    return entries


def _write_manifest(output_folder: str, manifest: dict) -> None:
    """Write the manifest, then drop the journal it now contains."""
    _write_json_atomically(join(output_folder, MANIFEST_FILE), manifest)
    if os.path.isfile(join(output_folder, JOURNAL_FILE)):
        os.remove(join(output_folder, JOURNAL_FILE))


def _make_temporary_folder(output_folder: str) -> str:
    """``.tmp_<host>_<pid>_<token>``: the name tells a later start whether its process is still running."""
    path = join(output_folder, f'{_TMP_PREFIX}{socket.gethostname()}_{os.getpid()}_{secrets.token_hex(4)}')
    os.mkdir(path)
    return path


def _remove_stale_temporary_folders(output_folder: str) -> None:
    """Remove the temporary folders of killed runs: on this host those whose process is gone; others (another
    host's on a shared file system, or an older version's, named without a pid) once nothing in them changed for
    STALE_TMP_AGE_S."""
    for name in os.listdir(output_folder):
        path = join(output_folder, name)
        if not name.startswith(_TMP_PREFIX) or not os.path.isdir(path):
            continue
        match = _TMP_NAME.fullmatch(name)
        if match and match['host'] == socket.gethostname():
            stale = not _process_alive(int(match['pid']))
        else:
            stale = time.time() - _newest_mtime(path) > STALE_TMP_AGE_S
        if stale:
            shutil.rmtree(path, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _newest_mtime(folder: str) -> float:
    times = [os.stat(folder).st_mtime]
    for name in os.listdir(folder):
        try:
            times.append(os.stat(join(folder, name)).st_mtime)
        except OSError:
            pass
    return max(times)


def _update_references(raw_dataset_folder: str, dataset_json: dict, manifest: dict, plans_manager: PlansManager,
                       labels: List[int], num_processes: int, output_folder: str) -> ReferenceIndex:
    """Summaries of the imagesTr / imagesTs files for the leakage and orientation checks, kept in the manifest
    by path relative to the raw folder: only new or changed files (size, mtime) are read."""
    stored = manifest['references']
    current, paths, todo = {}, {}, []
    for path, (folder, case, channel) in reference_files(raw_dataset_folder, dataset_json).items():
        key = os.path.relpath(path, raw_dataset_folder)
        stat = os.stat(path)
        entry = {'stat': [stat.st_size, stat.st_mtime_ns], 'folder': folder, 'case': case, 'channel': channel}
        paths[key] = path
        previous = stored.get(key)
        if previous is not None and previous.get('stat') == entry['stat'] and 'voxel_sha256' in previous:
            current[key] = {**previous, **entry}
        else:
            current[key] = entry
            todo.append(key)

    def on_done(result: Tuple[str, dict]) -> None:
        key, summary = result
        current[key].update(summary)

    _run_jobs(_summarize_reference, [(key, paths[key], plans_manager, labels) for key in todo], num_processes,
              on_done)
    manifest['references'] = current
    if todo:
        _write_manifest(output_folder, manifest)
    return ReferenceIndex({paths[key]: entry for key, entry in current.items()})


def _summarize_reference(key: str, path: str, plans_manager: PlansManager, labels: List[int]) -> Tuple[str, dict]:
    """Read one imagesTr / imagesTs file with the plans' reader; a file it cannot read is left out of the checks
    (nnU-Net's own preprocessing reports imagesTr files; imagesTs is not needed for training)."""
    reader = plans_manager.image_reader_writer_class()
    try:
        data, properties = reader.read_images([path])
    except Exception as e:
        return key, {'error': f'{type(e).__name__}: {e}'.strip()[:200], 'voxel_sha256': None}
    return key, image_summary(data[:1], properties, labels)


def _stored_cases(output_folder: str) -> set:
    """Cases with files in the folder, found by their '.pkl' (moved in before and removed after the '.b2nd')."""
    return {n[:-len('.pkl')] for n in os.listdir(output_folder) if n.endswith('.pkl')} | \
        set(nnUNetDatasetBlosc2.get_identifiers(output_folder))


def _is_complete(output_folder: str, case: str) -> bool:
    return all(isfile(join(output_folder, case + suffix)) for suffix in _CASE_FILE_SUFFIXES)


def _remove_case(output_folder: str, case: str) -> None:
    for suffix in reversed(_CASE_FILE_SUFFIXES):
        path = join(output_folder, case + suffix)
        if isfile(path):
            os.remove(path)


def _write_json_atomically(path: str, content: dict) -> None:
    tmp_path = f'{path}.{os.getpid()}.tmp'
    with open(tmp_path, 'w') as f:
        json.dump(content, f, indent=1)
    os.replace(tmp_path, path)


def _run_jobs(function: Callable, jobs: List[tuple], num_processes: int, on_done: Callable) -> None:
    """Run ``function(*job)`` for each job and call on_done(result) in this process as each one finishes.

    In-process for num_processes <= 1 (or a single job), else in a 'spawn' pool. Exceptions from workers re-raise
    here unchanged (UnlabeledDataError included); pending jobs are then cancelled and running ones awaited, so no
    worker writes anymore once this returns or raises.
    """
    if num_processes <= 1 or len(jobs) <= 1:
        for job in jobs:
            on_done(function(*job))
        return
    with ProcessPoolExecutor(min(num_processes, len(jobs)), mp_context=multiprocessing.get_context('spawn')) as pool:
        futures = [pool.submit(function, *job) for job in jobs]
        try:
            for future in as_completed(futures):
                on_done(future.result())
        except BrokenProcessPool as e:
            raise RuntimeError('A worker preprocessing unlabeled cases died, most often for lack of memory: run '
                               'again with fewer processes.') from e
        finally:
            pool.shutdown(cancel_futures=True)


def _preprocess_case(case: str, image_files: List[str], tmp_folder: str, plans_manager: PlansManager,
                     configuration_manager: ConfigurationManager, dataset_json: dict,
                     labels: List[int]) -> Tuple[str, dict]:
    """Preprocess one case as nnU-Net does for labeled cases and save it into tmp_folder; return the case name and
    the summary of its images for the checks (:func:`~nnunet_semi.data.unlabeled_checks.image_summary`).

    Equivalent to ``preprocessor.run_case(image_files, None, ...)`` with validation between reading and
    preprocessing, so that bad images fail with a clear message before the (possibly huge) resampling. Without a
    label, nnU-Net's seg is the nonzero mask (0 inside, -1 outside), which its masking transform uses.
    """
    data, properties = _read_and_validate(image_files, plans_manager)
    summary = image_summary(data, properties, labels)
    preprocessor = configuration_manager.preprocessor_class(verbose=False)
    data, seg, properties = preprocessor.run_case_npy(data, None, properties, plans_manager, configuration_manager,
                                                      dataset_json)
    properties['class_locations'] = {}  # no labels to oversample; nnUNetDataLoader requires the key
    _save_case(data, seg, properties, join(tmp_folder, case), configuration_manager.patch_size)
    return case, summary


def _save_case(data: np.ndarray, seg: np.ndarray, properties: dict, output_filename_truncated: str,
               patch_size: Sequence[int]) -> None:
    """Save like ``DefaultPreprocessor.run_case_save``: same dtypes and blosc2 blocks/chunks for the patch size."""
    data = data.astype(np.float32, copy=False)
    seg = seg.astype(np.int16, copy=False)
    blocks, chunks = comp_blosc2_params(data.shape, tuple(patch_size), data.itemsize)
    blocks_seg, chunks_seg = comp_blosc2_params(seg.shape, tuple(patch_size), seg.itemsize)
    nnUNetDatasetBlosc2.save_case(data, seg, properties, output_filename_truncated, chunks=chunks, blocks=blocks,
                                  chunks_seg=chunks_seg, blocks_seg=blocks_seg)


def _read_and_validate(image_files: List[str], plans_manager: PlansManager) -> Tuple[np.ndarray, dict]:
    """Read a case with the plans' reader; reject truncated gzip files, unreadable files, extra channels, non-finite
    values and images whose dimensionality differs from the labeled training images."""
    for image_file in image_files:  # ITK reads a truncated .nii.gz as zeros past the cut, without an error
        problem = gzip_problem(image_file)
        if problem:
            raise UnlabeledDataError(f"{image_file} is a truncated or corrupt gzip file ({problem}); its image would "
                                     f"be read with zeros in place of the lost voxels. Fix: copy it again from its "
                                     f"source (or replace it with a valid image) or remove the case.")
        if nifti_has_non_finite(image_file):  # ITK reads them as 0: check the stored voxels
            raise _non_finite_error(image_file)
    reader = plans_manager.image_reader_writer_class()
    try:
        data, properties = reader.read_images(image_files)
    except Exception as e:
        raise _read_error(reader, image_files, e) from e
    if data.shape[0] != len(image_files):
        raise _channel_count_error(reader, image_files)
    for image_file, channel in zip(image_files, data):
        if not np.isfinite(channel).all():
            raise _non_finite_error(image_file)
    image_dims = _num_spatial_dims(data.shape[1:])
    training_dims = _num_spatial_dims(plans_manager.original_median_shape_after_transp)
    if image_dims != training_dims:
        raise UnlabeledDataError(f"{image_files[0]} is a {image_dims}D image but the labeled training images are "
                                 f"{training_dims}D: convert it to {training_dims}D or remove the case.")
    return data, properties


def _non_finite_error(image_file: str) -> UnlabeledDataError:
    return UnlabeledDataError(f"{image_file} contains NaN or infinite values: replace them with finite values (e.g. "
                              f"the background intensity) or remove the case.")


def _num_spatial_dims(shape: Sequence[int]) -> int:
    """nnU-Net readers return 2D images as 3D arrays with a single slice, so count the non-singleton axes."""
    return sum(s > 1 for s in shape)


def _read_error(reader, image_files: List[str], error: Exception) -> UnlabeledDataError:
    """Name the file that cannot be read; if each reads alone, the channels disagree in geometry."""
    for image_file in image_files:
        try:
            reader.read_images([image_file])
        except Exception as e:
            reason = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__  # SimpleITK: last line
            return UnlabeledDataError(f"Cannot read {image_file} ({reason}): replace it with a valid image or remove "
                                      f"the case.")
    return UnlabeledDataError(f"The channel files {image_files} cannot be read together ({type(error).__name__}): "
                              f"they must share shape and spacing; resample them onto one grid or remove the case.")


def _channel_count_error(reader, image_files: List[str]) -> UnlabeledDataError:
    """Name the file that holds more than one image (e.g. a 4D or vector image)."""
    num_images = {f: reader.read_images([f])[0].shape[0] for f in image_files}
    image_file = next(f for f, n in num_images.items() if n != 1)
    return UnlabeledDataError(f"{image_file} holds {num_images[image_file]} images (a 4D or multi-component image), "
                              f"but each channel file must hold one image: split it into separate files (one per "
                              f"channel, or one case per image) or remove it.")
