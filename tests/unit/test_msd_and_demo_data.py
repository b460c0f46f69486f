"""MSD -> nnU-Net semi-supervised conversion (real Task04_Hippocampus data) and the synthetic demo dataset."""
import json
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from dataset_conversion.msd import (ConversionError, convert_msd_entry, convert_msd_semi,
                                    copy_splits_to_preprocessed)
from nnunet_semi.apps.demo_data import generate_demo_dataset, synthesize_case
from tests.conftest import HIPPOCAMPUS, require


def _task() -> Path:
    return require(HIPPOCAMPUS)


def _ids(folder: Path, channel: bool) -> list:
    suffix = "_0000.nii.gz" if channel else ".nii.gz"
    return sorted(f.name[:-len(suffix)] for f in folder.iterdir() if f.name.endswith(suffix))


def _arr(path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def _listing(root: Path) -> list:
    """Everything in the output root, hidden temporary folders included."""
    return sorted(os.listdir(root)) if root.exists() else []


def _verify(folder: str) -> None:
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity
    verify_dataset_integrity(folder, num_processes=1)  # raises on any problem


@pytest.fixture(scope="module")
def msd_source():
    task = _task()
    with open(task / "dataset.json") as f:
        d = json.load(f)
    train = {Path(e["image"]).name[:-7]: (task / e["image"], task / e["label"]) for e in d["training"]}
    test = {Path(p).name[:-7]: task / p for p in d["test"]}
    return task, train, test


@pytest.fixture(scope="module")
def converted(tmp_path_factory, msd_source):
    task = msd_source[0]
    root = tmp_path_factory.mktemp("raw")
    out = convert_msd_semi(str(task), 901, num_labeled=3, num_val=2, num_test=2, num_unlabeled=5, seed=0,
                           output_root=str(root))
    return Path(out)


# ------------------------------------------------------------------------------------------------ MSD conversion
def test_msd_counts_layout_and_disjoint_sets(converted, msd_source):
    _, train, test = msd_source
    assert converted.name == "Dataset901_Hippocampus"
    assert sorted(os.listdir(converted)) == ["dataset.json", "imagesTr", "imagesTs", "imagesUnlabeled", "labelsTr",
                                             "labelsTs", "splits_final.json"]
    tr, ts, unl = (_ids(converted / d, True) for d in ("imagesTr", "imagesTs", "imagesUnlabeled"))
    assert (len(tr), len(ts), len(unl)) == (5, 2, 5)
    assert _ids(converted / "labelsTr", False) == tr and _ids(converted / "labelsTs", False) == ts
    assert len(os.listdir(converted / "imagesUnlabeled")) == 5  # images only, no label files, one channel
    assert not set(tr) & set(ts) and not set(tr) & set(unl) and not set(ts) & set(unl)
    assert set(tr) | set(ts) <= set(train)  # labeled cases come from the MSD training pool
    assert set(unl) <= set(train) | set(test)

    dj = json.loads((converted / "dataset.json").read_text())
    assert dj["channel_names"] == {"0": "MRI"}
    assert dj["labels"] == {"background": 0, "Anterior": 1, "Posterior": 2}
    assert dj["numTraining"] == 5 and dj["file_ending"] == ".nii.gz"
    info = dj["nnunet_semi"]
    assert info["source_task"] == "Task04_Hippocampus" and info["seed"] == 0
    assert (info["num_labeled"], info["num_val"], info["num_test"], info["num_unlabeled"]) == (3, 2, 2, 5)
    assert sorted(info["labeled"] + info["val"]) == tr and info["test"] == ts and info["unlabeled"] == unl

    splits = json.loads((converted / "splits_final.json").read_text())
    assert isinstance(splits, list) and len(splits) == 1
    assert splits[0]["train"] == info["labeled"] and splits[0]["val"] == info["val"]
    assert len(splits[0]["train"]) == 3 and len(splits[0]["val"]) == 2 and not set(splits[0]["train"]) & set(
        splits[0]["val"])


def test_msd_voxel_data_identical(converted, msd_source):
    _, train, test = msd_source
    n = 0
    for folder, label_folder in (("imagesTr", "labelsTr"), ("imagesTs", "labelsTs"), ("imagesUnlabeled", None)):
        for case in _ids(converted / folder, True):
            src_img = train[case][0] if case in train else test[case]
            a, b = sitk.ReadImage(str(src_img)), sitk.ReadImage(str(converted / folder / f"{case}_0000.nii.gz"))
            assert np.array_equal(sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b)), case
            assert a.GetSpacing() == b.GetSpacing() and a.GetOrigin() == b.GetOrigin()
            if label_folder:
                assert np.array_equal(_arr(train[case][1]), _arr(converted / label_folder / f"{case}.nii.gz"))
            n += 1
    assert n == 12
    # converted files are writable even though the shared sources are read-only
    assert all(os.access(p, os.W_OK) for p in (converted / "imagesTr").iterdir())


def test_msd_passes_nnunet_verify_dataset_integrity(converted):
    _verify(str(converted))


def test_msd_split_is_seeded(tmp_path, msd_source):
    task = str(msd_source[0])

    def split(seed, sub):
        out = convert_msd_semi(task, 901, 3, 2, 2, num_unlabeled=5, seed=seed, output_root=str(tmp_path / sub))
        info = json.loads((Path(out) / "dataset.json").read_text())["nnunet_semi"]
        return {k: info[k] for k in ("labeled", "val", "test", "unlabeled")}, Path(out)

    a, _ = split(0, "a")
    b, _ = split(0, "b")
    c, _ = split(1, "c")
    assert a == b
    assert a["labeled"] != c["labeled"] and a["unlabeled"] != c["unlabeled"]


def test_msd_no_val_and_no_imagests(tmp_path, msd_source):
    task, train, _ = msd_source
    out = Path(convert_msd_semi(str(task), 902, num_labeled=4, num_unlabeled=3, unlabeled_from_imagesTs=False,
                                output_root=str(tmp_path)))
    splits = json.loads((out / "splits_final.json").read_text())
    assert len(splits) == 1 and splits[0]["train"] == splits[0]["val"] and len(splits[0]["train"]) == 4
    assert json.loads((out / "dataset.json").read_text())["nnunet_semi"]["val_is_train"] is True
    unl = _ids(out / "imagesUnlabeled", True)
    assert len(unl) == 3 and set(unl) <= set(train) and not set(unl) & set(splits[0]["train"])
    assert _ids(out / "imagesTs", True) == []


def test_msd_4d_multichannel_uses_split_4d_nifti(tmp_path):
    """A tiny 2-channel 4D MSD-style task (generated here) is split into _0000/_0001 channel files."""
    task = tmp_path / "Task77_TwoChan"
    for d in ("imagesTr", "labelsTr", "imagesTs"):
        (task / d).mkdir(parents=True)
    rng = np.random.default_rng(0)
    chans = {}
    training, test = [], []
    for i in range(4):
        data = rng.normal(size=(2, 5, 6, 7)).astype(np.float32)  # (channel, z, y, x)
        img = sitk.JoinSeries([sitk.GetImageFromArray(c) for c in data])  # 4D, last ITK axis = channel
        img.SetSpacing((1.0, 1.5, 2.0, 1.0))
        sub = "imagesTs" if i == 3 else "imagesTr"
        sitk.WriteImage(img, str(task / sub / f"two_{i:03d}.nii.gz"))
        chans[f"two_{i:03d}"] = data
        if i < 3:
            seg = sitk.GetImageFromArray((data[0] > 0).astype(np.uint8))
            seg.SetSpacing((1.0, 1.5, 2.0))
            sitk.WriteImage(seg, str(task / "labelsTr" / f"two_{i:03d}.nii.gz"))
            training.append({"image": f"./imagesTr/two_{i:03d}.nii.gz", "label": f"./labelsTr/two_{i:03d}.nii.gz"})
        else:
            test.append(f"./imagesTs/two_{i:03d}.nii.gz")
    (task / "dataset.json").write_text(json.dumps({"name": "TwoChan", "modality": {"0": "T1", "1": "T2"},
                                                   "labels": {"0": "background", "1": "fg"},
                                                   "training": training, "test": test}))
    out = Path(convert_msd_semi(str(task), 977, num_labeled=2, num_val=1, output_root=str(tmp_path / "raw")))
    assert out.name == "Dataset977_TwoChan"
    dj = json.loads((out / "dataset.json").read_text())
    assert dj["channel_names"] == {"0": "T1", "1": "T2"} and dj["numTraining"] == 3
    assert sorted(os.listdir(out / "imagesUnlabeled")) == ["two_003_0000.nii.gz", "two_003_0001.nii.gz"]
    for case, data in chans.items():
        folder = out / ("imagesUnlabeled" if case == "two_003" else "imagesTr")
        for c in range(2):
            img = sitk.ReadImage(str(folder / f"{case}_{c:04d}.nii.gz"))
            assert img.GetDimension() == 3 and img.GetSpacing() == (1.0, 1.5, 2.0)
            assert np.array_equal(sitk.GetArrayFromImage(img), data[c])
    _verify(str(out))


# ------------------------------------------------------------------------------------------------ MSD errors
def _mini_task(tmp_path: Path, msd_source, n_train=6, n_test=2) -> Path:
    """Task folder with a few real cases (symlinked) and its own dataset.json, for the error tests."""
    src, train, test = msd_source
    task = tmp_path / "Task04_Hippocampus"
    for d in ("imagesTr", "labelsTr", "imagesTs"):
        (task / d).mkdir(parents=True)
    msd = json.loads((src / "dataset.json").read_text())
    tr_cases, ts_cases = sorted(train)[:n_train], sorted(test)[:n_test]
    for c in tr_cases:
        (task / "imagesTr" / f"{c}.nii.gz").symlink_to(train[c][0])
        (task / "labelsTr" / f"{c}.nii.gz").symlink_to(train[c][1])
    for c in ts_cases:
        (task / "imagesTs" / f"{c}.nii.gz").symlink_to(test[c])
    msd["training"] = [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in tr_cases]
    msd["test"] = [f"./imagesTs/{c}.nii.gz" for c in ts_cases]
    (task / "dataset.json").write_text(json.dumps(msd))
    return task


def test_error_missing_task_folder(tmp_path):
    missing = tmp_path / "Task99_Nothing"
    with pytest.raises(ConversionError, match=str(missing)):
        convert_msd_semi(str(missing), 903, 1, output_root=str(tmp_path / "raw"))
    assert _listing(tmp_path / "raw") == []


def test_error_missing_dataset_json(tmp_path):
    task = tmp_path / "Task04_Hippocampus"
    task.mkdir()
    with pytest.raises(ConversionError, match=str(task / "dataset.json")):
        convert_msd_semi(str(task), 903, 1, output_root=str(tmp_path / "raw"))
    assert _listing(tmp_path / "raw") == []


@pytest.mark.parametrize("kind", ["image", "label", "test_image"])
def test_error_listed_file_missing(tmp_path, msd_source, kind):
    task = _mini_task(tmp_path, msd_source)
    msd = json.loads((task / "dataset.json").read_text())
    rel = {"image": msd["training"][2]["image"], "label": msd["training"][4]["label"],
           "test_image": msd["test"][1]}[kind]
    gone = task / rel[2:]
    gone.unlink()
    with pytest.raises(ConversionError, match="missing: " + str(gone)):
        convert_msd_semi(str(task), 903, 2, 1, 1, output_root=str(tmp_path / "raw"))
    assert _listing(tmp_path / "raw") == []
    # without imagesTs the missing test image does not matter
    if kind == "test_image":
        out = convert_msd_semi(str(task), 903, 2, 1, 1, unlabeled_from_imagesTs=False,
                               output_root=str(tmp_path / "raw"))
        assert len(os.listdir(Path(out) / "imagesUnlabeled")) == 2


def test_error_counts_larger_than_pool(tmp_path, msd_source):
    task = msd_source[0]
    with pytest.raises(ConversionError, match=r"200 labeled cases.*150 \+ 40 \+ 20 = 210") as e:
        convert_msd_semi(str(task), 903, 150, 40, 20, output_root=str(tmp_path / "raw"))
    assert str(task / "dataset.json") in str(e.value)
    assert _listing(tmp_path / "raw") == []
    with pytest.raises(ConversionError, match="num_unlabeled = 500"):
        convert_msd_semi(str(task), 903, 3, num_unlabeled=500, output_root=str(tmp_path / "raw"))
    assert _listing(tmp_path / "raw") == []


def test_error_output_exists_and_overwrite(tmp_path, msd_source):
    task = _mini_task(tmp_path, msd_source)
    root = tmp_path / "raw"
    out = Path(convert_msd_semi(str(task), 903, 2, 1, 1, seed=0, output_root=str(root)))
    before = json.loads((out / "dataset.json").read_text())
    with pytest.raises(ConversionError, match="already exists: " + str(out)):
        convert_msd_semi(str(task), 903, 2, 1, 1, seed=5, output_root=str(root))
    assert _listing(root) == [out.name]  # untouched, no temporary folder left
    assert json.loads((out / "dataset.json").read_text()) == before
    # another name with the same id is refused as well (nnU-Net needs unique ids)
    other = tmp_path / "Task05_Other"
    other.symlink_to(task, target_is_directory=True)
    with pytest.raises(ConversionError, match="already used by " + str(out)):
        convert_msd_semi(str(other), 903, 2, 1, 1, output_root=str(root))
    # overwrite replaces it atomically
    out2 = Path(convert_msd_semi(str(task), 903, 4, 1, 1, seed=5, output_root=str(root), overwrite=True))
    assert out2 == out and _listing(root) == [out.name]
    assert len(_ids(out / "imagesTr", True)) == 5 and len(_ids(out / "imagesUnlabeled", True)) == 2


def test_error_during_copy_leaves_no_partial_folder(tmp_path, msd_source):
    """A listed file that exists but is not an image fails mid-conversion: nothing may remain in the output root."""
    task = _mini_task(tmp_path, msd_source)
    bad = task / "imagesTs" / sorted(os.listdir(task / "imagesTs"))[-1]
    bad.unlink()
    bad.write_bytes(b"not a nifti file")
    with pytest.raises(ConversionError, match=str(bad)):
        convert_msd_semi(str(task), 903, 2, 1, 1, output_root=str(tmp_path / "raw"))
    assert _listing(tmp_path / "raw") == []


@pytest.mark.parametrize("kind", ["image", "label", "unlabeled"])
def test_error_truncated_gzip_input_leaves_nothing(tmp_path, msd_source, kind):
    """A truncated copy (first 1000 bytes, of a label half) of a real image or label: ITK would read it as zeros past
    the cut; the converter names the file and the fix and writes nothing."""
    task = _mini_task(tmp_path, msd_source)
    msd = json.loads((task / "dataset.json").read_text())
    rel = {"image": msd["training"][1]["image"], "label": msd["training"][3]["label"],
           "unlabeled": msd["test"][0]}[kind]
    cut = task / rel[2:]
    data, full = cut.read_bytes(), _arr(cut)
    cut.unlink()
    cut.write_bytes(data[:min(1000, len(data) // 2)])  # labels compress to ~1.5 kB
    silently_read = _arr(cut)  # what the conversion used to copy without a word
    assert silently_read.shape == full.shape and (silently_read == 0).mean() > 0.95
    assert not np.array_equal(silently_read, full)
    with pytest.raises(ConversionError) as error:
        convert_msd_semi(str(task), 903, 2, 1, 1, output_root=str(tmp_path / "raw"))
    assert str(error.value) == (
        f"{cut}: the {'label' if kind == 'label' else 'image'} is a truncated or corrupt gzip file (Compressed file "
        f"ended before the end-of-stream marker was reached). Replace the file with a valid NIfTI.")
    assert _listing(tmp_path / "raw") == []


def test_cli_success_and_error(tmp_path, msd_source, capsys):
    task = _mini_task(tmp_path, msd_source)
    root = tmp_path / "raw"
    convert_msd_entry(["-i", str(task), "-d", "904", "--labeled", "2", "--val", "1", "--test", "1",
                       "--unlabeled", "3", "-o", str(root)])
    out = capsys.readouterr().out
    assert str(root / "Dataset904_Hippocampus") in out and "imagesUnlabeled: 3" in out
    with pytest.raises(SystemExit) as e:
        convert_msd_entry(["-i", str(task), "-d", "904", "--labeled", "2", "-o", str(root)])
    assert e.value.code == 1
    assert "already exists" in capsys.readouterr().err


def test_copy_splits_to_preprocessed(tmp_path, msd_source, monkeypatch):
    task = _mini_task(tmp_path, msd_source)
    raw, pre = tmp_path / "raw", tmp_path / "pre"
    monkeypatch.setenv("nnUNet_raw", str(raw))
    monkeypatch.setenv("nnUNet_preprocessed", str(pre))
    out = Path(convert_msd_semi(str(task), 905, 2, 1, 1))  # output_root from $nnUNet_raw
    assert out == raw / "Dataset905_Hippocampus"
    with pytest.raises(ConversionError, match=str(pre / "Dataset905_Hippocampus")):
        copy_splits_to_preprocessed(905)
    (pre / "Dataset905_Hippocampus").mkdir(parents=True)
    (pre / "Dataset905_Hippocampus" / "splits_final.json").write_text("[]")  # stale file is replaced
    dst = copy_splits_to_preprocessed(905)
    assert dst == str(pre / "Dataset905_Hippocampus" / "splits_final.json")
    assert Path(dst).read_text() == (out / "splits_final.json").read_text()
    assert copy_splits_to_preprocessed("Dataset905_Hippocampus") == dst


# ------------------------------------------------------------------------------------------------ demo dataset
@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return Path(generate_demo_dataset(str(tmp_path_factory.mktemp("demo"))))


def test_demo_counts_labels_and_splits(demo):
    assert demo.name == "Dataset990_SemiDemo"
    tr, ts, unl = (_ids(demo / d, True) for d in ("imagesTr", "imagesTs", "imagesUnlabeled"))
    assert (len(tr), len(ts), len(unl)) == (12, 8, 32)
    assert _ids(demo / "labelsTr", False) == tr and _ids(demo / "labelsTs", False) == ts
    assert not set(tr) & set(ts) and not set(tr) & set(unl) and not set(ts) & set(unl)
    dj = json.loads((demo / "dataset.json").read_text())
    assert dj["labels"] == {"background": 0, "organ": 1, "core": 2} and dj["numTraining"] == 12
    assert dj["channel_names"] == {"0": "MRI"} and dj["file_ending"] == ".nii.gz"
    splits = json.loads((demo / "splits_final.json").read_text())
    assert len(splits) == 1 and len(splits[0]["train"]) == 8 and len(splits[0]["val"]) == 4
    assert sorted(splits[0]["train"] + splits[0]["val"]) == tr
    for folder, ids in (("labelsTr", tr), ("labelsTs", ts)):
        for case in ids:
            seg = sitk.ReadImage(str(demo / folder / f"{case}.nii.gz"))
            img = sitk.ReadImage(str(demo / folder.replace("labels", "images") / f"{case}_0000.nii.gz"))
            assert seg.GetSize() == img.GetSize() == (64, 64, 16) and img.GetSpacing() == (1.0, 1.0, 3.0)
            assert set(np.unique(sitk.GetArrayFromImage(seg)).tolist()) == {0, 1, 2}, case


def test_demo_passes_nnunet_verify_dataset_integrity(demo):
    _verify(str(demo))


def test_demo_is_learnable_but_not_thresholdable(demo):
    """Organ brighter than background and core in every case, yet the best global threshold is far from perfect."""
    best_dices = []
    for case in _ids(demo / "labelsTr", False):
        img, seg = _arr(demo / "imagesTr" / f"{case}_0000.nii.gz"), _arr(demo / "labelsTr" / f"{case}.nii.gz")
        organ, bg_std = img[seg == 1].mean(), img[seg == 0].std()  # contrast in units of background std
        assert organ > img[seg == 0].mean() + 0.5 * bg_std and organ > img[seg == 2].mean() + 0.5 * bg_std, case
        fg = seg > 0
        dices = [2 * (fg & (img > t)).sum() / (fg.sum() + (img > t).sum())
                 for t in np.quantile(img, np.linspace(0.5, 0.999, 100))]
        best_dices.append(max(dices))
    assert 0.2 < np.mean(best_dices) < 0.85 and max(best_dices) < 0.95


def test_demo_is_deterministic(tmp_path):
    kw = dict(num_labeled=2, num_val=1, num_unlabeled=2, num_test=1)
    a = Path(generate_demo_dataset(str(tmp_path / "a"), seed=3, **kw))
    b = Path(generate_demo_dataset(str(tmp_path / "b"), seed=3, **kw))
    c = Path(generate_demo_dataset(str(tmp_path / "c"), seed=4, **kw))
    files = sorted(str(p.relative_to(a)) for p in a.rglob("*.nii.gz"))
    assert len(files) == 2 * 3 + 2 * 1 + 2
    assert files == sorted(str(p.relative_to(b)) for p in b.rglob("*.nii.gz"))
    for f in files:
        assert np.array_equal(_arr(a / f), _arr(b / f)), f
    assert not np.array_equal(_arr(a / "imagesTr/SemiDemo_000_0000.nii.gz"), _arr(c / "imagesTr/SemiDemo_000_0000.nii.gz"))
    # a case does not depend on the requested counts
    img, seg = synthesize_case(3, 0)
    assert np.array_equal(img, _arr(a / "imagesTr/SemiDemo_000_0000.nii.gz"))
    assert np.array_equal(seg, _arr(a / "labelsTr/SemiDemo_000.nii.gz"))
    # regenerating in place replaces the folder, nothing else is left in the root
    generate_demo_dataset(str(tmp_path / "a"), seed=3, **kw)
    assert _listing(tmp_path / "a") == ["Dataset990_SemiDemo"]


def test_demo_fixes_the_thread_counts_of_training_and_prediction(monkeypatch):
    """The table depends on torch's thread counts: the demo sets them (default 2) whatever the shell exports."""
    from nnunet_semi.apps import demo

    outer = {"nnUNet_semi_threads": "1", "nnUNet_def_n_proc": "8", "PATH": "/bin"}
    train_env, predict_env = demo.step_environments(outer)
    assert (train_env["nnUNet_semi_threads"], train_env["nnUNet_semi_seed"], train_env["nnUNet_n_proc_DA"]) == \
        ("2", "0", "0")
    assert (predict_env["nnUNet_def_n_proc"], predict_env["nnUNet_semi_threads"]) == ("2", "2")
    assert demo.step_environments(outer, 3)[1]["nnUNet_def_n_proc"] == "3" and outer["nnUNet_def_n_proc"] == "8"
    with pytest.raises(ValueError, match="--threads 2"):
        demo.step_environments(outer, 0)
    calls = []
    monkeypatch.setattr(demo, "run_demo", lambda *args: calls.append(args))
    demo.demo_entry(["--work", "w", "--threads", "4"])
    assert calls[0][1:] == ("nnUNetTrainerCPS_10epochs_100its", False, 4)
    with pytest.raises(SystemExit):
        demo.demo_entry(["--threads", "0"])
