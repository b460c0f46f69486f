"""Unlabeled images for semi-supervised training: discovery, validation and cached preprocessing.

Unlabeled images live in the raw dataset folder next to ``imagesTr``, in ``imagesUnlabeled/``, with the same naming
and channels (``<case>_<XXXX><file_ending>``) and no labels. They are preprocessed with nnU-Net's own preprocessor
for the chosen plans and configuration into ``<nnUNet_preprocessed>/<Dataset>/<data_identifier>_unlabeled/`` in
nnU-Net's blosc2 format, so nnU-Net's dataset and data loader classes read them unchanged. That folder sits beside
(not inside) ``<data_identifier>/``, which nnU-Net deletes whenever it preprocesses again.
"""
import argparse
import hashlib
import json
import multiprocessing
import os
import re
import shutil
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from importlib.metadata import version
from typing import Callable, Dict, List, Sequence, Tuple, Union

import numpy as np
from batchgenerators.utilities.file_and_folder_operations import isfile, join, load_json
from nnunetv2.paths import nnUNet_preprocessed, nnUNet_raw
from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2, comp_blosc2_params
from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager
from tqdm import tqdm

from nnunet_semi.utils.gzip_check import gzip_problem

UNLABELED_IMAGES_FOLDER = 'imagesUnlabeled'
UNLABELED_FOLDER_SUFFIX = '_unlabeled'
MANIFEST_FILE = 'unlabeled_manifest.json'

_CHANNEL_SUFFIX = re.compile(r'(?P<case>.+)_(?P<channel>\d{4})')
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
        match = _CHANNEL_SUFFIX.fullmatch(name[:-len(file_ending)])
        if match is None:
            raise UnlabeledDataError(f"{path} has no channel suffix _XXXX: rename it ({naming_hint}).")
        channel = int(match['channel'])
        if channel >= num_channels:
            raise UnlabeledDataError(f"{path} is channel {channel}, but dataset.json has only {num_channels} "
                                     f"channel(s): rename or remove it ({naming_hint}).")
        channels_per_case.setdefault(match['case'], {})[channel] = path

    for case, channels in channels_per_case.items():
        missing = [f"{case}_{c:04d}{file_ending}" for c in range(num_channels) if c not in channels]
        if missing:
            raise UnlabeledDataError(f"Case '{case}' in {folder} lacks {', '.join(missing)}: add the missing "
                                     f"channel file(s) or remove the case ({naming_hint}).")
    return {case: [channels[c] for c in range(num_channels)] for case, channels in sorted(channels_per_case.items())}


def ensure_unlabeled_preprocessed(raw_dataset_folder: str, preprocessed_dataset_folder_base: str,
                                  plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                                  dataset_json: dict, num_processes: int = 2, show_progress: bool = True) -> str:
    """Bring the preprocessed unlabeled cases up to date with ``imagesUnlabeled/`` and these plans; return the folder.

    Only new or changed source cases are preprocessed; cases whose source is gone are removed, and everything is
    rebuilt when the plans changed in a way that changes preprocessing. Each case appears atomically (written to a
    temporary folder, then moved into place), so after a failure the folder holds only complete cases.
    """
    cases = find_unlabeled_cases(raw_dataset_folder, dataset_json)
    output_folder = unlabeled_preprocessed_folder(preprocessed_dataset_folder_base,
                                                  configuration_manager.data_identifier)
    os.makedirs(output_folder, exist_ok=True)
    manifest = _open_cache(output_folder, _preprocessing_fingerprint(plans_manager, configuration_manager))
    sources = {case: _file_stats(files) for case, files in cases.items()}
    for case in _stored_cases(output_folder) - sources.keys():
        _remove_case(output_folder, case)
    manifest['cases'] = {case: stats for case, stats in manifest['cases'].items() if case in sources}
    todo = [case for case in cases
            if manifest['cases'].get(case) != sources[case] or not _is_complete(output_folder, case)]

    tmp_folder = tempfile.mkdtemp(prefix='.tmp_', dir=output_folder)
    progress = tqdm(total=len(todo), desc='Preprocessing unlabeled cases', disable=not show_progress)

    def move_into_place(case: str) -> None:
        for suffix in _CASE_FILE_SUFFIXES:
            os.replace(join(tmp_folder, case + suffix), join(output_folder, case + suffix))
        manifest['cases'][case] = sources[case]
        progress.update()

    try:
        _run_jobs([(case, cases[case], tmp_folder, plans_manager, configuration_manager, dataset_json)
                   for case in todo], num_processes, move_into_place)
    finally:
        progress.close()
        shutil.rmtree(tmp_folder, ignore_errors=True)
        _write_json_atomically(join(output_folder, MANIFEST_FILE), manifest)
    return output_folder


def preprocess_unlabeled(dataset_name_or_id: Union[int, str], configuration: str,
                         plans_identifier: str = 'nnUNetPlans', num_processes: int = 2,
                         show_progress: bool = True) -> str:
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
                                         num_processes, show_progress)


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
    args = parser.parse_args()
    try:
        for configuration in dict.fromkeys(args.c):
            folder = preprocess_unlabeled(args.d, configuration, args.p, args.np)
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
    }
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()


def _file_stats(files: Sequence[str]) -> List[list]:
    """(name, size, mtime_ns) per source file, as JSON-compatible lists: a change means the case is redone."""
    return [[os.path.basename(f), stat.st_size, stat.st_mtime_ns] for f, stat in zip(files, map(os.stat, files))]


def _open_cache(output_folder: str, fingerprint: str) -> dict:
    """Load the manifest; if it is missing, unreadable or made with other plans, clear the folder and start anew."""
    try:
        manifest = load_json(join(output_folder, MANIFEST_FILE))
        if manifest['fingerprint'] == fingerprint:
            return manifest
    except (OSError, ValueError, KeyError, TypeError):
        pass
    for case in _stored_cases(output_folder):
        _remove_case(output_folder, case)
    return {'fingerprint': fingerprint, 'cases': {}}


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


def _run_jobs(jobs: List[tuple], num_processes: int, on_done: Callable[[str], None]) -> None:
    """Run _preprocess_case on each job and call on_done(case) in this process as each one finishes.

    In-process for num_processes <= 1 (or a single job), else in a 'spawn' pool. Exceptions from workers re-raise
    here unchanged (UnlabeledDataError included); pending jobs are then cancelled and running ones awaited, so no
    worker writes anymore once this returns or raises.
    """
    if num_processes <= 1 or len(jobs) <= 1:
        for job in jobs:
            on_done(_preprocess_case(*job))
        return
    with ProcessPoolExecutor(min(num_processes, len(jobs)), mp_context=multiprocessing.get_context('spawn')) as pool:
        futures = [pool.submit(_preprocess_case, *job) for job in jobs]
        try:
            for future in as_completed(futures):
                on_done(future.result())
        except BrokenProcessPool as e:
            raise RuntimeError('A worker preprocessing unlabeled cases died, most often for lack of memory: run '
                               'again with fewer processes.') from e
        finally:
            pool.shutdown(cancel_futures=True)


def _preprocess_case(case: str, image_files: List[str], tmp_folder: str, plans_manager: PlansManager,
                     configuration_manager: ConfigurationManager, dataset_json: dict) -> str:
    """Preprocess one case as nnU-Net does for labeled cases and save it into tmp_folder; return the case name.

    Equivalent to ``preprocessor.run_case(image_files, None, ...)`` with validation between reading and
    preprocessing, so that bad images fail with a clear message before the (possibly huge) resampling. Without a
    label, nnU-Net's seg is the nonzero mask (0 inside, -1 outside), which its masking transform uses.
    """
    data, properties = _read_and_validate(image_files, plans_manager)
    preprocessor = configuration_manager.preprocessor_class(verbose=False)
    data, seg, properties = preprocessor.run_case_npy(data, None, properties, plans_manager, configuration_manager,
                                                      dataset_json)
    properties['class_locations'] = {}  # no labels to oversample; nnUNetDataLoader requires the key
    _save_case(data, seg, properties, join(tmp_folder, case), configuration_manager.patch_size)
    return case


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
    reader = plans_manager.image_reader_writer_class()
    try:
        data, properties = reader.read_images(image_files)
    except Exception as e:
        raise _read_error(reader, image_files, e) from e
    if data.shape[0] != len(image_files):
        raise _channel_count_error(reader, image_files)
    for image_file, channel in zip(image_files, data):
        if not np.isfinite(channel).all():
            raise UnlabeledDataError(f"{image_file} contains NaN or infinite values: replace them with finite values "
                                     f"(e.g. the background intensity) or remove the case.")
    image_dims = _num_spatial_dims(data.shape[1:])
    training_dims = _num_spatial_dims(plans_manager.original_median_shape_after_transp)
    if image_dims != training_dims:
        raise UnlabeledDataError(f"{image_files[0]} is a {image_dims}D image but the labeled training images are "
                                 f"{training_dims}D: convert it to {training_dims}D or remove the case.")
    return data, properties


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
