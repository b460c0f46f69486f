"""Unlabeled-image discovery, validation and cached preprocessing, checked against nnU-Net's own preprocessing.

A tiny nnU-Net raw dataset (6 labeled hippocampus cases from MSD Task04) is planned and preprocessed once per module
with ``nnUNetv2_plan_and_preprocess``; the tests then preprocess unlabeled images with those plans. Without the real
data (outside CI) the same case names hold volumes of the project's demo generator with Hippocampus's geometry
(1 mm voxels, a zero corner of background as MSD's cropped MR images have: see :func:`generated_sources`).
"""
import json
import os
import shutil
import subprocess
import sys
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager

from nnunet_semi.data import unlabeled
from nnunet_semi.data.unlabeled import (MANIFEST_FILE, UnlabeledDataError, ensure_unlabeled_preprocessed,
                                        find_unlabeled_cases, preprocess_unlabeled)
from nnunet_semi.apps.demo_data import synthesize_case
from tests.conftest import (GENERATED_SHAPE, GENERATED_SPACING, HIPPOCAMPUS, REPO as REPO_ROOT, data_source,
                            nnunet_bin, require)

DATASET = 'Dataset901_Hippo'
CONFIGURATION = '3d_fullres'
LABELED = ['hippocampus_004', 'hippocampus_006', 'hippocampus_007', 'hippocampus_008', 'hippocampus_014',
           'hippocampus_015']
UNLABELED = ['hippocampus_002', 'hippocampus_005', 'hippocampus_009', 'hippocampus_010']
DUPLICATE = 'copy_of_004'  # LABELED[0] again, as an unlabeled image
DATASET_JSON = {'channel_names': {'0': 'MRI'}, 'labels': {'background': 0, 'anterior': 1, 'posterior': 2},
                'numTraining': len(LABELED), 'file_ending': '.nii.gz'}


@dataclass
class Planned:
    preprocessed: Path  # nnUNet_preprocessed/Dataset901_Hippo
    env: dict
    plans_manager: PlansManager
    configuration_manager: ConfigurationManager


#: the folder source() reads when the real data is missing outside CI (set by generated_sources)
GENERATED = {}
ZERO_CORNER = 6  # voxels: a background prism along z, zero in every generated image


def source(folder: str, case: str) -> Path:
    """MSD Task04's file (real data) or, without it outside CI, its generated stand-in; on CI missing data fails."""
    root = GENERATED.get('root') or require(HIPPOCAMPUS)
    return root / folder / f'{case}.nii.gz'


@pytest.fixture(scope='module', autouse=True)
def generated_sources(tmp_path_factory):
    """Without the real data (outside CI): imagesTr/labelsTr (LABELED) and imagesTs (UNLABELED) from the demo
    generator, 1 mm voxels (nnU-Net plans 1 mm: no resampling, as for Hippocampus), sizes differing between cases
    (as Hippocampus's do), background set to 0 in a corner prism so that nnU-Net's nonzero mask leaves voxels out
    (its seg is -1 there). Nothing with the real data or on CI (where source() fails)."""
    if data_source(HIPPOCAMPUS) != 'generated':
        yield
        return
    root = tmp_path_factory.mktemp('generated_hippocampus')
    for folder in ('imagesTr', 'labelsTr', 'imagesTs'):
        (root / folder).mkdir()
    for index, case in enumerate(LABELED + UNLABELED):
        shape = (GENERATED_SHAPE[0] + index % 5 - 2, GENERATED_SHAPE[1] - index % 3, GENERATED_SHAPE[2])
        image, label = synthesize_case(0, index, shape, GENERATED_SPACING)
        corner = np.zeros(label.shape, bool)
        corner[:, :ZERO_CORNER, :ZERO_CORNER] = True
        image[corner & (label == 0)] = 0
        assert (image == 0).sum() >= shape[0] * ZERO_CORNER  # most of the prism is background
        pairs = [('imagesTr', image), ('labelsTr', label)] if case in LABELED else [('imagesTs', image)]
        for folder, array in pairs:
            written = sitk.GetImageFromArray(array)
            written.SetSpacing(GENERATED_SPACING[::-1])
            sitk.WriteImage(written, str(root / folder / f'{case}.nii.gz'), useCompression=True)
    GENERATED['root'] = root
    yield
    GENERATED.clear()


@pytest.fixture(scope='module')
def planned(tmp_path_factory) -> Planned:
    """nnU-Net raw dataset with imagesUnlabeled, planned and preprocessed by nnU-Net itself (2d and 3d_fullres)."""
    base = tmp_path_factory.mktemp('nnunet')
    raw = base / 'raw' / DATASET
    for sub in ('imagesTr', 'labelsTr', 'imagesUnlabeled'):
        (raw / sub).mkdir(parents=True)
    for case in LABELED:
        shutil.copy(source('imagesTr', case), raw / 'imagesTr' / f'{case}_0000.nii.gz')
        shutil.copy(source('labelsTr', case), raw / 'labelsTr' / f'{case}.nii.gz')
    for case in UNLABELED:
        shutil.copy(source('imagesTs', case), raw / 'imagesUnlabeled' / f'{case}_0000.nii.gz')
    shutil.copy(source('imagesTr', LABELED[0]), raw / 'imagesUnlabeled' / f'{DUPLICATE}_0000.nii.gz')
    (raw / 'dataset.json').write_text(json.dumps(DATASET_JSON))

    env = {**os.environ, 'nnUNet_raw': str(base / 'raw'), 'nnUNet_preprocessed': str(base / 'preprocessed'),
           'nnUNet_results': str(base / 'results'),
           # DUPLICATE is a copy of a labeled case on purpose (it checks our preprocessing against nnU-Net's):
           # the leakage check would refuse it
           'nnUNet_semi_allow_duplicates': '1',
           'PYTHONPATH': os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get('PYTHONPATH')]))}
    command = [nnunet_bin('nnUNetv2_plan_and_preprocess'), '-d', '901', '-c', '2d',
               CONFIGURATION, '-np', '1', '-npfp', '1']
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f'nnUNetv2_plan_and_preprocess failed:\n{result.stdout}\n{result.stderr}'

    preprocessed = base / 'preprocessed' / DATASET
    plans_manager = PlansManager(str(preprocessed / 'nnUNetPlans.json'))
    with pytest.MonkeyPatch.context() as mp:
        for key in ('nnUNet_raw', 'nnUNet_preprocessed', 'nnUNet_results', 'nnUNet_semi_allow_duplicates'):
            mp.setenv(key, env[key])
        yield Planned(preprocessed, env, plans_manager, plans_manager.get_configuration(CONFIGURATION))


@pytest.fixture(scope='module')
def unlabeled_folder(planned) -> Path:
    """The fixture dataset's unlabeled images preprocessed through the public entry point (spawn pool of 2)."""
    return Path(preprocess_unlabeled(901, CONFIGURATION, num_processes=2, show_progress=False))


def make_raw(root: Path, images: dict) -> Path:
    """Raw dataset folder whose imagesUnlabeled holds {file name: source path}."""
    (root / 'imagesUnlabeled').mkdir(parents=True)
    for name, path in images.items():
        shutil.copy(path, root / 'imagesUnlabeled' / name)
    return root


def ensure(planned: Planned, raw: Path, output_base: Path, plans_manager: PlansManager = None) -> Path:
    plans_manager = plans_manager or planned.plans_manager
    return Path(ensure_unlabeled_preprocessed(str(raw), str(output_base), plans_manager,
                                              plans_manager.get_configuration(CONFIGURATION), DATASET_JSON,
                                              num_processes=1, show_progress=False))


def assert_only_complete_cases(folder: Path) -> set:
    """No temporary or partial files: every stored case is complete and recorded in the manifest."""
    names = {p.name for p in folder.iterdir()}
    assert not [p for p in folder.iterdir() if p.is_dir()], f'leftover folders in {folder}: {sorted(names)}'
    cases = {n[:-len('.pkl')] for n in names if n.endswith('.pkl')}
    assert names == {MANIFEST_FILE} | {c + s for c in cases for s in ('.b2nd', '_seg.b2nd', '.pkl')}
    assert set(json.loads((folder / MANIFEST_FILE).read_text())['cases']) == cases
    return cases


# ---------------------------------------------------------------------------------------------- nnU-Net equivalence

def test_unlabeled_copy_of_labeled_case_matches_nnunet_preprocessing(planned, unlabeled_folder):
    assert unlabeled_folder == planned.preprocessed / f'{planned.configuration_manager.data_identifier}_unlabeled'
    nnunet = nnUNetDatasetBlosc2(str(planned.preprocessed / planned.configuration_manager.data_identifier))
    ours = nnUNetDatasetBlosc2(str(unlabeled_folder))
    assert ours.identifiers == sorted(UNLABELED + [DUPLICATE])

    data_ref, seg_ref, _, props_ref = nnunet.load_case(LABELED[0])
    data, seg, _, props = ours.load_case(DUPLICATE)
    assert data.dtype == np.float32 and seg.dtype == np.int16
    assert np.array_equal(data[:], data_ref[:])
    for key in ('spacing', 'shape_before_cropping', 'bbox_used_for_cropping',
                'shape_after_cropping_and_before_resampling', 'sitk_stuff'):
        assert props[key] == props_ref[key], key
    assert props['class_locations'] == {}
    # Without a label nnU-Net's seg is the nonzero mask: -1 outside, 0 inside. With a label, crop_to_nonzero writes
    # -1 only where the label is background, so the relation below holds because no labeled voxel lies outside the
    # mask and this configuration does not resample (1 mm data, 1 mm target spacing).
    assert props['shape_after_cropping_and_before_resampling'] == tuple(data.shape[1:])
    seg_ref = seg_ref[:]
    assert set(np.unique(seg_ref)) == {-1, 0, 1, 2} and set(np.unique(seg[:])) == {-1, 0}
    assert np.array_equal(seg[:], np.where(seg_ref == -1, -1, 0))


def test_nnunet_data_loader_samples_unlabeled_cases(planned, unlabeled_folder):
    patch_size = planned.configuration_manager.patch_size
    loader = nnUNetDataLoader(nnUNetDatasetBlosc2(str(unlabeled_folder)), 2, patch_size, patch_size,
                              planned.plans_manager.get_label_manager(DATASET_JSON),
                              oversample_foreground_percent=0.5)
    batch = next(loader)
    assert batch['data'].shape == (2, 1, *patch_size) and batch['target'].shape == (2, 1, *patch_size)
    assert set(batch['keys']) <= set(UNLABELED + [DUPLICATE])


# --------------------------------------------------------------------------------------------------------- caching

def test_rerun_processes_only_new_or_changed_cases(planned, tmp_path, monkeypatch):
    processed = []
    original = unlabeled._preprocess_case

    def spy(case, *args):
        processed.append(case)
        return original(case, *args)
    monkeypatch.setattr(unlabeled, '_preprocess_case', spy)

    def run(plans_manager=None) -> list:
        processed.clear()
        ensure(planned, raw, tmp_path / 'preprocessed', plans_manager)
        return sorted(processed)

    def mtimes() -> dict:
        return {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name != MANIFEST_FILE}

    a, b, c = UNLABELED[:3]
    raw = make_raw(tmp_path / 'raw', {f'{x}_0000.nii.gz': source('imagesTs', x) for x in (a, b)})
    images = raw / 'imagesUnlabeled'
    out = tmp_path / 'preprocessed' / f'{planned.configuration_manager.data_identifier}_unlabeled'
    assert run() == [a, b]
    before = mtimes()
    assert run() == [] and mtimes() == before

    shutil.copy(source('imagesTs', c), images / f'{c}_0000.nii.gz')
    assert run() == [c]
    assert {k: v for k, v in mtimes().items() if not k.startswith(c)} == before
    assert assert_only_complete_cases(out) == {a, b, c}

    (images / f'{b}_0000.nii.gz').unlink()
    assert run() == [] and assert_only_complete_cases(out) == {a, c}

    os.utime(images / f'{a}_0000.nii.gz', ns=(1, 1))  # a changed source (new mtime)
    (out / f'{c}.b2nd').unlink()  # an incomplete output
    assert run() == [a, c]

    plans = deepcopy(planned.plans_manager.plans)
    plans['configurations'][CONFIGURATION]['batch_size'] = 7  # training-only: keeps the cache
    assert run(PlansManager(plans)) == []
    data_before = nnUNetDatasetBlosc2(str(out)).load_case(a)[0][:]
    plans['configurations'][CONFIGURATION]['normalization_schemes'] = ['NoNormalization']
    assert run(PlansManager(plans)) == [a, c]
    assert not np.array_equal(nnUNetDatasetBlosc2(str(out)).load_case(a)[0][:], data_before)
    assert assert_only_complete_cases(out) == {a, c}


# ------------------------------------------------------------------------------------------------------ bad inputs

def expect_error(raw: Path, dataset_json: dict, *fragments: str):
    with pytest.raises(UnlabeledDataError) as info:
        find_unlabeled_cases(str(raw), dataset_json)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_find_groups_channels_and_ignores_hidden_files(tmp_path):
    two_channels = {**DATASET_JSON, 'channel_names': {'0': 'T1', '1': 'T2'}}
    images = tmp_path / 'imagesUnlabeled'
    images.mkdir()
    for name in ('b_0001.nii.gz', 'b_0000.nii.gz', 'a_x_0000.nii.gz', 'a_x_0001.nii.gz', '.DS_Store'):
        (images / name).touch()
    assert find_unlabeled_cases(str(tmp_path), two_channels) == {
        'a_x': [str(images / 'a_x_0000.nii.gz'), str(images / 'a_x_0001.nii.gz')],
        'b': [str(images / 'b_0000.nii.gz'), str(images / 'b_0001.nii.gz')]}


def test_missing_folder(tmp_path):
    expect_error(tmp_path, DATASET_JSON, str(tmp_path / 'imagesUnlabeled'), 'create it', '<case>_0000.nii.gz')


def test_empty_folder(tmp_path):
    (tmp_path / 'imagesUnlabeled').mkdir()
    (tmp_path / 'imagesUnlabeled' / '.hidden').touch()
    expect_error(tmp_path, DATASET_JSON, str(tmp_path / 'imagesUnlabeled'), 'is empty', 'add unlabeled images')


def test_wrong_file_ending(tmp_path):
    raw = make_raw(tmp_path, {'case_0000.nii.gz': source('imagesTs', UNLABELED[0])})
    (raw / 'imagesUnlabeled' / 'case_0000.nrrd').touch()
    expect_error(raw, DATASET_JSON, str(raw / 'imagesUnlabeled' / 'case_0000.nrrd'), "'.nii.gz'", 'convert it')


@pytest.mark.parametrize('name', ['case.nii.gz', 'case_000.nii.gz', 'case_T1.nii.gz'])
def test_bad_or_missing_channel_suffix(tmp_path, name):
    raw = make_raw(tmp_path, {name: source('imagesTs', UNLABELED[0])})
    expect_error(raw, DATASET_JSON, str(raw / 'imagesUnlabeled' / name), 'no channel suffix', 'rename it')


def test_channel_index_out_of_range(tmp_path):
    raw = make_raw(tmp_path, {'case_0000.nii.gz': source('imagesTs', UNLABELED[0]),
                              'case_0001.nii.gz': source('imagesTs', UNLABELED[0])})
    expect_error(raw, DATASET_JSON, str(raw / 'imagesUnlabeled' / 'case_0001.nii.gz'), 'only 1 channel',
                 'rename or remove it')


def test_missing_channel(tmp_path):
    raw = make_raw(tmp_path, {'case_0000.nii.gz': source('imagesTs', UNLABELED[0])})
    two_channels = {**DATASET_JSON, 'channel_names': {'0': 'T1', '1': 'T2'}}
    expect_error(raw, two_channels, str(raw / 'imagesUnlabeled'), "'case'", 'case_0001.nii.gz',
                 'add the missing channel file')


def expect_case_error(planned, tmp_path, bad_name: str, write_bad, *fragments: str, num_processes: int = 1,
                      file_ending: str = '.nii.gz'):
    """A good case plus a bad one: the error names the bad file and the output holds only complete cases."""
    images = tmp_path / 'raw' / 'imagesUnlabeled'
    images.mkdir(parents=True)
    sitk.WriteImage(sitk.ReadImage(str(source('imagesTs', UNLABELED[0]))), str(images / f'good_0000{file_ending}'))
    bad = images / bad_name
    write_bad(bad)
    with pytest.raises(UnlabeledDataError) as info:
        ensure_unlabeled_preprocessed(str(tmp_path / 'raw'), str(tmp_path / 'out'), planned.plans_manager,
                                      planned.configuration_manager, {**DATASET_JSON, 'file_ending': file_ending},
                                      num_processes=num_processes, show_progress=False)
    for fragment in (str(bad), *fragments):
        assert fragment in str(info.value)
    assert assert_only_complete_cases(tmp_path / 'out' / 'nnUNetPlans_3d_fullres_unlabeled') <= {'good'}


def test_corrupt_file_in_worker_process(planned, tmp_path):
    expect_case_error(planned, tmp_path, 'broken_0000.nii.gz', lambda p: p.write_bytes(b'not a nifti' * 100),
                      'Cannot read', 'replace it with a valid image', num_processes=2)


def test_truncated_gzip_file(planned, tmp_path):
    """The first 1000 bytes of a valid image: ITK reads it without an error as a full-size, mostly zero array;
    the streamed gzip read refuses it (in a worker process too), and no case is written for it."""
    original = source('imagesTs', UNLABELED[1])

    def write_truncated(path):
        path.write_bytes(original.read_bytes()[:1000])
        array = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))  # what would have entered the pool silently
        assert array.shape == sitk.GetArrayFromImage(sitk.ReadImage(str(original))).shape
        assert (array == 0).mean() > 0.95
    for num_processes in (1, 2):
        expect_case_error(planned, tmp_path / str(num_processes), 'cut_0000.nii.gz', write_truncated,
                          'truncated or corrupt gzip file (Compressed file ended before the end-of-stream marker',
                          'Fix: copy it again from its source', num_processes=num_processes)


def test_nan_values(planned, tmp_path):
    # ITK's NIfTI reader (SimpleITK 2.5) returns NaN and inf voxels of a .nii.gz as 0, so NaNs only reach nnU-Net
    # through other formats or readers: use .mha, which SimpleITKIO (the plans' reader) reads verbatim.
    reference = sitk.ReadImage(str(source('imagesTs', UNLABELED[1])))

    def write_nan(path):
        array = sitk.GetArrayFromImage(reference).astype(np.float32)
        array[5, 5, 5] = np.nan
        image = sitk.GetImageFromArray(array)
        image.CopyInformation(reference)
        sitk.WriteImage(image, str(path))
    expect_case_error(planned, tmp_path, 'nan_0000.mha', write_nan, 'NaN or infinite', 'replace them',
                      file_ending='.mha')


def test_4d_image_in_single_channel_dataset(planned, tmp_path):
    image = sitk.ReadImage(str(source('imagesTs', UNLABELED[1])))
    expect_case_error(planned, tmp_path, 'fourd_0000.nii.gz',
                      lambda p: sitk.WriteImage(sitk.JoinSeries([image, image]), str(p)),
                      'holds 2 images', 'split it into separate files')


def test_channels_with_different_geometry(planned, tmp_path):
    raw = make_raw(tmp_path / 'raw', {'mix_0000.nii.gz': source('imagesTs', UNLABELED[0]),
                                      'mix_0001.nii.gz': source('imagesTs', UNLABELED[1])})
    with pytest.raises(UnlabeledDataError) as info:
        ensure_unlabeled_preprocessed(str(raw), str(tmp_path / 'out'), planned.plans_manager,
                                      planned.configuration_manager,
                                      {**DATASET_JSON, 'channel_names': {'0': 'T1', '1': 'T2'}}, num_processes=1,
                                      show_progress=False)
    assert str(raw / 'imagesUnlabeled' / 'mix_0000.nii.gz') in str(info.value)
    assert 'must share shape and spacing; resample them onto one grid' in str(info.value)
    assert assert_only_complete_cases(tmp_path / 'out' / 'nnUNetPlans_3d_fullres_unlabeled') == set()


def test_2d_image_in_3d_dataset(planned, tmp_path):
    image = sitk.ReadImage(str(source('imagesTs', UNLABELED[1])))
    expect_case_error(planned, tmp_path, 'slice_0000.nii.gz', lambda p: sitk.WriteImage(image[:, :, 10], str(p)),
                      'is a 2D image but the labeled training images are 3D', 'convert it to 3D or remove')


# ------------------------------------------------------------------------------------------------------------- CLI

def run_cli(planned, *args):
    code = 'from nnunet_semi.data.unlabeled import preprocess_unlabeled_entry; preprocess_unlabeled_entry()'
    return subprocess.run([sys.executable, '-c', code, *args], env=planned.env, capture_output=True, text=True)


def test_cli_success_for_several_configurations(planned):
    result = run_cli(planned, '-d', '901', '-c', '2d', '-c', CONFIGURATION, '-np', '1')
    assert result.returncode == 0, result.stderr
    for data_identifier in ('nnUNetPlans_2d', 'nnUNetPlans_3d_fullres'):
        folder = planned.preprocessed / f'{data_identifier}_unlabeled'
        assert f'{folder}: {len(UNLABELED) + 1} unlabeled cases' in result.stdout


def test_cli_missing_plans_exits_1_with_clean_message(planned):
    result = run_cli(planned, '-d', '901', '-c', CONFIGURATION, '-p', 'NoSuchPlans')
    assert result.returncode == 1
    assert 'Traceback' not in result.stderr
    assert result.stderr.startswith(f"Error: No plans file {planned.preprocessed / 'NoSuchPlans.json'}")
    assert 'run nnUNetv2_plan_and_preprocess -d 901 first' in result.stderr
