"""Paper-protocol converters: ACDC (real SSL4MIS h5 data + generated original-release files), LA (generated h5 and
nrrd files) and MM-WHS (generated NIfTI files). Generated files are tiny random volumes in each release's layout,
never real dataset content. One test per malformed-input case."""
import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import SimpleITK as sitk

from dataset_conversion.acdc import acdc_entry, convert_acdc_h5, convert_acdc_original
from dataset_conversion.common import ConversionError, num_from_ratio, read_list, select_labeled, split_pool
from dataset_conversion.la import convert_la_h5, convert_la_nrrd, la_entry
from dataset_conversion.mmwhs import CODE_TO_LABEL, LABELS as MMWHS_LABELS, convert_mmwhs, mmwhs_entry
from tests.conftest import ACDC_H5, require

# the first three patients of the release's train.list: SSL4MIS's 3-patient labeled set (its first 68 slices)
SSL4MIS_3 = ["patient038", "patient050", "patient099"]
H5_SUBSET = SSL4MIS_3 + ["patient100", "patient058", "patient028", "patient085"]  # 5 training + 2 validation


def _acdc_h5() -> Path:
    return require(ACDC_H5)  # the SSL4MIS ACDC h5 release


def _ids(folder: Path, channel: bool = True) -> list:
    suffix = "_0000.nii.gz" if channel else ".nii.gz"
    return sorted(f.name[:-len(suffix)] for f in folder.iterdir() if f.name.endswith(suffix))


def _arr(path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def _verify(folder, capsys) -> None:
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity
    capsys.readouterr()
    verify_dataset_integrity(str(folder), num_processes=1)  # raises on errors
    out = capsys.readouterr().out
    assert "Warning" not in out and "Error" not in out, out


def _splits(folder: Path) -> list:
    return json.loads((folder / "splits_final.json").read_text())


def _dj(folder: Path) -> dict:
    return json.loads((folder / "dataset.json").read_text())


def _nothing_written(root: Path) -> bool:
    return not root.exists() or os.listdir(root) == []


# ================================================================================================================
# protocol helpers
# ================================================================================================================
def test_ratio_counts_match_the_papers():
    assert [num_from_ratio(r, 70) for r in (0.05, 0.1)] == [3, 7]  # ACDC, SSL4MIS / CCM
    assert [num_from_ratio(r, 80) for r in (0.05, 0.1, 0.2)] == [4, 8, 16]  # LA, UA-MT
    assert num_from_ratio(0.001, 70) == 1
    for bad in (0, 1.5, -0.1, "x"):
        with pytest.raises(ConversionError, match="labeled_ratio"):
            num_from_ratio(bad, 70)


@pytest.mark.real_data(ACDC_H5)
def test_ssl4mis_list_selection_is_their_labeled_set():
    """selection='list' on the real train.list picks the patients of SSL4MIS's first 68 / 136 slices."""
    src = _acdc_h5()
    train = list(dict.fromkeys(v.split("_frame")[0] for v in read_list(str(src / "train.list"), "train.list")))
    assert len(train) == 70
    slices = read_list(str(src / "train_slices.list"), "train_slices.list")
    for n, n_slices in ((3, 68), (7, 136)):
        assert select_labeled(train, n, selection="list") == sorted({s.split("_frame")[0] for s in slices[:n_slices]})
    assert select_labeled(train, labeled_ratio=0.05, selection="list") == SSL4MIS_3


def test_seeded_selection():
    pats = [f"patient{i:03d}" for i in range(1, 71)]
    a = select_labeled(pats, 7, seed=1)
    assert a == select_labeled(list(reversed(pats)), 7, seed=1)  # independent of input order
    assert len(a) == 7 and a != select_labeled(pats, 7, seed=2)
    with pytest.raises(ConversionError, match="exactly one"):
        select_labeled(pats, 3, 0.1)
    with pytest.raises(ConversionError, match="only 70 patients"):
        select_labeled(pats, 71)
    train, val, test = split_pool([f"p{i:03d}" for i in range(100)], 10, 20, seed=0)
    assert (len(train), len(val), len(test)) == (70, 10, 20)
    assert not (set(train) & set(val)) and not (set(train) & set(test)) and not (set(val) & set(test))


# ================================================================================================================
# ACDC, SSL4MIS h5 release (real data)
# ================================================================================================================
@pytest.fixture(scope="module")
def acdc_h5(tmp_path_factory):
    root = tmp_path_factory.mktemp("acdc_h5_raw")
    out = convert_acdc_h5(str(_acdc_h5()), num_labeled=3, selection="list", output_root=str(root),
                          patients=H5_SUBSET)
    return Path(out)


def test_acdc_h5_layout_split_and_integrity(acdc_h5, capsys):
    assert acdc_h5.name == "Dataset027_ACDC"
    assert sorted(os.listdir(acdc_h5)) == ["dataset.json", "imagesTr", "imagesTs", "imagesUnlabeled", "labelsTr",
                                           "labelsTs", "splits_final.json"]
    labeled = [f"{p}_frame0{f}" for p in SSL4MIS_3 for f in (1, 2)]
    val = [f"{p}_frame0{f}" for p in ("patient028", "patient085") for f in (1, 2)]
    unl = [f"{p}_frame0{f}" for p in ("patient058", "patient100") for f in (1, 2)]
    assert _ids(acdc_h5 / "imagesTr") == sorted(labeled + val) == _ids(acdc_h5 / "labelsTr", False)
    assert _ids(acdc_h5 / "imagesUnlabeled") == unl
    assert os.listdir(acdc_h5 / "imagesTs") == [] and os.listdir(acdc_h5 / "labelsTs") == []  # no test.list here
    assert _splits(acdc_h5) == [{"train": sorted(labeled), "val": sorted(val)}]
    dj = _dj(acdc_h5)
    assert dj["labels"] == {"background": 0, "RV": 1, "Myo": 2, "LV": 3}
    assert dj["channel_names"] == {"0": "cineMRI"} and dj["numTraining"] == 10 and dj["file_ending"] == ".nii.gz"
    info = dj["nnunet_semi"]
    assert info["labeled_patients"] == SSL4MIS_3 and info["spacing_zyx_mm"] == [10.0, 1.5, 1.5]
    assert (info["num_labeled_cases"], info["num_val_cases"], info["num_unlabeled_cases"]) == (6, 4, 4)
    _verify(acdc_h5, capsys)


@pytest.mark.real_data(ACDC_H5)
def test_acdc_h5_val_as_test(tmp_path, capsys):
    """Copies without test.list (as ../shared/data): the val.list volumes become the held-out test set."""
    out = Path(convert_acdc_h5(str(_acdc_h5()), num_labeled=3, selection="list", output_root=str(tmp_path),
                               patients=H5_SUBSET, val_as_test=True))
    labeled = [f"{p}_frame0{f}" for p in SSL4MIS_3 for f in (1, 2)]
    test = [f"{p}_frame0{f}" for p in ("patient028", "patient085") for f in (1, 2)]
    assert _ids(out / "imagesTr") == sorted(labeled) == _ids(out / "labelsTr", False)
    assert _ids(out / "imagesTs") == test == _ids(out / "labelsTs", False)
    assert _splits(out) == [{"train": sorted(labeled), "val": sorted(labeled)}]
    info = _dj(out)["nnunet_semi"]
    assert info["test_patients"] == ["patient028", "patient085"] and info["val_patients"] == []
    _verify(out, capsys)


def test_acdc_h5_volume_rebuilt_from_slices_in_order(acdc_h5):
    data = _acdc_h5() / "data"
    img = sitk.ReadImage(str(acdc_h5 / "imagesTr" / "patient050_frame02_0000.nii.gz"))
    assert img.GetSpacing() == (1.5, 1.5, 10.0)  # SimpleITK order (x, y, z) of the (z, y, x) default
    n = len(list(data.glob("patient050_frame02_slice_*.h5")))
    assert img.GetSize()[2] == n
    arr, lab = sitk.GetArrayFromImage(img), _arr(acdc_h5 / "labelsTr" / "patient050_frame02.nii.gz")
    assert arr.dtype == np.float32 and lab.dtype == np.uint8
    for k in range(1, n + 1):
        with h5py.File(data / f"patient050_frame02_slice_{k}.h5", "r") as f:
            np.testing.assert_array_equal(arr[k - 1], f["image"][()])
            np.testing.assert_array_equal(lab[k - 1], f["label"][()])
    # unlabeled volumes are rebuilt the same way, without labels
    with h5py.File(data / "patient100_frame01_slice_1.h5", "r") as f:
        np.testing.assert_array_equal(_arr(acdc_h5 / "imagesUnlabeled" / "patient100_frame01_0000.nii.gz")[0],
                                      f["image"][()])


def test_acdc_h5_validation_volume_copied(acdc_h5):
    with h5py.File(_acdc_h5() / "data" / "patient085_frame01.h5", "r") as f:
        np.testing.assert_array_equal(_arr(acdc_h5 / "imagesTr" / "patient085_frame01_0000.nii.gz"), f["image"][()])
        np.testing.assert_array_equal(_arr(acdc_h5 / "labelsTr" / "patient085_frame01.nii.gz"), f["label"][()])


# ---- generated h5 releases (malformed inputs, spacing, test.list) ----
def _h5(path: Path, image, label) -> None:
    with h5py.File(path, "w") as f:
        if image is not None:
            f.create_dataset("image", data=image)
        if label is not None:
            f.create_dataset("label", data=label)


def _make_h5_release(root: Path, train=("patient001", "patient002", "patient003"), val=("patient004",),
                     test=("patient005",), slices=3, shape=(8, 6), slices_dir="data") -> Path:
    """SSL4MIS layout with random content: every patient has frame01 and frame02."""
    rng = np.random.default_rng(0)
    (root / "data").mkdir(parents=True)
    (root / slices_dir).mkdir(parents=True, exist_ok=True)
    for role, pats in (("train", train), ("val", val), ("test", test)):
        vols = [f"{p}_frame0{f}" for p in pats for f in (1, 2)]
        (root / f"{role}.list").write_text("\n".join(vols) + "\n")
        for v in vols:
            if role == "train":
                for k in range(1, slices + 1):
                    _h5(root / slices_dir / f"{v}_slice_{k}.h5", rng.random(shape, dtype=np.float32),
                        rng.integers(0, 4, shape, dtype=np.uint8))
            else:
                _h5(root / "data" / f"{v}.h5", rng.random((slices,) + shape, dtype=np.float32),
                    rng.integers(0, 4, (slices,) + shape, dtype=np.uint8))
    return root


def test_acdc_h5_spacing_argument_and_test_list(tmp_path, capsys):
    src = _make_h5_release(tmp_path / "src", slices_dir="data/slices")  # the SSL4MIS repository's slices/ folder
    out = Path(convert_acdc_h5(str(src), labeled_ratio=0.34, seed=3, spacing=(5.0, 1.2, 0.8),
                               output_root=str(tmp_path / "raw")))
    img = sitk.ReadImage(str(out / "imagesTs" / "patient005_frame02_0000.nii.gz"))
    assert img.GetSpacing() == pytest.approx((0.8, 1.2, 5.0)) and img.GetSize() == (6, 8, 3)
    unl = out / "imagesUnlabeled" / (_ids(out / "imagesUnlabeled")[0] + "_0000.nii.gz")
    assert sitk.ReadImage(str(unl)).GetSpacing() == pytest.approx((0.8, 1.2, 5.0))
    assert _ids(out / "imagesTs") == _ids(out / "labelsTs", False) == ["patient005_frame01", "patient005_frame02"]
    info = _dj(out)["nnunet_semi"]
    assert len(info["labeled_patients"]) == 1 and len(info["unlabeled_patients"]) == 2  # floor(0.34 * 3) = 1
    _verify(out, capsys)


def test_acdc_h5_missing_slice_names_first_missing_file(tmp_path):
    src = _make_h5_release(tmp_path / "src", slices=5)
    (src / "data" / "patient002_frame01_slice_2.h5").unlink()
    (src / "data" / "patient002_frame01_slice_4.h5").unlink()
    with pytest.raises(ConversionError, match=r"Slice file missing: .*patient002_frame01_slice_2\.h5"):
        convert_acdc_h5(str(src), num_labeled=1, output_root=str(tmp_path / "raw"))
    assert _nothing_written(tmp_path / "raw")


def test_acdc_h5_volume_without_slices(tmp_path):
    src = _make_h5_release(tmp_path / "src")
    for f in (src / "data").glob("patient003_frame02_slice_*.h5"):
        f.unlink()
    with pytest.raises(ConversionError, match=r"patient003_frame02_slice_1\.h5.*has no slice files"):
        convert_acdc_h5(str(src), num_labeled=1, output_root=str(tmp_path / "raw"))


def test_acdc_h5_slice_listed_but_missing(tmp_path):
    src = _make_h5_release(tmp_path / "src")
    (src / "train_slices.list").write_text("patient001_frame01_slice_4\n")  # listed, not on disk
    with pytest.raises(ConversionError, match=r"patient001_frame01_slice_4\.h5"):
        convert_acdc_h5(str(src), num_labeled=1, output_root=str(tmp_path / "raw"))


def test_acdc_h5_missing_validation_volume(tmp_path):
    src = _make_h5_release(tmp_path / "src")
    (src / "data" / "patient004_frame02.h5").unlink()
    with pytest.raises(ConversionError, match=r"Volume file missing: .*patient004_frame02\.h5 \(listed in val"):
        convert_acdc_h5(str(src), num_labeled=1, output_root=str(tmp_path / "raw"))


def test_acdc_h5_missing_key_leaves_nothing(tmp_path):
    src = _make_h5_release(tmp_path / "src")
    _h5(src / "data" / "patient004_frame01.h5", np.zeros((3, 8, 6), np.float32), None)
    with pytest.raises(ConversionError, match=r"patient004_frame01\.h5: missing key\(s\) \['label'\]"):
        convert_acdc_h5(str(src), num_labeled=1, output_root=str(tmp_path / "raw"))
    assert os.listdir(tmp_path / "raw") == []  # the temporary folder was removed


def test_acdc_h5_bad_label_values(tmp_path):
    src = _make_h5_release(tmp_path / "src")
    _h5(src / "data" / "patient001_frame02_slice_2.h5", np.zeros((8, 6), np.float32), np.full((8, 6), 7, np.uint8))
    with pytest.raises(ConversionError, match=r"patient001_frame02_slice_2\.h5: unexpected label values \[7\]"):
        convert_acdc_h5(str(src), num_labeled=3, output_root=str(tmp_path / "raw"))


def test_acdc_h5_slice_shape_mismatch(tmp_path):
    src = _make_h5_release(tmp_path / "src")
    _h5(src / "data" / "patient001_frame01_slice_3.h5", np.zeros((8, 7), np.float32), np.zeros((8, 7), np.uint8))
    with pytest.raises(ConversionError, match=r"patient001_frame01_slice_3\.h5: slice shape \(8, 7\) differs"):
        convert_acdc_h5(str(src), num_labeled=3, output_root=str(tmp_path / "raw"))


def test_acdc_h5_nan_image(tmp_path):
    src = _make_h5_release(tmp_path / "src")
    _h5(src / "data" / "patient005_frame01.h5", np.full((3, 8, 6), np.nan, np.float32), np.zeros((3, 8, 6), np.uint8))
    with pytest.raises(ConversionError, match=r"patient005_frame01\.h5: 'image' contains NaN"):
        convert_acdc_h5(str(src), num_labeled=1, output_root=str(tmp_path / "raw"))


def test_acdc_h5_missing_train_list(tmp_path):
    src = _make_h5_release(tmp_path / "src")
    (src / "train.list").unlink()
    with pytest.raises(ConversionError, match=r"train\.list not found: .*train\.list"):
        convert_acdc_h5(str(src), num_labeled=1, output_root=str(tmp_path / "raw"))


def test_acdc_h5_patient_in_two_lists(tmp_path):
    src = _make_h5_release(tmp_path / "src")
    (src / "val.list").write_text("patient004_frame01\npatient001_frame01\n")
    with pytest.raises(ConversionError, match="patient001 is in both train.list and val.list"):
        convert_acdc_h5(str(src), num_labeled=1, output_root=str(tmp_path / "raw"))


def test_acdc_h5_bad_list_entry(tmp_path):
    src = _make_h5_release(tmp_path / "src")
    (src / "test.list").write_text("case5\n")
    with pytest.raises(ConversionError, match=r"test\.list: entry 'case5' is not a volume name"):
        convert_acdc_h5(str(src), num_labeled=1, output_root=str(tmp_path / "raw"))


def test_acdc_h5_duplicate_list_entry(tmp_path):
    src = _make_h5_release(tmp_path / "src")
    (src / "val.list").write_text("patient004_frame01\npatient004_frame01\n")
    with pytest.raises(ConversionError, match=r"val\.list lists patient004_frame01 more than once"):
        convert_acdc_h5(str(src), num_labeled=1, output_root=str(tmp_path / "raw"))


def test_acdc_h5_too_many_labeled(tmp_path):
    src = _make_h5_release(tmp_path / "src")
    with pytest.raises(ConversionError, match="has only 3 patients"):
        convert_acdc_h5(str(src), num_labeled=4, output_root=str(tmp_path / "raw"))


def test_acdc_h5_unknown_patient_filter(tmp_path):
    src = _make_h5_release(tmp_path / "src")
    with pytest.raises(ConversionError, match="patients filter names patient999"):
        convert_acdc_h5(str(src), num_labeled=1, output_root=str(tmp_path / "raw"), patients=["patient999"])


def test_acdc_h5_bad_spacing(tmp_path):
    src = _make_h5_release(tmp_path / "src")
    with pytest.raises(ConversionError, match=r"spacing must be three positive numbers \(z, y, x\)"):
        convert_acdc_h5(str(src), num_labeled=1, spacing=(1.5, 1.5), output_root=str(tmp_path / "raw"))


def test_acdc_h5_existing_output_and_overwrite(tmp_path):
    src = _make_h5_release(tmp_path / "src")
    out = convert_acdc_h5(str(src), num_labeled=1, output_root=str(tmp_path / "raw"))
    with pytest.raises(ConversionError, match="already exists"):
        convert_acdc_h5(str(src), num_labeled=2, output_root=str(tmp_path / "raw"))
    assert convert_acdc_h5(str(src), num_labeled=2, output_root=str(tmp_path / "raw"), overwrite=True) == out
    assert len(_dj(Path(out))["nnunet_semi"]["labeled_patients"]) == 2
    assert sorted(os.listdir(tmp_path / "raw")) == ["Dataset027_ACDC"]
    os.rename(out, str(tmp_path / "raw" / "Dataset027_Other"))
    with pytest.raises(ConversionError, match="Dataset id 27 is already used by .*Dataset027_Other"):
        convert_acdc_h5(str(src), num_labeled=1, output_root=str(tmp_path / "raw"))


def test_acdc_cli_h5(tmp_path, capsys):
    src = _make_h5_release(tmp_path / "src")
    acdc_entry(["h5", "-i", str(src), "--labeled", "2", "--spacing", "8", "1", "1", "-d", "127",
                "-o", str(tmp_path / "raw")])
    out = capsys.readouterr().out
    assert "Dataset127_ACDC" in out and "imagesTr: 6 (4 labeled + 2 validation)" in out
    with pytest.raises(SystemExit) as e:
        acdc_entry(["h5", "-i", str(tmp_path / "nope"), "--labeled", "2", "-o", str(tmp_path / "raw2")])
    assert e.value.code == 1 and "ACDC h5 folder not found" in capsys.readouterr().err


# ================================================================================================================
# ACDC, original release (generated files)
# ================================================================================================================
def _make_acdc_original(root: Path, patients=None, frames=5, size=(12, 10, 4)) -> Path:
    """``root/training/patientXXX/`` with Info.cfg, ED/ES frames (+ _gt) cut from a random 4D cine."""
    patients = patients or {f"patient{i:03d}": (1, 3) for i in range(1, 7)}
    rng = np.random.default_rng(1)
    for p, (ed, es) in patients.items():
        d = root / "training" / p
        d.mkdir(parents=True)
        vols = []
        for t in range(frames):
            v = sitk.GetImageFromArray(rng.integers(0, 500, size[::-1], dtype=np.int16))
            v.SetSpacing((1.4, 1.4, 10.0))
            vols.append(v)
        cine = sitk.JoinSeries(vols)
        cine.SetSpacing((1.4, 1.4, 10.0, 1.0))
        sitk.WriteImage(cine, str(d / f"{p}_4d.nii.gz"))
        for fr in (ed, es):
            sitk.WriteImage(vols[fr - 1], str(d / f"{p}_frame{fr:02d}.nii.gz"))
            gt = sitk.GetImageFromArray(rng.integers(0, 4, size[::-1], dtype=np.uint8))
            gt.CopyInformation(vols[fr - 1])
            sitk.WriteImage(gt, str(d / f"{p}_frame{fr:02d}_gt.nii.gz"))
        (d / "Info.cfg").write_text(f"ED: {ed}\nES: {es}\nGroup: NOR\nHeight: 180.0\nNbFrame: {frames}\n"
                                    f"Weight: 75.0\n")
    return root


def test_acdc_original_split_cine_and_integrity(tmp_path, capsys):
    src = _make_acdc_original(tmp_path / "acdc", patients={"patient001": (1, 3), "patient002": (2, 5),
                                                           "patient003": (1, 4), "patient004": (1, 3),
                                                           "patient005": (1, 3)})
    out = Path(convert_acdc_original(str(src), num_labeled=1, num_val=1, num_test=1, include_cine=True, seed=0,
                                     output_root=str(tmp_path / "raw")))
    info = _dj(out)["nnunet_semi"]
    lab, unl = info["labeled_patients"], info["unlabeled_patients"]
    val, test = info["val_patients"], info["test_patients"]
    assert (len(lab), len(unl), len(val), len(test)) == (1, 2, 1, 1)
    assert sorted(lab + unl + val + test) == [f"patient00{i}" for i in range(1, 6)]
    frames = {"patient001": (1, 3), "patient002": (2, 5), "patient003": (1, 4), "patient004": (1, 3),
              "patient005": (1, 3)}

    def cases(pats, which=None):
        return sorted(f"{p}_frame{f:02d}" for p in pats for f in (which(p) if which else frames[p]))

    assert _ids(out / "imagesTr") == cases(lab + val) == _ids(out / "labelsTr", False)
    assert _ids(out / "imagesTs") == cases(test) == _ids(out / "labelsTs", False)
    # unlabeled: ED/ES of the unlabeled patients + every other cine frame of all training patients (not val/test)
    expected_unl = cases(unl) + cases(lab + unl, lambda p: [f for f in range(1, 6) if f not in frames[p]])
    assert _ids(out / "imagesUnlabeled") == sorted(expected_unl)
    assert _splits(out) == [{"train": cases(lab), "val": cases(val)}]
    # images are byte copies; a cine frame equals the 4D file's frame with its geometry
    p = lab[0]
    ed = frames[p][0]
    assert (out / "imagesTr" / f"{p}_frame{ed:02d}_0000.nii.gz").read_bytes() == \
        (src / "training" / p / f"{p}_frame{ed:02d}.nii.gz").read_bytes()
    other = [f for f in range(1, 6) if f not in frames[p]][0]
    cine = _arr(src / "training" / p / f"{p}_4d.nii.gz")
    frame_img = sitk.ReadImage(str(out / "imagesUnlabeled" / f"{p}_frame{other:02d}_0000.nii.gz"))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(frame_img), cine[other - 1])
    assert frame_img.GetSpacing() == pytest.approx((1.4, 1.4, 10.0))
    np.testing.assert_array_equal(_arr(out / "labelsTr" / f"{p}_frame{ed:02d}.nii.gz"),
                                  _arr(src / "training" / p / f"{p}_frame{ed:02d}_gt.nii.gz"))
    assert info["ed_es_frames"]["patient002"] == [2, 5]
    _verify(out, capsys)


def test_acdc_original_split_lists_and_cli(tmp_path, capsys):
    src = _make_acdc_original(tmp_path / "acdc")
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "train.list").write_text("patient004_frame01\npatient004_frame02\npatient001_frame01\n"
                                      "patient001_frame02\npatient002_frame01\n")
    (lists / "val.list").write_text("patient003_frame01\npatient003_frame02\n")
    (lists / "test.list").write_text("patient005_frame01\n")
    acdc_entry(["original", "-i", str(src), "--split-lists", str(lists), "--labeled", "2", "--selection", "list",
                "-o", str(tmp_path / "raw")])
    assert "imagesTr: 6 (4 labeled + 2 validation), imagesTs: 2, imagesUnlabeled: 2" in capsys.readouterr().out
    info = _dj(tmp_path / "raw" / "Dataset027_ACDC")["nnunet_semi"]
    assert info["labeled_patients"] == ["patient001", "patient004"]  # first two in train.list order
    assert info["unlabeled_patients"] == ["patient002"] and info["test_patients"] == ["patient005"]
    assert "patient006" not in json.dumps(info)  # in no list: not converted


def test_acdc_original_missing_info_cfg(tmp_path):
    src = _make_acdc_original(tmp_path / "acdc")
    (src / "training" / "patient003" / "Info.cfg").unlink()
    with pytest.raises(ConversionError, match=r"patient003/Info\.cfg not found"):
        convert_acdc_original(str(src), num_labeled=1, num_val=1, num_test=1, output_root=str(tmp_path / "raw"))
    assert _nothing_written(tmp_path / "raw")


def test_acdc_original_info_cfg_without_es(tmp_path):
    src = _make_acdc_original(tmp_path / "acdc")
    (src / "training" / "patient002" / "Info.cfg").write_text("ED: 1\nGroup: NOR\n")
    with pytest.raises(ConversionError, match=r"patient002/Info\.cfg: needs a line 'ES: <frame number>'"):
        convert_acdc_original(str(src), num_labeled=1, num_val=1, num_test=1, output_root=str(tmp_path / "raw"))


def test_acdc_original_ed_equals_es(tmp_path):
    src = _make_acdc_original(tmp_path / "acdc")
    (src / "training" / "patient005" / "Info.cfg").write_text("ED: 3\nES: 3\n")
    with pytest.raises(ConversionError, match=r"patient005/Info\.cfg: ED and ES are the same frame \(3\)"):
        convert_acdc_original(str(src), num_labeled=1, num_val=1, num_test=1, output_root=str(tmp_path / "raw"))


def test_acdc_original_missing_gt(tmp_path):
    src = _make_acdc_original(tmp_path / "acdc")
    (src / "training" / "patient004" / "patient004_frame03_gt.nii.gz").unlink()
    with pytest.raises(ConversionError, match=r"patient004_frame03_gt\.nii\.gz not found \(frame 3 from Info\.cfg\)"):
        convert_acdc_original(str(src), num_labeled=1, num_val=1, num_test=1, output_root=str(tmp_path / "raw"))


def test_acdc_original_bad_gt_values_leaves_nothing(tmp_path):
    src = _make_acdc_original(tmp_path / "acdc")
    ref = sitk.ReadImage(str(src / "training" / "patient001" / "patient001_frame01.nii.gz"))
    gt = sitk.GetArrayFromImage(ref).astype(np.uint8) * 0 + 5
    img = sitk.GetImageFromArray(gt)
    img.CopyInformation(ref)
    for p in ("patient00%d" % i for i in range(1, 7)):  # whichever patient is labeled, its gt is bad
        sitk.WriteImage(img, str(src / "training" / p / f"{p}_frame01_gt.nii.gz"))
    with pytest.raises(ConversionError, match=r"_frame01_gt\.nii\.gz: unexpected label values \[5\]"):
        convert_acdc_original(str(src), num_labeled=1, num_val=1, num_test=1, output_root=str(tmp_path / "raw"))
    assert os.listdir(tmp_path / "raw") == []


def test_acdc_original_gt_size_mismatch(tmp_path):
    src = _make_acdc_original(tmp_path / "acdc")
    for i in range(1, 7):
        p = f"patient00{i}"
        sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 10, 11), np.uint8)),
                        str(src / "training" / p / f"{p}_frame03_gt.nii.gz"))
    with pytest.raises(ConversionError, match=r"_frame03_gt\.nii\.gz: size \(11, 10, 4\) differs"):
        convert_acdc_original(str(src), num_labeled=1, num_val=1, num_test=1, output_root=str(tmp_path / "raw"))


def test_acdc_original_cine_missing_4d(tmp_path):
    src = _make_acdc_original(tmp_path / "acdc")
    for i in range(1, 7):
        (src / "training" / f"patient00{i}" / f"patient00{i}_4d.nii.gz").unlink()
    with pytest.raises(ConversionError, match=r"_4d\.nii\.gz not found, but include_cine"):
        convert_acdc_original(str(src), num_labeled=1, num_val=1, num_test=1, include_cine=True,
                              output_root=str(tmp_path / "raw"))
    # without the cine option the 4D files are not needed
    convert_acdc_original(str(src), num_labeled=1, num_val=1, num_test=1, output_root=str(tmp_path / "raw"))


def test_acdc_original_cine_too_few_frames(tmp_path):
    src = _make_acdc_original(tmp_path / "acdc", patients={f"patient00{i}": (1, 3) for i in range(1, 5)}, frames=5)
    for i in range(1, 5):
        (src / "training" / f"patient00{i}" / "Info.cfg").write_text("ED: 1\nES: 7\n")
        sitk.WriteImage(sitk.ReadImage(str(src / "training" / f"patient00{i}" / f"patient00{i}_frame03.nii.gz")),
                        str(src / "training" / f"patient00{i}" / f"patient00{i}_frame07.nii.gz"))
        sitk.WriteImage(sitk.ReadImage(str(src / "training" / f"patient00{i}" / f"patient00{i}_frame03_gt.nii.gz")),
                        str(src / "training" / f"patient00{i}" / f"patient00{i}_frame07_gt.nii.gz"))
    with pytest.raises(ConversionError, match=r"_4d\.nii\.gz: has 5 frames, but Info\.cfg names frame 7"):
        convert_acdc_original(str(src), num_labeled=1, num_val=1, num_test=1, include_cine=True,
                              output_root=str(tmp_path / "raw"))


def test_acdc_original_no_patients(tmp_path):
    (tmp_path / "empty" / "training").mkdir(parents=True)
    with pytest.raises(ConversionError, match="No patientXXX folders"):
        convert_acdc_original(str(tmp_path / "empty"), num_labeled=1, output_root=str(tmp_path / "raw"))


def test_acdc_original_split_list_names_unknown_patient(tmp_path):
    src = _make_acdc_original(tmp_path / "acdc")
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "train.list").write_text("patient001_frame01\npatient077_frame01\n")
    (lists / "val.list").write_text("patient002_frame01\n")
    with pytest.raises(ConversionError, match=r"train\.list names patient077, which has no patient folder"):
        convert_acdc_original(str(src), num_labeled=1, split_lists=str(lists), output_root=str(tmp_path / "raw"))


# ================================================================================================================
# LA
# ================================================================================================================
def _make_la_h5(root: Path, train=6, test=2, shape=(12, 10, 8)) -> Path:
    rng = np.random.default_rng(2)
    names = [f"CASE{i:02d}AB" for i in range(train + test)]
    for n in names:
        d = root / "2018LA_Seg_Training Set" / n
        d.mkdir(parents=True)
        _h5(d / "mri_norm2.h5", rng.normal(size=shape).astype(np.float32), rng.integers(0, 2, shape, dtype=np.uint8))
    (root / "train.list").write_text("\n".join(names[:train]) + "\n")
    (root / "test.list").write_text("\n".join(names[train:]) + "\n")
    return root


def test_la_h5_axes_spacing_split_and_integrity(tmp_path, capsys):
    src = _make_la_h5(tmp_path / "la")
    out = Path(convert_la_h5(str(src), num_labeled=2, selection="list", output_root=str(tmp_path / "raw")))
    assert out.name == "Dataset028_LA"
    assert _ids(out / "imagesTr") == ["CASE00AB", "CASE01AB"] == _splits(out)[0]["train"] == _splits(out)[0]["val"]
    assert _ids(out / "imagesTs") == ["CASE06AB", "CASE07AB"] == _ids(out / "labelsTs", False)
    assert _ids(out / "imagesUnlabeled") == [f"CASE0{i}AB" for i in range(2, 6)]
    img = sitk.ReadImage(str(out / "imagesTr" / "CASE01AB_0000.nii.gz"))
    assert img.GetSize() == (12, 10, 8) and img.GetSpacing() == pytest.approx((0.625,) * 3)  # (x, y, z) arrays
    with h5py.File(src / "2018LA_Seg_Training Set" / "CASE01AB" / "mri_norm2.h5", "r") as f:
        np.testing.assert_array_equal(sitk.GetArrayFromImage(img), f["image"][()].transpose(2, 1, 0))
        np.testing.assert_array_equal(_arr(out / "labelsTr" / "CASE01AB.nii.gz"), f["label"][()].transpose(2, 1, 0))
    dj = _dj(out)
    assert dj["labels"] == {"background": 0, "left_atrium": 1} and dj["nnunet_semi"]["val_is_train"] is True
    _verify(out, capsys)


def test_la_h5_validation_from_pool_and_cli(tmp_path, capsys):
    src = _make_la_h5(tmp_path / "la")
    la_entry(["h5", "-i", str(src), "--ratio", "0.4", "--val", "1", "--seed", "4", "-o", str(tmp_path / "raw")])
    # the ratio applies to the training pool left after the validation case: floor(0.4 * 5) = 2
    assert "imagesTr: 3 (2 labeled + 1 validation), imagesTs: 2, imagesUnlabeled: 3" in capsys.readouterr().out
    split = _splits(tmp_path / "raw" / "Dataset028_LA")[0]
    assert len(split["train"]) == 2 and len(split["val"]) == 1 and not set(split["train"]) & set(split["val"])


def test_la_h5_missing_case_file(tmp_path):
    src = _make_la_h5(tmp_path / "la")
    os.remove(src / "2018LA_Seg_Training Set" / "CASE03AB" / "mri_norm2.h5")
    with pytest.raises(ConversionError, match=r"CASE03AB/mri_norm2\.h5 not found .*but CASE03AB is listed"):
        convert_la_h5(str(src), num_labeled=2, output_root=str(tmp_path / "raw"))


def test_la_h5_missing_key(tmp_path):
    src = _make_la_h5(tmp_path / "la")
    _h5(src / "2018LA_Seg_Training Set" / "CASE06AB" / "mri_norm2.h5", None, np.zeros((4, 4, 4), np.uint8))
    with pytest.raises(ConversionError, match=r"CASE06AB/mri_norm2\.h5: missing key\(s\) \['image'\]"):
        convert_la_h5(str(src), num_labeled=2, output_root=str(tmp_path / "raw"))
    assert os.listdir(tmp_path / "raw") == []


def test_la_h5_bad_label_values(tmp_path):
    src = _make_la_h5(tmp_path / "la")
    _h5(src / "2018LA_Seg_Training Set" / "CASE07AB" / "mri_norm2.h5", np.zeros((4, 4, 4), np.float32),
        np.full((4, 4, 4), 2, np.uint8))
    with pytest.raises(ConversionError, match=r"CASE07AB/mri_norm2\.h5: unexpected label values \[2\]"):
        convert_la_h5(str(src), num_labeled=2, output_root=str(tmp_path / "raw"))


def test_la_h5_case_in_both_lists(tmp_path):
    src = _make_la_h5(tmp_path / "la")
    (src / "test.list").write_text("CASE00AB\n")
    with pytest.raises(ConversionError, match="CASE00AB is in both train.list and test.list"):
        convert_la_h5(str(src), num_labeled=2, output_root=str(tmp_path / "raw"))


def test_la_h5_too_many_labeled(tmp_path):
    src = _make_la_h5(tmp_path / "la")
    with pytest.raises(ConversionError, match="has only 6 patients"):
        convert_la_h5(str(src), num_labeled=8, output_root=str(tmp_path / "raw"))


def _make_la_nrrd(root: Path, n=6, size=(10, 9, 7)) -> Path:
    rng = np.random.default_rng(3)
    for i in range(n):
        d = root / "Training Set" / f"LA{i:02d}XYZ"
        d.mkdir(parents=True)
        img = sitk.GetImageFromArray(rng.integers(0, 255, size[::-1], dtype=np.uint8))
        img.SetSpacing((0.625, 0.625, 0.625))
        img.SetOrigin((1.0, 2.0, 3.0))
        sitk.WriteImage(img, str(d / "lgemri.nrrd"))
        lab = sitk.GetImageFromArray((rng.random(size[::-1]) > 0.5).astype(np.uint8) * 255)
        lab.CopyInformation(img)
        sitk.WriteImage(lab, str(d / "laendo.nrrd"))
    return root


def test_la_nrrd_split_labels_and_integrity(tmp_path, capsys):
    src = _make_la_nrrd(tmp_path / "la")
    out = Path(convert_la_nrrd(str(src), num_labeled=2, num_val=1, num_test=2, seed=1,
                               output_root=str(tmp_path / "raw")))
    info = _dj(out)["nnunet_semi"]
    assert (len(info["labeled"]), len(info["val"]), len(info["test"]), len(info["unlabeled"])) == (2, 1, 2, 1)
    assert _splits(out) == [{"train": info["labeled"], "val": info["val"]}]
    c = info["labeled"][0]
    lab = _arr(out / "labelsTr" / f"{c}.nii.gz")
    assert lab.dtype == np.uint8 and set(np.unique(lab)) == {0, 1}
    np.testing.assert_array_equal(lab, _arr(src / "Training Set" / c / "laendo.nrrd") // 255)
    img = sitk.ReadImage(str(out / "imagesTr" / f"{c}_0000.nii.gz"))
    assert img.GetOrigin() == pytest.approx((1.0, 2.0, 3.0)) and img.GetSpacing() == pytest.approx((0.625,) * 3)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(img), _arr(src / "Training Set" / c / "lgemri.nrrd"))
    _verify(out, capsys)


def test_la_nrrd_split_lists_and_cli(tmp_path, capsys):
    src = _make_la_nrrd(tmp_path / "la")
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "train.list").write_text("LA03XYZ\nLA01XYZ\nLA02XYZ\n")
    (lists / "test.list").write_text("LA05XYZ\n")
    la_entry(["nrrd", "-i", str(src / "Training Set"), "--split-lists", str(lists), "--labeled", "1",
              "--selection", "list", "-o", str(tmp_path / "raw")])
    assert "imagesTr: 1 (1 labeled + 0 validation, val = labeled), imagesTs: 1, imagesUnlabeled: 2" in \
        capsys.readouterr().out
    info = _dj(tmp_path / "raw" / "Dataset028_LA")["nnunet_semi"]
    assert info["labeled"] == ["LA03XYZ"] and info["unlabeled"] == ["LA01XYZ", "LA02XYZ"]


def test_la_nrrd_bad_label_values(tmp_path):
    src = _make_la_nrrd(tmp_path / "la")
    for d in (src / "Training Set").iterdir():
        ref = sitk.ReadImage(str(d / "lgemri.nrrd"))
        lab = sitk.GetImageFromArray(np.full(sitk.GetArrayFromImage(ref).shape, 128, np.uint8))
        lab.CopyInformation(ref)
        sitk.WriteImage(lab, str(d / "laendo.nrrd"))
    with pytest.raises(ConversionError, match=r"laendo\.nrrd: unexpected label values \[128\]"):
        convert_la_nrrd(str(src), num_labeled=2, num_test=2, output_root=str(tmp_path / "raw"))
    assert os.listdir(tmp_path / "raw") == []


def test_la_nrrd_missing_label(tmp_path):
    src = _make_la_nrrd(tmp_path / "la", n=3)
    for d in (src / "Training Set").iterdir():
        (d / "laendo.nrrd").unlink()
    with pytest.raises(ConversionError, match=r"laendo\.nrrd not found, but case LA0\dXYZ needs its label"):
        convert_la_nrrd(str(src), num_labeled=1, num_test=1, output_root=str(tmp_path / "raw"))


def test_la_nrrd_label_size_mismatch(tmp_path):
    src = _make_la_nrrd(tmp_path / "la", n=3)
    for d in (src / "Training Set").iterdir():
        sitk.WriteImage(sitk.GetImageFromArray(np.zeros((7, 9, 11), np.uint8)), str(d / "laendo.nrrd"))
    with pytest.raises(ConversionError, match=r"laendo\.nrrd: size \(11, 9, 7\) differs"):
        convert_la_nrrd(str(src), num_labeled=1, num_test=1, output_root=str(tmp_path / "raw"))


def test_la_cli_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        la_entry(["nrrd", "-i", str(tmp_path / "nope"), "--labeled", "4", "-o", str(tmp_path / "raw")])
    assert e.value.code == 1 and "LA folder not found" in capsys.readouterr().err


def test_la_nrrd_no_cases(tmp_path):
    (tmp_path / "la" / "Training Set").mkdir(parents=True)
    with pytest.raises(ConversionError, match=r"No case folders with lgemri\.nrrd"):
        convert_la_nrrd(str(tmp_path / "la"), num_labeled=1, output_root=str(tmp_path / "raw"))


# ================================================================================================================
# MM-WHS
# ================================================================================================================
CODES = sorted(CODE_TO_LABEL)


def _make_mmwhs(root: Path, modality="ct", train=4, test=2, size=(9, 8, 6)) -> Path:
    rng = np.random.default_rng(4)
    for kind, n, start in (("train", train, 1001), ("test", test, 2001)):
        d = root / f"{modality}_{kind}"
        d.mkdir(parents=True, exist_ok=True)
        for i in range(start, start + n):
            img = sitk.GetImageFromArray(rng.integers(-1000, 1000, size[::-1], dtype=np.int16))
            img.SetSpacing((0.4, 0.4, 0.6))
            sitk.WriteImage(img, str(d / f"{modality}_{kind}_{i}_image.nii.gz"))
            if kind == "train":
                lab = sitk.GetImageFromArray(rng.choice([0] + CODES, size[::-1]).astype(np.int16))
                lab.CopyInformation(img)
                sitk.WriteImage(lab, str(d / f"{modality}_{kind}_{i}_label.nii.gz"))
    return root


def test_mmwhs_label_mapping_split_and_integrity(tmp_path, capsys):
    src = _make_mmwhs(tmp_path / "mmwhs")
    out = Path(convert_mmwhs(str(src), "ct", num_labeled=1, num_val=1, num_test=1, seed=0,
                             output_root=str(tmp_path / "raw")))
    assert out.name == "Dataset029_MMWHS_CT"
    dj = _dj(out)
    assert dj["labels"] == MMWHS_LABELS == {"background": 0, "LV_myocardium": 1, "LA": 2, "LV_blood_cavity": 3,
                                            "RA": 4, "RV": 5, "ascending_aorta": 6, "pulmonary_artery": 7}
    assert dj["channel_names"] == {"0": "CT"}
    info = dj["nnunet_semi"]
    assert (len(info["labeled"]), len(info["val"]), len(info["test"])) == (1, 1, 1)
    assert _ids(out / "imagesUnlabeled") == sorted([c for c in [f"ct_train_{i}" for i in range(1001, 1005)]
                                                    if c not in info["labeled"] + info["val"] + info["test"]]
                                                   + ["ct_test_2001", "ct_test_2002"])
    c = info["labeled"][0]
    raw = _arr(src / "ct_train" / f"{c}_label.nii.gz")
    mapped = _arr(out / "labelsTr" / f"{c}.nii.gz")
    assert mapped.dtype == np.uint8
    for code, label in CODE_TO_LABEL.items():
        assert np.array_equal(mapped == label, raw == code)
    assert (out / "imagesTr" / f"{c}_0000.nii.gz").read_bytes() == \
        (src / "ct_train" / f"{c}_image.nii.gz").read_bytes()
    _verify(out, capsys)


def test_mmwhs_mr_and_cli(tmp_path, capsys):
    src = _make_mmwhs(tmp_path / "mmwhs", "mr", train=3, test=1)
    _make_mmwhs(tmp_path / "mmwhs", "ct", train=1, test=1)  # other modality beside it: ignored
    mmwhs_entry(["-i", str(src), "-m", "mr", "--labeled", "2", "--no-test-images", "-o", str(tmp_path / "raw")])
    assert "imagesTr: 2 (2 labeled + 0 validation, val = labeled), imagesTs: 0, imagesUnlabeled: 1" in \
        capsys.readouterr().out
    out = tmp_path / "raw" / "Dataset030_MMWHS_MR"
    assert _dj(out)["channel_names"] == {"0": "MRI"} and all(c.startswith("mr_") for c in _ids(out / "imagesTr"))


def test_mmwhs_unknown_label_value(tmp_path):
    src = _make_mmwhs(tmp_path / "mmwhs", train=2, test=0)
    path = src / "ct_train" / "ct_train_1002_label.nii.gz"
    lab = sitk.ReadImage(str(path))
    arr = sitk.GetArrayFromImage(lab)
    arr[0, 0, :2] = (421, 999)
    new = sitk.GetImageFromArray(arr)
    new.CopyInformation(lab)
    sitk.WriteImage(new, str(path))
    with pytest.raises(ConversionError, match=r"ct_train_1002_label\.nii\.gz: unknown label values \[421, 999\]"):
        convert_mmwhs(str(src), num_labeled=2, output_root=str(tmp_path / "raw"))
    assert os.listdir(tmp_path / "raw") == []
    out = Path(convert_mmwhs(str(src), num_labeled=2, extra_codes={421: 2, 999: 7},
                             output_root=str(tmp_path / "raw")))
    mapped = _arr(out / "labelsTr" / "ct_train_1002.nii.gz")
    assert mapped[0, 0, 0] == 2 and mapped[0, 0, 1] == 7


def test_mmwhs_non_integer_label_values(tmp_path):
    src = _make_mmwhs(tmp_path / "mmwhs", train=2, test=0)
    path = src / "ct_train" / "ct_train_1001_label.nii.gz"
    ref = sitk.ReadImage(str(path))
    arr = sitk.GetArrayFromImage(ref).astype(np.float32)
    arr[0, 0, 0] = 204.5
    new = sitk.GetImageFromArray(arr)
    new.CopyInformation(ref)
    sitk.WriteImage(new, str(path))
    with pytest.raises(ConversionError, match=r"ct_train_1001_label\.nii\.gz: non-integer label values \[204\.5\]"):
        convert_mmwhs(str(src), num_labeled=2, output_root=str(tmp_path / "raw"))


def test_mmwhs_cli_bad_map(tmp_path, capsys):
    src = _make_mmwhs(tmp_path / "mmwhs", train=1, test=0)
    with pytest.raises(SystemExit) as e:
        mmwhs_entry(["-i", str(src), "--labeled", "1", "--map", "421:2", "-o", str(tmp_path / "raw")])
    assert e.value.code == 1 and "--map expects CODE=LABEL" in capsys.readouterr().err


def test_mmwhs_missing_label(tmp_path):
    src = _make_mmwhs(tmp_path / "mmwhs", train=2, test=0)
    (src / "ct_train" / "ct_train_1001_label.nii.gz").unlink()
    with pytest.raises(ConversionError, match=r"Label missing for .*ct_train_1001_image\.nii\.gz"):
        convert_mmwhs(str(src), num_labeled=1, output_root=str(tmp_path / "raw"))


def test_mmwhs_label_without_image(tmp_path):
    src = _make_mmwhs(tmp_path / "mmwhs", train=2, test=0)
    (src / "ct_train" / "ct_train_1002_image.nii.gz").unlink()
    with pytest.raises(ConversionError, match=r"ct_train_1002_label\.nii\.gz has no image"):
        convert_mmwhs(str(src), num_labeled=1, output_root=str(tmp_path / "raw"))


def test_mmwhs_label_size_mismatch(tmp_path):
    src = _make_mmwhs(tmp_path / "mmwhs", train=2, test=0)
    for i in (1001, 1002):
        sitk.WriteImage(sitk.GetImageFromArray(np.zeros((6, 8, 8), np.int16)),
                        str(src / "ct_train" / f"ct_train_{i}_label.nii.gz"))
    with pytest.raises(ConversionError, match=r"_label\.nii\.gz: size \(8, 8, 6\) differs"):
        convert_mmwhs(str(src), num_labeled=1, output_root=str(tmp_path / "raw"))


def test_mmwhs_no_files_and_bad_options(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConversionError, match=r"No ct_train_NNNN_image\.nii\.gz files"):
        convert_mmwhs(str(tmp_path / "empty"), num_labeled=1, output_root=str(tmp_path / "raw"))
    with pytest.raises(ConversionError, match="modality must be 'ct' or 'mr'"):
        convert_mmwhs(str(tmp_path / "empty"), "pet", num_labeled=1, output_root=str(tmp_path / "raw"))
    with pytest.raises(ConversionError, match="already a standard MM-WHS code"):
        convert_mmwhs(str(tmp_path / "empty"), num_labeled=1, extra_codes={205: 1}, output_root=str(tmp_path / "r"))
