"""The benchmark protocol's splits: one test set and one validation set per dataset, several labeled draws that
differ in their labeled cases only.

* ACDC (``convert_acdc_h5(num_val_from_train=...)``): validation patients held out of the training pool, the same
  for every labeled draw and for the all-labeled bound, never SSL4MIS's labeled patients, labeled in imagesTr and
  the fold's ``val``; test = val.list.
* MSD (``convert_msd_semi(test_seed=..., fixed_validation=True)``): test and validation drawn once with
  ``test_seed``, labeled cases per ``seed`` from the rest.

Generated files (random content), no real data."""
import json
from pathlib import Path

import h5py
import numpy as np
import pytest

import SimpleITK as sitk

from dataset_conversion.acdc import convert_acdc_h5
from dataset_conversion.common import ConversionError
from dataset_conversion.msd import convert_msd_semi

TRAIN = [f"patient{i:03d}" for i in (12, 3, 7, 1, 9, 4, 11, 6, 2, 10)]  # list order is not sorted order
VAL = ["patient020", "patient021"]


def _release(root: Path) -> Path:
    rng = np.random.default_rng(0)
    (root / "data").mkdir(parents=True)
    for role, patients in (("train", TRAIN), ("val", VAL)):
        volumes = [f"{p}_frame0{f}" for p in patients for f in (1, 2)]
        (root / f"{role}.list").write_text("\n".join(volumes) + "\n")
        for v in volumes:
            files = [root / "data" / f"{v}_slice_{k}.h5" for k in (1, 2)] if role == "train" else \
                [root / "data" / f"{v}.h5"]
            for path in files:
                shape = (4, 5) if role == "train" else (2, 4, 5)
                with h5py.File(path, "w") as f:
                    f.create_dataset("image", data=rng.random(shape, dtype=np.float32))
                    f.create_dataset("label", data=rng.integers(0, 4, shape, dtype=np.uint8))
    return root


def _convert(src, out, dataset_id, **kwargs):
    folder = Path(convert_acdc_h5(str(src), dataset_id=dataset_id, output_root=str(out), val_as_test=True,
                                  num_val_from_train=3, val_seed=0, **kwargs))
    info = json.loads((folder / "dataset.json").read_text())["nnunet_semi"]
    split = json.loads((folder / "splits_final.json").read_text())
    return folder, info, split


def _cases(folder: Path, sub: str):
    return sorted(p.name.split("_0000")[0].split(".nii")[0] for p in (folder / sub).iterdir())


def test_validation_is_held_out_of_training_and_fixed_across_draws_and_the_bound(tmp_path):
    src = _release(tmp_path / "src")
    draws = [_convert(src, tmp_path / "raw", 900, num_labeled=3, selection="list"),
             _convert(src, tmp_path / "raw", 901, num_labeled=3, selection="random", seed=1),
             _convert(src, tmp_path / "raw", 902, num_labeled=3, selection="random", seed=2),
             _convert(src, tmp_path / "raw", 909, num_labeled=7, selection="list", val_reserved_first=3)]
    # the validation draw: RandomState(0) over the sorted patients other than the first 3 of train.list
    candidates = sorted(set(TRAIN) - set(TRAIN[:3]))
    expected_val = sorted(candidates[i] for i in np.random.RandomState(0).permutation(len(candidates))[:3])
    for folder, info, split in draws:
        assert info["val_from_train_patients"] == expected_val == info["val_patients"]
        assert sorted(info["test_patients"]) == VAL  # val.list is the test set
        assert split[0]["val"] == sorted(f"{p}_frame0{f}" for p in expected_val for f in (1, 2))
        labeled = set(info["labeled_patients"])
        assert not labeled & set(expected_val) and not set(info["unlabeled_patients"]) & set(expected_val)
        assert labeled | set(info["unlabeled_patients"]) | set(expected_val) == set(TRAIN)
        # validation cases are labeled, in imagesTr / labelsTr, and not in imagesUnlabeled
        assert set(split[0]["val"]) <= set(_cases(folder, "labelsTr"))
        assert not set(split[0]["val"]) & set(_cases(folder, "imagesUnlabeled"))
        assert _cases(folder, "labelsTs") == sorted(f"{p}_frame0{f}" for p in VAL for f in (1, 2))
    assert draws[0][1]["labeled_patients"] == sorted(TRAIN[:3])  # SSL4MIS's own: the first 3 in list order
    assert len({tuple(d[1]["labeled_patients"]) for d in draws[:3]}) == 3  # three different labeled draws
    assert sorted(draws[3][1]["labeled_patients"]) == sorted(set(TRAIN) - set(expected_val))  # bound: all others
    assert draws[3][1]["unlabeled_patients"] == []


def test_too_many_validation_patients_is_refused_before_writing(tmp_path):
    src = _release(tmp_path / "src")
    with pytest.raises(ConversionError, match="num_val_from_train = 8, but the training pool has only 7 patients"):
        convert_acdc_h5(str(src), num_labeled=3, selection="list", output_root=str(tmp_path / "raw"),
                        num_val_from_train=8)
    assert not any((tmp_path / "raw").iterdir()) if (tmp_path / "raw").exists() else True


def _msd_task(root: Path, n_train: int = 30, n_test: int = 4) -> Path:
    task = root / "Task04_Hippocampus"
    rng = np.random.default_rng(0)
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (task / sub).mkdir(parents=True)
    training, test = [], []
    for i in range(n_train + n_test):
        name = f"hippocampus_{i:03d}.nii.gz"
        sub = "imagesTr" if i < n_train else "imagesTs"
        sitk.WriteImage(sitk.GetImageFromArray(rng.random((4, 5, 3)).astype(np.float32)), str(task / sub / name))
        if i < n_train:
            sitk.WriteImage(sitk.GetImageFromArray(rng.integers(0, 3, (4, 5, 3)).astype(np.uint8)),
                            str(task / "labelsTr" / name))
            training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
        else:
            test.append(f"./imagesTs/{name}")
    (task / "dataset.json").write_text(json.dumps({"name": "Hippocampus", "modality": {"0": "MRI"}, "labels": {
        "0": "background", "1": "Anterior", "2": "Posterior"}, "training": training, "test": test}))
    return task


def test_msd_fixed_validation_keeps_test_and_validation_across_labeled_draws(tmp_path):
    task = _msd_task(tmp_path / "src")
    infos = []
    for draw in (0, 1, 2):
        out = Path(convert_msd_semi(str(task), 950 + draw, num_labeled=3, num_val=4, num_test=6, test_seed=1000,
                                    fixed_validation=True, seed=draw, output_root=str(tmp_path / "raw")))
        infos.append(json.loads((out / "dataset.json").read_text())["nnunet_semi"])
        split = json.loads((out / "splits_final.json").read_text())[0]
        assert split == {"train": infos[-1]["labeled"], "val": infos[-1]["val"]}
    cases = sorted(f"hippocampus_{i:03d}" for i in range(30))
    order = [cases[i] for i in np.random.RandomState(1000).permutation(30)]
    for info in infos:
        assert info["test"] == sorted(order[:6]) and info["val"] == sorted(order[6:10])  # the same for every draw
        labeled = set(info["labeled"])
        assert len(labeled) == 3 and not labeled & (set(info["test"]) | set(info["val"]))
        # everything else is unlabeled: the 17 other training images and the 4 MSD imagesTs images
        assert len(info["unlabeled"]) == 30 - 3 - 4 - 6 + 4 and not labeled & set(info["unlabeled"])
    assert len({tuple(info["labeled"]) for info in infos}) == 3
    # without fixed_validation the validation cases move with the seed (the older behaviour, unchanged)
    moving = [json.loads((Path(convert_msd_semi(str(task), 960 + d, num_labeled=3, num_val=4, num_test=6,
                                                test_seed=1000, seed=d, output_root=str(tmp_path / "raw2")))
                          / "dataset.json").read_text())["nnunet_semi"]["val"] for d in (0, 1)]
    assert moving[0] != moving[1]
    with pytest.raises(ConversionError, match="fixed_validation draws the validation cases with test_seed"):
        convert_msd_semi(str(task), 970, num_labeled=3, num_val=4, fixed_validation=True,
                         output_root=str(tmp_path / "raw3"))
