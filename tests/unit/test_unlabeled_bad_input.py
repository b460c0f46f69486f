"""Unlabeled images that read fine but are wrong, and interrupted preprocessing (issue 32, items 8-12).

A synthetic nnU-Net dataset (5 labeled + 1 test case of 16x24x20 voxels) is planned once per module by
``nnUNetv2_plan_and_preprocess --no_pp`` (3d_fullres; the tests need the plans, not nnU-Net's preprocessed cases);
each test copies its raw folders into its own ``tmp_path``, adds unlabeled images and preprocesses them with those
plans. No real data is needed.
"""
import gzip
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager

from nnunet_semi.data import unlabeled
from nnunet_semi.data.unlabeled import (JOURNAL_FILE, MANIFEST_FILE, STALE_TMP_AGE_S, UnlabeledDataError,
                                        ensure_unlabeled_preprocessed)
from tests.conftest import make_env, nnunet_bin

DATASET_ID = 931
DATASET = f'Dataset{DATASET_ID}_Synth'
CONFIGURATION = '3d_fullres'
SHAPE = (16, 24, 20)  # z, y, x
LABELED = [f'lab{i}' for i in range(5)]
TEST = 'test0'
DATASET_JSON = {'channel_names': {'0': 'MRI'}, 'labels': {'background': 0, 'organ': 1, 'core': 2},
                'numTraining': len(LABELED), 'file_ending': '.nii.gz'}
ALLOW = 'nnUNet_semi_allow_duplicates'


def synthetic_case(seed: int):
    """An 'organ' (label 1) with a 'core' (label 2) in textured background; intensities ~100-200, never integers."""
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*[np.arange(n, dtype=float) for n in SHAPE], indexing='ij')
    center = rng.uniform(0.4, 0.6, 3) * SHAPE
    radius = np.sqrt(sum(((g - c) / r) ** 2 for g, c, r in zip(grid, center, (4.0, 6.0, 5.0))))
    label = (radius < 1).astype(np.uint8)
    label[radius < 0.5] = 2
    image = 100.0 + 40.0 * label + rng.normal(0, 8, SHAPE) + 0.5
    return image.astype(np.float32), label


def write(array: np.ndarray, path: Path, direction=None) -> Path:
    image = sitk.GetImageFromArray(array)
    if direction is not None:
        image.SetDirection(direction)
    sitk.WriteImage(image, str(path), True)
    return path


@dataclass
class Synthetic:
    raw: Path  # nnUNet_raw/<DATASET>: imagesTr, labelsTr, imagesTs, dataset.json (no imagesUnlabeled)
    preprocessed: Path  # nnUNet_preprocessed/<DATASET>
    plans_manager: PlansManager
    configuration_manager: ConfigurationManager


@pytest.fixture(scope='module')
def synthetic(tmp_path_factory) -> Synthetic:
    root = tmp_path_factory.mktemp('synthetic')
    env = make_env(root)
    raw = root / 'raw' / DATASET
    for sub in ('imagesTr', 'labelsTr', 'imagesTs'):
        (raw / sub).mkdir(parents=True)
    for seed, case in enumerate(LABELED):
        image, label = synthetic_case(seed)
        write(image, raw / 'imagesTr' / f'{case}_0000.nii.gz')
        write(label, raw / 'labelsTr' / f'{case}.nii.gz')
    write(synthetic_case(99)[0], raw / 'imagesTs' / f'{TEST}_0000.nii.gz')
    (raw / 'dataset.json').write_text(json.dumps(DATASET_JSON))
    result = subprocess.run([nnunet_bin('nnUNetv2_plan_and_preprocess'), '-d', str(DATASET_ID), '-c', CONFIGURATION,
                             '-npfp', '1', '--no_pp'], env=env, capture_output=True, text=True)
    assert result.returncode == 0, f'nnUNetv2_plan_and_preprocess failed:\n{result.stdout}\n{result.stderr}'
    preprocessed = root / 'preprocessed' / DATASET
    plans_manager = PlansManager(str(preprocessed / 'nnUNetPlans.json'))
    return Synthetic(raw, preprocessed, plans_manager, plans_manager.get_configuration(CONFIGURATION))


def dataset_copy(synthetic: Synthetic, root: Path, unlabeled: dict) -> Path:
    """A raw dataset folder under ``root`` with the fixture's imagesTr / labelsTr / imagesTs and imagesUnlabeled
    holding ``{file name: array or source path}``; also ``root/preprocessed/<DATASET>`` with the plans (what the
    command needs)."""
    raw = root / 'raw' / DATASET
    shutil.copytree(synthetic.raw, raw)
    (raw / 'imagesUnlabeled').mkdir()
    for name, content in unlabeled.items():
        target = raw / 'imagesUnlabeled' / name
        shutil.copy(content, target) if isinstance(content, Path) else write(content, target)
    (root / 'preprocessed' / DATASET).mkdir(parents=True)
    for name in ('nnUNetPlans.json', 'dataset.json'):
        shutil.copy(synthetic.preprocessed / name, root / 'preprocessed' / DATASET / name)
    return raw


def out_folder(root: Path) -> Path:
    return root / 'preprocessed' / DATASET / f'nnUNetPlans_{CONFIGURATION}_unlabeled'


def ensure(synthetic: Synthetic, raw: Path, num_processes: int = 1, **kwargs) -> list:
    """Preprocess ``raw``'s unlabeled images into ``<raw>/../../preprocessed``; return the lines logged."""
    lines = []
    ensure_unlabeled_preprocessed(str(raw), str(raw.parents[1] / 'preprocessed' / DATASET), synthetic.plans_manager,
                                  synthetic.configuration_manager, DATASET_JSON, num_processes=num_processes,
                                  show_progress=False, log=lines.append, **kwargs)
    return lines


def stored(folder: Path) -> set:
    """The complete cases in the folder; asserts nothing else is there (no temporary folder, journal or part)."""
    names = {p.name for p in folder.iterdir()}
    cases = {n[:-len('.pkl')] for n in names if n.endswith('.pkl')}
    assert names == {MANIFEST_FILE} | {c + s for c in cases for s in ('.b2nd', '_seg.b2nd', '.pkl')}, sorted(names)
    assert set(json.loads((folder / MANIFEST_FILE).read_text())['cases']) == cases
    return cases


def expect_error(synthetic, raw: Path, *fragments: str, **kwargs) -> str:
    with pytest.raises(UnlabeledDataError) as info:
        ensure(synthetic, raw, **kwargs)
    for fragment in fragments:
        assert fragment in str(info.value)
    return str(info.value)


class Reads:
    """Counts the images the module reads: unlabeled cases preprocessed and imagesTr / imagesTs files summarised."""

    def __init__(self, monkeypatch):
        self.cases, self.references = [], []
        for name, calls in (('_preprocess_case', self.cases), ('_summarize_reference', self.references)):
            original = getattr(unlabeled, name)

            def spy(key, *args, original=original, calls=calls):
                calls.append(key)
                return original(key, *args)
            monkeypatch.setattr(unlabeled, name, spy)

    def take(self) -> tuple:
        taken = sorted(self.cases), sorted(self.references)
        self.cases.clear()
        self.references.clear()
        return taken


# ----------------------------------------------------------------------------------------------- 8. NaN / Inf

@pytest.mark.parametrize('value', [np.nan, np.inf, -np.inf])
def test_non_finite_voxel_in_nifti_is_refused(synthetic, tmp_path, value):
    image = synthetic_case(10)[0]
    image[5, 6, 7] = value
    raw = dataset_copy(synthetic, tmp_path, {'good_0000.nii.gz': synthetic_case(11)[0], 'bad_0000.nii.gz': image})
    bad = raw / 'imagesUnlabeled' / 'bad_0000.nii.gz'
    # the premise: the plans' reader (SimpleITKIO) returns the voxel as 0, so a check of its array passes
    read = synthetic.plans_manager.image_reader_writer_class().read_images([str(bad)])[0]
    assert np.isfinite(read).all() and read[0, 5, 6, 7] == 0
    expect_error(synthetic, raw, str(bad), 'contains NaN or infinite values', 'replace them with finite values')
    assert stored(out_folder(tmp_path)) <= {'good'}


# ------------------------------------------------------------------------------------------------- 9. leakage

def regzip(source: Path, target: Path) -> Path:
    """The same file content compressed again with another gzip header (name, mtime) and level."""
    with gzip.open(source, 'rb') as f:
        content = f.read()
    with open(target, 'wb') as raw_file, gzip.GzipFile('other_name.nii', 'wb', compresslevel=1, fileobj=raw_file,
                                                        mtime=12345) as f:
        f.write(content)
    return target


@pytest.mark.parametrize('folder, case', [('imagesTr', LABELED[2]), ('imagesTs', TEST)])
def test_copy_of_a_labeled_or_test_image_is_refused(synthetic, tmp_path, folder, case, monkeypatch):
    monkeypatch.delenv(ALLOW, raising=False)
    raw = dataset_copy(synthetic, tmp_path, {'good_0000.nii.gz': synthetic_case(11)[0]})
    original = raw / folder / f'{case}_0000.nii.gz'
    copy = regzip(original, raw / 'imagesUnlabeled' / 'x_copy_0000.nii.gz')  # processed after 'good'

    assert copy.read_bytes() != original.read_bytes()
    expect_error(synthetic, raw, f'{copy} holds the same voxel data as {original}', 'leakage',
                 f'Fix: remove it from imagesUnlabeled, or, if intended, set {ALLOW}=1')
    assert stored(out_folder(tmp_path)) == {'good'}  # the copy was not written, the other case was

    # the override: accepted, with a warning at every call (the second one reads nothing)
    reads = Reads(monkeypatch)
    monkeypatch.setenv(ALLOW, '1')
    for expected_reads in ((['x_copy'], []), ([], [])):
        lines = ensure(synthetic, raw)
        assert reads.take() == expected_reads
        assert lines == [f'Warning: {copy} holds the same voxel data as {original}; used as unlabeled data anyway '
                         f'({ALLOW}=1 or --allow-duplicates).']
    assert stored(out_folder(tmp_path)) == {'good', 'x_copy'}
    # without the override again, the cached copy is refused too
    monkeypatch.delenv(ALLOW)
    expect_error(synthetic, raw, f'{copy} holds the same voxel data as {original}')


def test_labeled_image_added_later_that_equals_a_cached_unlabeled_case(synthetic, tmp_path, monkeypatch):
    monkeypatch.delenv(ALLOW, raising=False)
    image = synthetic_case(12)[0]
    raw = dataset_copy(synthetic, tmp_path, {'pool_0000.nii.gz': image})
    assert ensure(synthetic, raw) == []
    reads = Reads(monkeypatch)
    added = write(image, raw / 'imagesTs' / 'new_0000.nii.gz')  # e.g. the test set is assembled after training
    expect_error(synthetic, raw, f"{raw / 'imagesUnlabeled' / 'pool_0000.nii.gz'} holds the same voxel data as "
                                 f"{added}")
    assert reads.take() == ([], [str(Path('imagesTs') / 'new_0000.nii.gz')])  # only the new file was read


def test_same_case_id_other_content_warns_and_near_copy_is_accepted(synthetic, tmp_path, monkeypatch):
    monkeypatch.delenv(ALLOW, raising=False)
    near_copy = sitk.GetArrayFromImage(sitk.ReadImage(str(synthetic.raw / 'imagesTr' / f'{LABELED[1]}_0000.nii.gz')))
    near_copy[0, 0, 0] += 1  # one voxel differs: not the same image
    raw = dataset_copy(synthetic, tmp_path, {f'{LABELED[0]}_0000.nii.gz': synthetic_case(13)[0],
                                             'near_0000.nii.gz': near_copy})
    lines = ensure(synthetic, raw)
    same_id = raw / 'imagesUnlabeled' / f'{LABELED[0]}_0000.nii.gz'
    assert lines == [f"Warning: {same_id} has the case id '{LABELED[0]}' of "
                     f"{raw / 'imagesTr' / f'{LABELED[0]}_0000.nii.gz'} (other voxel data). If it is another image of "
                     f"the same subject (e.g. another time point), training on it leaks that subject into validation "
                     f"/ testing: remove it; otherwise rename it to an unused case id."]
    assert stored(out_folder(tmp_path)) == {LABELED[0], 'near'}


def test_cli_refuses_a_copy_and_accepts_it_with_the_flag(synthetic, tmp_path, monkeypatch):
    monkeypatch.delenv(ALLOW, raising=False)
    raw = dataset_copy(synthetic, tmp_path, {})
    copy = shutil.copy(raw / 'imagesTr' / f'{LABELED[0]}_0000.nii.gz', raw / 'imagesUnlabeled' / 'c_0000.nii.gz')
    env = {**make_env(tmp_path), 'nnUNet_semi_threads': '1'}
    env.pop(ALLOW, None)
    command = [nnunet_bin('nnunet_semi_preprocess_unlabeled'), '-d', str(DATASET_ID), '-c', CONFIGURATION, '-np', '1']
    refused = subprocess.run(command, env=env, capture_output=True, text=True)
    assert refused.returncode == 1 and 'Traceback' not in refused.stderr, refused.stderr
    assert refused.stderr.splitlines()[-1].startswith(f"Error: {copy} holds the same voxel data as "
                                                      f"{raw / 'imagesTr' / f'{LABELED[0]}_0000.nii.gz'}")
    assert 'nnunet_semi_preprocess_unlabeled --allow-duplicates' in refused.stderr
    accepted = subprocess.run(command + ['--allow-duplicates'], env=env, capture_output=True, text=True)
    assert accepted.returncode == 0, accepted.stderr
    assert f'Warning: {copy} holds the same voxel data as' in accepted.stdout
    assert f'{out_folder(tmp_path)}: 1 unlabeled cases' in accepted.stdout


def test_trainer_start_reads_no_image_and_a_changed_reference_once(synthetic, tmp_path, monkeypatch):
    """The happy path's cost: summaries are cached in the manifest, so an unchanged dataset is only stat'ed."""
    raw = dataset_copy(synthetic, tmp_path, {'a_0000.nii.gz': synthetic_case(14)[0],
                                             'b_0000.nii.gz': synthetic_case(15)[0]})
    reads = Reads(monkeypatch)
    everything = sorted([str(Path('imagesTr') / f'{c}_0000.nii.gz') for c in LABELED] +
                        [str(Path('imagesTs') / f'{TEST}_0000.nii.gz')])
    assert ensure(synthetic, raw) == [] and reads.take() == (['a', 'b'], everything)
    assert ensure(synthetic, raw) == [] and reads.take() == ([], [])
    os.utime(raw / 'imagesTr' / f'{LABELED[3]}_0000.nii.gz', ns=(1, 1))
    assert ensure(synthetic, raw) == [] and reads.take() == ([], [str(Path('imagesTr') / f'{LABELED[3]}_0000.nii.gz')])


# ----------------------------------------------------------------------------------------------- 10. label map

def test_label_map_in_images_unlabeled_warns(synthetic, tmp_path):
    raw = dataset_copy(synthetic, tmp_path, {'fine_0000.nii.gz': synthetic_case(16)[0],
                                             'oops_0000.nii.gz': synthetic.raw / 'labelsTr' / f'{LABELED[4]}.nii.gz'})
    oops = raw / 'imagesUnlabeled' / 'oops_0000.nii.gz'
    expected = [f'Warning: {oops} looks like a label map, not an image: all its voxels are label values of '
                f'dataset.json. It would be trained on as an image: move it out of imagesUnlabeled (a label belongs in '
                f'labelsTr, with its image in imagesTr) or replace it with the image itself.']
    assert ensure(synthetic, raw) == expected
    assert ensure(synthetic, raw) == expected  # at every start, from the manifest
    assert stored(out_folder(tmp_path)) == {'fine', 'oops'}


# ------------------------------------------------------------------------------------------------ 11. direction

def test_direction_unlike_the_labeled_images_warns(synthetic, tmp_path):
    angle = np.deg2rad(20)  # an oblique acquisition: same axes within 45 degrees, no warning
    oblique = (np.cos(angle), -np.sin(angle), 0, np.sin(angle), np.cos(angle), 0, 0, 0, 1)
    raw = dataset_copy(synthetic, tmp_path, {'plain_0000.nii.gz': synthetic_case(17)[0]})
    write(synthetic_case(18)[0], raw / 'imagesUnlabeled' / 'oblique_0000.nii.gz', oblique)
    flipped = write(synthetic_case(19)[0], raw / 'imagesUnlabeled' / 'flipped_0000.nii.gz', (-1, 0, 0, 0, 1, 0, 0, 0, 1))
    swapped = write(synthetic_case(20)[0], raw / 'imagesUnlabeled' / 'swapped_0000.nii.gz', (0, 1, 0, 1, 0, 0, 0, 0, 1))
    labeled = f"+x,+y,+z (e.g. {raw / 'imagesTr' / f'{LABELED[0]}_0000.nii.gz'})"
    assert ensure(synthetic, raw) == [
        f'Warning: {path} is oriented {code} (the world axis each voxel axis points along), unlike every labeled '
        f'image, {labeled}: SimpleITKIO does not reorient, so nnU-Net would train on its anatomy flipped or with '
        f'permuted axes. Fix: reorient it like the labeled images (e.g. SimpleITK.DICOMOrient) or remove it.'
        for path, code in ((flipped, '-x,+y,+z'), (swapped, '+y,+x,+z'))]
    assert stored(out_folder(tmp_path)) == {'plain', 'oblique', 'flipped', 'swapped'}


# ---------------------------------------------------------------------------------- 12. interruption (SIGTERM)

def test_sigterm_then_rerun_redoes_only_unfinished_cases(synthetic, tmp_path, monkeypatch):
    cases = [f'u{i:02d}' for i in range(40)]
    raw = dataset_copy(synthetic, tmp_path, {f'{c}_0000.nii.gz': synthetic_case(100 + i)[0]
                                             for i, c in enumerate(cases)})
    out = out_folder(tmp_path)
    env = {**make_env(tmp_path), 'nnUNet_semi_threads': '1', 'OMP_NUM_THREADS': '1'}
    proc = subprocess.Popen([nnunet_bin('nnunet_semi_preprocess_unlabeled'), '-d', str(DATASET_ID), '-c',
                             CONFIGURATION, '-np', '1'], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    deadline = time.time() + 300
    while not (out.is_dir() and len([p for p in out.glob('*.b2nd') if not p.name.endswith('_seg.b2nd')]) >= 3):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[0][-3000:]
        time.sleep(0.002)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == -signal.SIGTERM

    finished = {c for c in cases if all((out / f'{c}{s}').is_file() for s in ('.b2nd', '_seg.b2nd', '.pkl'))}
    assert 3 <= len(finished) < len(cases)
    assert [p.name for p in out.iterdir() if p.name.startswith('.tmp_')], 'the killed run left no temporary folder'
    assert (out / JOURNAL_FILE).is_file()
    assert json.loads((out / MANIFEST_FILE).read_text())['cases'] == {}  # the manifest was not updated: the journal

    reads = Reads(monkeypatch)
    ensure(synthetic, raw)
    redone = reads.take()[0]
    assert redone == sorted(set(cases) - finished)
    assert stored(out) == set(cases)  # no .tmp_* folder, no journal, every case recorded


def test_stale_temporary_folders_are_removed_but_not_those_of_a_running_process(synthetic, tmp_path):
    raw = dataset_copy(synthetic, tmp_path, {'a_0000.nii.gz': synthetic_case(21)[0]})
    out = out_folder(tmp_path)
    out.mkdir(parents=True)
    host = socket.gethostname()
    running = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])
    ended = subprocess.Popen([sys.executable, '-c', 'pass'])
    ended.wait()
    old = time.time() - STALE_TMP_AGE_S - 60
    folders = {  # name: (age, removed?)
        f'.tmp_{host}_{running.pid}_0123abcd': (old, False),  # this host, process running (even if old)
        f'.tmp_{host}_{ended.pid}_0123abcd': (None, True),  # this host, process gone
        '.tmp_other-host_4242_0123abcd': (None, False),  # another host (shared file system), recent
        '.tmp_other-host_4243_0123abcd': (old, True),  # another host, untouched for a day
        '.tmp_k3j_h5g6': (None, False),  # an older version's name (no pid), recent
        '.tmp_q7w_e8r9': (old, True),  # an older version's name, untouched for a day
    }
    for name, (age, _) in folders.items():
        (out / name).mkdir()
        (out / name / 'a.pkl').write_bytes(b'partial')
        if age is not None:
            for path in (out / name / 'a.pkl', out / name):
                os.utime(path, (age, age))
    try:
        ensure(synthetic, raw)
    finally:
        running.kill()
        running.wait()
    remaining = {p.name for p in out.iterdir() if p.name.startswith('.tmp_')}
    assert remaining == {name for name, (_, removed) in folders.items() if not removed}
    for name in remaining:
        shutil.rmtree(out / name)
    assert stored(out) == {'a'}
