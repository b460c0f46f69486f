"""NIH Pancreas-CT (TCIA DICOM release and the UA-MT family's h5 release) and the MSD Prostate preset of Chaitanya et
al. 2023. Every source is generated here in the release's layout with tiny random volumes (DICOM series written
with SimpleITK, HU stored through rescale intercept / slope), never real dataset content. One test per malformed
input; each checks that nothing is left in the output root."""
import json
import locale
import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import SimpleITK as sitk

from dataset_conversion.common import ConversionError, keeps_locale, num_from_ratio
from dataset_conversion.msd import PRESETS, convert_msd_entry, convert_msd_preset, convert_msd_semi
from dataset_conversion.pancreas import (LABELS_FOLDER, convert_pancreas_dicom, convert_pancreas_h5,
                                         pancreas_entry)

SPACING_XYZ = (0.7, 0.8, 2.5)  # SimpleITK order
SIZE_XYZ = (16, 16, 6)
UID = "1.2.826.0.1.3680043.2.1125.9"


def _ids(folder: Path, channel: bool = True) -> list:
    suffix = "_0000.nii.gz" if channel else ".nii.gz"
    return sorted(f.name[:-len(suffix)] for f in folder.iterdir() if f.name.endswith(suffix))


def _arr(path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def _dj(folder: Path) -> dict:
    return json.loads((folder / "dataset.json").read_text())


def _splits(folder: Path) -> list:
    return json.loads((folder / "splits_final.json").read_text())


def _verify(folder: Path, capsys) -> None:
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity
    capsys.readouterr()
    verify_dataset_integrity(str(folder), num_processes=1)  # raises on errors
    out = capsys.readouterr().out
    assert "Warning" not in out and "Error" not in out, out


def _nothing_written(root: Path) -> bool:
    """No dataset and no hidden temporary folder in the output root."""
    return not root.exists() or os.listdir(root) == []


# ================================================================================================================
# NIH Pancreas-CT, TCIA release (generated DICOM series + NIfTI labels)
# ================================================================================================================
@keeps_locale()  # GDCM sets LC_ALL=C; the rest of the test session must keep its locale
def _write_series(folder: Path, hu_zyx: np.ndarray, origin, series_uid: str, intercept=-1024, slope=1) -> None:
    """One axial CT series, a file per slice, named in reverse slice order (the reader must sort by position)."""
    folder.mkdir(parents=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    nz = hu_zyx.shape[0]
    for k in range(nz):
        sl = sitk.GetImageFromArray(hu_zyx[k])  # the writer stores (HU - intercept) / slope (float HU for slope < 1)
        sl.SetSpacing(SPACING_XYZ[:2])
        tags = {
            "0008|0060": "CT", "0008|0016": "1.2.840.10008.5.1.4.1.1.2", "0008|0018": f"{series_uid}.{k + 1}",
            "0020|000d": f"{series_uid}.0", "0020|000e": series_uid, "0020|0013": str(k + 1),
            "0020|0032": "\\".join(f"{v:g}" for v in (origin[0], origin[1], origin[2] + k * SPACING_XYZ[2])),
            "0020|0037": "1\\0\\0\\0\\1\\0", "0018|0050": f"{SPACING_XYZ[2]:g}",
            "0028|0030": f"{SPACING_XYZ[1]:g}\\{SPACING_XYZ[0]:g}",
            "0028|1052": str(intercept), "0028|1053": str(slope), "0028|1054": "HU",
        }
        if hu_zyx.dtype.kind == "f":  # stored as 16-bit signed integers, (HU - intercept) / slope
            tags.update({"0028|0100": "16", "0028|0101": "16", "0028|0102": "15", "0028|0103": "1"})
        for tag, value in tags.items():
            sl.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"1-{nz - k:02d}.dcm"))
        writer.Execute(sl)


def _label_image(arr_zyx: np.ndarray, origin):
    lab = sitk.GetImageFromArray(arr_zyx.astype(np.uint8))
    lab.SetSpacing(SPACING_XYZ)
    lab.SetOrigin(origin)
    return lab


def _make_tcia(root: Path, n: int = 7, flipped_label: int = 2) -> dict:
    """``root/Pancreas-CT/PANCREAS_000k/<study>/<series>/*.dcm`` + ``root/<labels>/label000k.nii.gz``; patient
    ``flipped_label``'s label is stored with its z axis reversed (direction -z, origin at the last slice).
    Returns patient -> (HU array, label array, origin)."""
    rng = np.random.default_rng(7)
    (root / LABELS_FOLDER).mkdir(parents=True)
    truth = {}
    for i in range(1, n + 1):
        p = f"PANCREAS_{i:04d}"
        hu = rng.integers(-1024, 1600, SIZE_XYZ[::-1]).astype(np.int16)
        lab = np.zeros(SIZE_XYZ[::-1], np.uint8)
        lab[1:4, 3:9 + i % 3, 4:10] = 1
        origin = (-120.0 + i, -150.5, 40.0 * i)
        _write_series(root / "Pancreas-CT" / p / f"11-24-2015-PANCREAS{i:04d}-Pancreas-{i}" /
                      f"Pancreas-{i:05d}", hu, origin, f"{UID}.{i}")
        img = _label_image(lab, origin)
        if i == flipped_label:
            img = _label_image(lab[::-1], (origin[0], origin[1], origin[2] + (SIZE_XYZ[2] - 1) * SPACING_XYZ[2]))
            img.SetDirection((1, 0, 0, 0, 1, 0, 0, 0, -1))
        sitk.WriteImage(img, str(root / LABELS_FOLDER / f"label{i:04d}.nii.gz"))
        truth[p] = (hu, lab, origin)
    return truth


@pytest.fixture(scope="module")
def tcia(tmp_path_factory):
    root = tmp_path_factory.mktemp("tcia")
    return root, _make_tcia(root)


def test_pancreas_dicom_hu_geometry_split_and_integrity(tcia, tmp_path, capsys):
    root, truth = tcia
    before = locale.setlocale(locale.LC_ALL)
    out = Path(convert_pancreas_dicom(str(root / "Pancreas-CT"), num_labeled=2, num_val=1, num_test=2, seed=0,
                                      output_root=str(tmp_path)))
    assert locale.setlocale(locale.LC_ALL) == before  # GDCM's LC_ALL=C does not leak out of the converter
    assert out.name == "Dataset031_Pancreas"
    info = _dj(out)["nnunet_semi"]
    lab, val, test, unl = info["labeled"], info["val"], info["test"], info["unlabeled"]
    assert (len(lab), len(val), len(test), len(unl)) == (2, 1, 2, 2)
    assert sorted(lab + val + test + unl) == sorted(truth)
    assert _ids(out / "imagesTr") == sorted(lab + val) == _ids(out / "labelsTr", False)
    assert _ids(out / "imagesTs") == test == _ids(out / "labelsTs", False)
    assert _ids(out / "imagesUnlabeled") == unl
    assert _splits(out) == [{"train": lab, "val": val}]
    assert info["labels_folder"] == str(root / LABELS_FOLDER)  # found beside Pancreas-CT
    for folder in ("imagesTr", "imagesTs", "imagesUnlabeled"):
        for p in _ids(out / folder):
            hu, seg, origin = truth[p]
            img = sitk.ReadImage(str(out / folder / f"{p}_0000.nii.gz"))
            assert img.GetPixelID() == sitk.sitkInt16
            np.testing.assert_array_equal(sitk.GetArrayFromImage(img), hu)  # HU kept, slices in position order
            assert img.GetSpacing() == pytest.approx(SPACING_XYZ) and img.GetOrigin() == pytest.approx(origin)
            if folder != "imagesUnlabeled":
                lab_path = out / folder.replace("images", "labels") / f"{p}.nii.gz"
                np.testing.assert_array_equal(_arr(lab_path), seg)
    dj = _dj(out)
    assert dj["labels"] == {"background": 0, "pancreas": 1} and dj["channel_names"] == {"0": "CT"}
    assert dj["numTraining"] == 3
    _verify(out, capsys)


def test_pancreas_dicom_flipped_label_is_reoriented(tcia, tmp_path):
    """PANCREAS_0002's label file stores z reversed; on the image grid it is the original mask, voxel for voxel."""
    root, truth = tcia
    out = Path(convert_pancreas_dicom(str(root), num_labeled=3, num_test=1, cases=["PANCREAS_0002", "PANCREAS_0003",
                                      "PANCREAS_0004", "PANCREAS_0005"], selection="list", output_root=str(tmp_path)))
    folder = "labelsTr" if "PANCREAS_0002" in _ids(out / "labelsTr", False) else "labelsTs"
    lab = sitk.ReadImage(str(out / folder / "PANCREAS_0002.nii.gz"))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(lab), truth["PANCREAS_0002"][1])
    assert lab.GetDirection() == pytest.approx((1, 0, 0, 0, 1, 0, 0, 0, 1))
    assert lab.GetOrigin() == pytest.approx(truth["PANCREAS_0002"][2])


def test_pancreas_dicom_fractional_rescale_slope_gives_float_hu(tmp_path):
    """A series stored with slope 0.5 reads back as float HU (float32 in the output), half-HU values exact."""
    hu = (np.arange(np.prod(SIZE_XYZ)).reshape(SIZE_XYZ[::-1]) % 700 - 300).astype(np.int16)
    _write_series(tmp_path / "Pancreas-CT" / "PANCREAS_0009" / "study" / "series", hu.astype(np.float32) / 2,
                  (1.0, 2.0, 3.0), f"{UID}.9", slope=0.5)
    (tmp_path / LABELS_FOLDER).mkdir()
    sitk.WriteImage(_label_image(hu > 0, (1.0, 2.0, 3.0)), str(tmp_path / LABELS_FOLDER / "label0009.nii.gz"))
    out = Path(convert_pancreas_dicom(str(tmp_path / "Pancreas-CT"), num_labeled=1, num_test=0,
                                      output_root=str(tmp_path / "raw")))
    img = sitk.ReadImage(str(out / "imagesTr" / "PANCREAS_0009_0000.nii.gz"))
    assert img.GetPixelID() == sitk.sitkFloat32
    np.testing.assert_array_equal(sitk.GetArrayFromImage(img), hu.astype(np.float32) / 2)
    np.testing.assert_array_equal(_arr(out / "labelsTr" / "PANCREAS_0009.nii.gz"), (hu > 0).astype(np.uint8))


def test_pancreas_dicom_split_lists_ratio_and_cli(tcia, tmp_path, capsys):
    """The h5 release's lists (image000k entries) give the split; 0.4 of 5 training patients = 2 labeled."""
    root, _ = tcia
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "train.list").write_text("image0005\nimage0001\nimage0003\nimage0007\nimage0006\n")
    (lists / "test.list").write_text("image0002\nimage0004\n")
    pancreas_entry(["dicom", "-i", str(root), "--split-lists", str(lists), "--ratio", "0.4", "--selection", "list",
                    "-d", "131", "-o", str(tmp_path / "raw")])
    assert "imagesTr: 2 (2 labeled + 0 validation, val = labeled), imagesTs: 2, imagesUnlabeled: 3" in \
        capsys.readouterr().out
    out = tmp_path / "raw" / "Dataset131_Pancreas"
    info = _dj(out)["nnunet_semi"]
    assert info["labeled"] == ["PANCREAS_0001", "PANCREAS_0005"]  # first two of train.list
    assert info["test"] == ["PANCREAS_0002", "PANCREAS_0004"]
    assert info["unlabeled"] == ["PANCREAS_0003", "PANCREAS_0006", "PANCREAS_0007"]
    with pytest.raises(SystemExit) as e:
        pancreas_entry(["dicom", "-i", str(tmp_path / "nope"), "--labeled", "2", "-o", str(tmp_path / "raw2")])
    assert e.value.code == 1 and "Pancreas-CT folder not found" in capsys.readouterr().err
    # the console script (not in an editable install made before it existed) points at this function
    setup_py = (Path(__file__).resolve().parents[2] / "setup.py").read_text()
    assert '"nnunet_semi_convert_pancreas=dataset_conversion.pancreas:pancreas_entry"' in setup_py


def test_pancreas_dicom_seeded_split_default_counts(tcia, tmp_path):
    """Default num_test = 20 needs more patients than 7: the error names the pool; counts are seeded."""
    root, _ = tcia
    with pytest.raises(ConversionError, match=r"has 7 patients, but num_val \+ num_test = 0 \+ 20"):
        convert_pancreas_dicom(str(root), num_labeled=1, output_root=str(tmp_path / "raw"))
    a = convert_pancreas_dicom(str(root), num_labeled=1, num_test=2, seed=3, output_root=str(tmp_path / "a"))
    b = convert_pancreas_dicom(str(root), num_labeled=1, num_test=2, seed=3, output_root=str(tmp_path / "b"))
    assert _dj(Path(a))["nnunet_semi"]["test"] == _dj(Path(b))["nnunet_semi"]["test"]
    assert _dj(Path(a))["nnunet_semi"]["labeled"] == _dj(Path(b))["nnunet_semi"]["labeled"]


# ---- malformed TCIA inputs ----
def _small_tcia(tmp_path: Path, n: int = 4) -> Path:
    root = tmp_path / "tcia"
    _make_tcia(root, n=n, flipped_label=0)
    return root


def test_pancreas_dicom_missing_series(tmp_path):
    root = _small_tcia(tmp_path)
    series = next((root / "Pancreas-CT" / "PANCREAS_0003").glob("*/*"))
    for f in series.iterdir():
        f.unlink()
    with pytest.raises(ConversionError, match=r"PANCREAS_0003: no DICOM series found"):
        convert_pancreas_dicom(str(root), num_labeled=1, num_test=1, output_root=str(tmp_path / "raw"))
    assert _nothing_written(tmp_path / "raw")


def test_pancreas_dicom_two_series_in_one_patient(tmp_path):
    root = _small_tcia(tmp_path)
    study = next((root / "Pancreas-CT" / "PANCREAS_0001").iterdir())
    _write_series(study / "second", np.zeros(SIZE_XYZ[::-1], np.int16), (0, 0, 0), f"{UID}.99")
    with pytest.raises(ConversionError, match=r"PANCREAS_0001: 2 DICOM series .*one CT series per patient"):
        convert_pancreas_dicom(str(root), num_labeled=1, num_test=1, output_root=str(tmp_path / "raw"))
    assert _nothing_written(tmp_path / "raw")


@pytest.mark.parametrize("what", ["origin", "size"])
def test_pancreas_dicom_label_geometry_mismatch(tmp_path, what):
    root = _small_tcia(tmp_path)
    for i in range(1, 5):  # whichever patients are labeled / test, their label does not fit
        path = root / LABELS_FOLDER / f"label{i:04d}.nii.gz"
        lab = sitk.ReadImage(str(path))
        if what == "origin":
            lab.SetOrigin(tuple(np.add(lab.GetOrigin(), (0.0, 0.0, 5.0))))  # two slices off
        else:
            lab = _label_image(np.zeros((7, 16, 16), np.uint8), lab.GetOrigin())
        sitk.WriteImage(lab, str(path))
    with pytest.raises(ConversionError, match=rf"label000\d\.nii\.gz: label geometry differs from the CT series "
                                              rf".*{what} "):
        convert_pancreas_dicom(str(root), num_labeled=1, num_test=1, output_root=str(tmp_path / "raw"))
    assert _nothing_written(tmp_path / "raw")


def test_pancreas_dicom_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConversionError, match=r"No PANCREAS_NNNN patient folders in .*empty"):
        convert_pancreas_dicom(str(tmp_path / "empty"), num_labeled=1, output_root=str(tmp_path / "raw"))
    assert _nothing_written(tmp_path / "raw")


def test_pancreas_dicom_unknown_label_values(tmp_path):
    root = _small_tcia(tmp_path)
    for i in range(1, 5):
        path = root / LABELS_FOLDER / f"label{i:04d}.nii.gz"
        lab = sitk.ReadImage(str(path))
        arr = sitk.GetArrayFromImage(lab)
        arr[0, 0, 0] = 2
        bad = sitk.GetImageFromArray(arr)
        bad.CopyInformation(lab)
        sitk.WriteImage(bad, str(path))
    with pytest.raises(ConversionError, match=r"label000\d\.nii\.gz: unknown label values \[2\]; expected only "
                                              r"0 background, 1 pancreas"):
        convert_pancreas_dicom(str(root), num_labeled=1, num_test=1, output_root=str(tmp_path / "raw"))
    assert _nothing_written(tmp_path / "raw")


def test_pancreas_dicom_missing_label_file_and_folder(tmp_path):
    root = _small_tcia(tmp_path)
    (root / LABELS_FOLDER / "label0004.nii.gz").unlink()
    with pytest.raises(ConversionError, match=r"label0004\.nii\.gz not found, but patient PANCREAS_0004 needs"):
        convert_pancreas_dicom(str(root), num_labeled=3, num_test=1, output_root=str(tmp_path / "raw"))
    # unlabeled patients do not need their label
    out = convert_pancreas_dicom(str(root), num_labeled=1, num_test=1, cases=["PANCREAS_0001", "PANCREAS_0002",
                                 "PANCREAS_0003"], output_root=str(tmp_path / "ok"))
    assert len(_ids(Path(out) / "imagesUnlabeled")) == 1
    os.rename(root / LABELS_FOLDER, tmp_path / "elsewhere")
    with pytest.raises(ConversionError, match=rf"No label folder: {LABELS_FOLDER} is neither in"):
        convert_pancreas_dicom(str(root), num_labeled=1, num_test=1, output_root=str(tmp_path / "raw"))
    assert _nothing_written(tmp_path / "raw")


def test_pancreas_dicom_split_list_unknown_entry(tcia, tmp_path):
    root, _ = tcia
    (tmp_path / "train.list").write_text("image0001\nimage0042\n")
    (tmp_path / "test.list").write_text("image0002\n")
    with pytest.raises(ConversionError, match=r"train\.list names 'image0042', which matches no PANCREAS_NNNN"):
        convert_pancreas_dicom(str(root), num_labeled=1, split_lists=str(tmp_path),
                               output_root=str(tmp_path / "raw"))
    assert _nothing_written(tmp_path / "raw")


# ================================================================================================================
# NIH Pancreas-CT, h5 release (UA-MT family)
# ================================================================================================================
def _make_h5(root: Path, train=6, test=2, shape=(12, 10, 8), folder="Pancreas_h5", entry="image{:04d}") -> dict:
    """``train.list`` / ``test.list`` + ``<folder>/image000k_norm.h5``; arrays in (x, y, z) order."""
    rng = np.random.default_rng(3)
    (root / folder).mkdir(parents=True, exist_ok=True)
    names = [f"image{i:04d}" for i in range(1, train + test + 1)]
    arrays = {}
    for n in names:
        image = rng.normal(size=shape).astype(np.float32)
        label = (rng.random(shape) > 0.7).astype(np.uint8)
        with h5py.File(root / folder / f"{n}_norm.h5", "w") as f:
            f.create_dataset("image", data=image)
            f.create_dataset("label", data=label)
        arrays[n] = (image, label)
    entries = [entry.format(int(n[5:])) for n in names]
    (root / "train.list").write_text("\n".join(entries[:train]) + "\n")
    (root / "test.list").write_text("\n".join(entries[train:]) + "\n")
    return arrays


def test_pancreas_h5_axes_spacing_split_and_integrity(tmp_path, capsys):
    arrays = _make_h5(tmp_path / "src", entry="image{:04d}_norm")  # list entries with the _norm suffix
    out = Path(convert_pancreas_h5(str(tmp_path / "src"), labeled_ratio=0.2, selection="list",
                                   output_root=str(tmp_path / "raw")))
    # floor(0.2 * 6) = 1 labeled; the papers' 10 % / 20 % of 62 training volumes are 6 / 12
    assert [num_from_ratio(r, 62) for r in (0.1, 0.2)] == [6, 12]
    assert _ids(out / "imagesTr") == ["image0001"] == _splits(out)[0]["train"] == _splits(out)[0]["val"]
    assert _ids(out / "imagesUnlabeled") == [f"image{i:04d}" for i in range(2, 7)]
    assert _ids(out / "imagesTs") == ["image0007", "image0008"] == _ids(out / "labelsTs", False)
    img = sitk.ReadImage(str(out / "imagesTs" / "image0008_0000.nii.gz"))
    assert img.GetSize() == (12, 10, 8) and img.GetSpacing() == (1.0, 1.0, 1.0)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(img), arrays["image0008"][0].transpose(2, 1, 0))
    np.testing.assert_array_equal(_arr(out / "labelsTs" / "image0008.nii.gz"),
                                  arrays["image0008"][1].transpose(2, 1, 0))
    np.testing.assert_array_equal(_arr(out / "imagesUnlabeled" / "image0004_0000.nii.gz"),
                                  arrays["image0004"][0].transpose(2, 1, 0))
    info = _dj(out)["nnunet_semi"]
    assert info["spacing_zyx_mm"] == [1.0, 1.0, 1.0] and info["array_axes"] == "xyz"
    assert (info["num_labeled_cases"], info["num_test_cases"], info["num_unlabeled_cases"]) == (1, 2, 5)
    _verify(out, capsys)


def test_pancreas_h5_zyx_spacing_and_cli(tmp_path, capsys):
    arrays = _make_h5(tmp_path / "src", folder=".")  # h5 files directly beside the lists
    pancreas_entry(["h5", "-i", str(tmp_path / "src"), "--labeled", "2", "--val", "1", "--axes", "zyx",
                    "--spacing", "2.5", "0.8", "0.7", "--seed", "1", "-o", str(tmp_path / "raw")])
    assert "imagesTr: 3 (2 labeled + 1 validation), imagesTs: 2, imagesUnlabeled: 3" in capsys.readouterr().out
    out = tmp_path / "raw" / "Dataset031_Pancreas"
    img = sitk.ReadImage(str(out / "imagesTs" / "image0007_0000.nii.gz"))
    assert img.GetSize() == (8, 10, 12) and img.GetSpacing() == pytest.approx((0.7, 0.8, 2.5))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(img), arrays["image0007"][0])
    np.testing.assert_array_equal(_arr(out / "labelsTs" / "image0007.nii.gz"), arrays["image0007"][1])


def test_pancreas_h5_missing_file(tmp_path):
    _make_h5(tmp_path / "src")
    (tmp_path / "src" / "Pancreas_h5" / "image0003_norm.h5").unlink()
    with pytest.raises(ConversionError, match=r"Pancreas_h5/image0003_norm\.h5 not found .*but image0003 is listed"):
        convert_pancreas_h5(str(tmp_path / "src"), num_labeled=2, output_root=str(tmp_path / "raw"))
    assert _nothing_written(tmp_path / "raw")


def test_pancreas_h5_image_label_shape_mismatch(tmp_path):
    _make_h5(tmp_path / "src")
    with h5py.File(tmp_path / "src" / "Pancreas_h5" / "image0008_norm.h5", "w") as f:
        f.create_dataset("image", data=np.zeros((12, 10, 8), np.float32))
        f.create_dataset("label", data=np.zeros((12, 10, 9), np.uint8))
    with pytest.raises(ConversionError, match=r"image0008_norm\.h5: expected 'image' and 'label' of the same 3D "
                                              r"shape .*label \(12, 10, 9\)"):
        convert_pancreas_h5(str(tmp_path / "src"), num_labeled=2, output_root=str(tmp_path / "raw"))
    assert _nothing_written(tmp_path / "raw")


def test_pancreas_h5_empty_folder(tmp_path):
    (tmp_path / "src").mkdir()
    with pytest.raises(ConversionError, match=r"train\.list not found: .*src/train\.list"):
        convert_pancreas_h5(str(tmp_path / "src"), num_labeled=2, output_root=str(tmp_path / "raw"))
    assert _nothing_written(tmp_path / "raw")


def test_pancreas_h5_unknown_label_values(tmp_path):
    _make_h5(tmp_path / "src")
    with h5py.File(tmp_path / "src" / "Pancreas_h5" / "image0007_norm.h5", "w") as f:
        f.create_dataset("image", data=np.zeros((12, 10, 8), np.float32))
        f.create_dataset("label", data=np.full((12, 10, 8), 255, np.uint8))
    with pytest.raises(ConversionError, match=r"image0007_norm\.h5: unknown label values \[255\]"):
        convert_pancreas_h5(str(tmp_path / "src"), num_labeled=2, output_root=str(tmp_path / "raw"))
    assert _nothing_written(tmp_path / "raw")


def test_pancreas_h5_bad_axes_and_case_in_both_lists(tmp_path):
    _make_h5(tmp_path / "src")
    with pytest.raises(ConversionError, match="array_axes must be one of"):
        convert_pancreas_h5(str(tmp_path / "src"), num_labeled=2, array_axes="yxz", output_root=str(tmp_path / "raw"))
    (tmp_path / "src" / "test.list").write_text("image0007\nimage0001\n")
    with pytest.raises(ConversionError, match=r"Case image0001 is in both train\.list and test\.list"):
        convert_pancreas_h5(str(tmp_path / "src"), num_labeled=2, output_root=str(tmp_path / "raw"))
    assert _nothing_written(tmp_path / "raw")


# ================================================================================================================
# MSD Prostate (Task05), Chaitanya et al. 2023 preset
# ================================================================================================================
def _make_prostate(root: Path, n_train: int = 32, n_test: int = 16, size=(6, 5, 4)) -> Path:
    """MSD Task05_Prostate layout: 4D images (x, y, z, channel) with T2 and ADC, 3D labels 0 / 1 / 2."""
    task = root / "Task05_Prostate"
    for d in ("imagesTr", "labelsTr", "imagesTs"):
        (task / d).mkdir(parents=True)
    rng = np.random.default_rng(5)
    training, test = [], []
    for i in range(n_train + n_test):
        case = f"prostate_{i:02d}"
        data = rng.normal(size=(2,) + size[::-1]).astype(np.float32)
        data[0] += 100 * i  # T2 of case i is recognisable in the output
        img = sitk.JoinSeries([sitk.GetImageFromArray(c) for c in data])
        img.SetSpacing((0.6, 0.6, 3.6, 1.0))
        img.SetOrigin((-10.0, 5.0, 2.0, 0.0))
        sub = "imagesTr" if i < n_train else "imagesTs"
        sitk.WriteImage(img, str(task / sub / f"{case}.nii.gz"))
        if i < n_train:
            seg = sitk.GetImageFromArray(rng.integers(0, 3, size[::-1], dtype=np.uint8))
            seg.SetSpacing((0.6, 0.6, 3.6))
            seg.SetOrigin((-10.0, 5.0, 2.0))
            sitk.WriteImage(seg, str(task / "labelsTr" / f"{case}.nii.gz"))
            training.append({"image": f"./imagesTr/{case}.nii.gz", "label": f"./labelsTr/{case}.nii.gz"})
        else:
            test.append(f"./imagesTs/{case}.nii.gz")
    (task / "dataset.json").write_text(json.dumps({
        "name": "PROSTATE", "tensorImageSize": "4D", "modality": {"0": "T2", "1": "ADC"},
        "labels": {"0": "background", "1": "PZ", "2": "TZ"}, "numTraining": n_train, "numTest": n_test,
        "training": training, "test": test}))
    return task


@pytest.fixture(scope="module")
def prostate(tmp_path_factory):
    return _make_prostate(tmp_path_factory.mktemp("msd"))


def test_prostate_preset_counts_t2_only_and_integrity(prostate, tmp_path, capsys):
    out = Path(convert_msd_preset(str(prostate), "chaitanya2023-prostate", 2, seed=0, output_root=str(tmp_path)))
    assert out.name == "Dataset032_Prostate"
    dj = _dj(out)
    assert dj["channel_names"] == {"0": "T2"}  # one channel listed
    assert dj["labels"] == {"background": 0, "PZ": 1, "TZ": 2}
    info = dj["nnunet_semi"]
    assert (info["num_labeled"], info["num_val"], info["num_test"], info["num_unlabeled"]) == (2, 2, 15, 22)
    assert info["preset"] == "chaitanya2023-prostate" and info["channels"] == {"0": "T2"}
    assert info["source_channel_indices"] == [0] and info["test_seed"] == 0
    training = {f"prostate_{i:02d}" for i in range(32)}
    assert set(info["test"]) <= training and set(info["labeled"] + info["val"]) <= training
    assert len(set(info["labeled"]) | set(info["val"]) | set(info["test"]) | set(info["unlabeled"])) == 41
    assert sorted(os.listdir(out / "imagesTr")) == sorted(f"{c}_0000.nii.gz" for c in info["labeled"] + info["val"])
    assert len(os.listdir(out / "imagesTs")) == 15 and len(os.listdir(out / "imagesUnlabeled")) == 22
    assert _splits(out) == [{"train": info["labeled"], "val": info["val"]}]
    case = info["test"][0]
    src = sitk.ReadImage(str(prostate / "imagesTr" / f"{case}.nii.gz"))
    t2 = sitk.ReadImage(str(out / "imagesTs" / f"{case}_0000.nii.gz"))
    assert t2.GetDimension() == 3 and t2.GetSpacing() == pytest.approx((0.6, 0.6, 3.6))
    assert t2.GetOrigin() == pytest.approx((-10.0, 5.0, 2.0))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(t2), sitk.GetArrayFromImage(src)[0])
    np.testing.assert_array_equal(_arr(out / "labelsTs" / f"{case}.nii.gz"),
                                  _arr(prostate / "labelsTr" / f"{case}.nii.gz"))
    _verify(out, capsys)


def test_prostate_preset_test_set_fixed_across_seeds(prostate, tmp_path):
    runs = [_dj(Path(convert_msd_preset(str(prostate), "chaitanya2023-prostate", 1, seed=s,
                                        output_root=str(tmp_path / str(s)))))["nnunet_semi"] for s in range(3)]
    assert runs[0]["test"] == runs[1]["test"] == runs[2]["test"]
    assert len({tuple(r["labeled"] + r["val"]) for r in runs}) == 3  # X_L, X_val resampled per run
    assert all(len(r["labeled"]) == 1 and len(r["val"]) == 2 for r in runs)


def test_prostate_cli_preset_channels_and_conflicts(prostate, tmp_path, capsys):
    convert_msd_entry(["-i", str(prostate), "--preset", "chaitanya2023-prostate", "--labeled", "1",
                       "-o", str(tmp_path / "raw")])
    assert "imagesTr: 3 (1 labeled + 2 validation), imagesTs: 15, imagesUnlabeled: 22" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        convert_msd_entry(["-i", str(prostate), "--preset", "chaitanya2023-prostate", "--labeled", "1", "--test", "3",
                           "-o", str(tmp_path / "raw2")])
    assert e.value.code == 2 and "--test cannot be combined with --preset" in capsys.readouterr().err
    # plain channel selection: ADC only, channel renumbered to 0
    convert_msd_entry(["-i", str(prostate), "-d", "933", "--labeled", "2", "--unlabeled", "1", "--channels", "1",
                       "-o", str(tmp_path / "raw3")])
    out = tmp_path / "raw3" / "Dataset933_Prostate"
    assert _dj(out)["channel_names"] == {"0": "ADC"}
    case = _ids(out / "imagesTr")[0]
    np.testing.assert_array_equal(_arr(out / "imagesTr" / f"{case}_0000.nii.gz"),
                                  _arr(prostate / "imagesTr" / f"{case}.nii.gz")[1])
    assert not list(out.glob("*/*_0001.nii.gz"))
    assert PRESETS["chaitanya2023-prostate"]["num_unlabeled"] == 22


def test_prostate_unknown_label_values(tmp_path):
    task = _make_prostate(tmp_path, n_train=4, n_test=1)
    for i in range(4):
        path = task / "labelsTr" / f"prostate_{i:02d}.nii.gz"
        lab = sitk.ReadImage(str(path))
        arr = sitk.GetArrayFromImage(lab)
        arr[0, 0, 0] = 3
        bad = sitk.GetImageFromArray(arr)
        bad.CopyInformation(lab)
        sitk.WriteImage(bad, str(path))
    with pytest.raises(ConversionError, match=r"prostate_0\d\.nii\.gz: unknown label values \[3\]; expected only "
                                              r"0 background, 1 PZ, 2 TZ"):
        convert_msd_semi(str(task), 934, 1, 1, 1, channels=[0], output_root=str(tmp_path / "raw"))
    assert _nothing_written(tmp_path / "raw")


def test_prostate_label_image_geometry_mismatch(tmp_path):
    task = _make_prostate(tmp_path, n_train=4, n_test=1)
    for i in range(4):
        seg = sitk.GetImageFromArray(np.zeros((4, 5, 7), np.uint8))
        seg.SetSpacing((0.6, 0.6, 3.6))
        sitk.WriteImage(seg, str(task / "labelsTr" / f"prostate_{i:02d}.nii.gz"))
    with pytest.raises(ConversionError, match=r"prostate_0\d\.nii\.gz: size \(7, 5, 4\) differs from the image's "
                                              r"\(6, 5, 4\)"):
        convert_msd_semi(str(task), 934, 1, 1, 1, channels=[0], output_root=str(tmp_path / "raw"))
    assert _nothing_written(tmp_path / "raw")


def test_prostate_empty_folder_wrong_task_and_bad_channels(tmp_path, prostate):
    (tmp_path / "Task05_Prostate").mkdir()
    with pytest.raises(ConversionError, match=r"dataset\.json not found: .*Task05_Prostate/dataset\.json"):
        convert_msd_preset(str(tmp_path / "Task05_Prostate"), "chaitanya2023-prostate", 1,
                           output_root=str(tmp_path / "raw"))
    other = tmp_path / "Task04_Hippocampus"
    other.mkdir()
    (other / "dataset.json").write_text(json.dumps({"modality": {"0": "MRI"}, "labels": {}, "training": []}))
    with pytest.raises(ConversionError, match=r"preset chaitanya2023-prostate keeps channel 0 = T2, but this task's "
                                              r"channel 0 is 'MRI'"):
        convert_msd_preset(str(other), "chaitanya2023-prostate", 1, output_root=str(tmp_path / "raw"))
    with pytest.raises(ConversionError, match=r"channels \[2\]: each must be one of the channels .*0 T2, 1 ADC"):
        convert_msd_semi(str(prostate), 935, 1, channels=[2], output_root=str(tmp_path / "raw"))
    with pytest.raises(ConversionError, match="Unknown preset 'nope'"):
        convert_msd_preset(str(prostate), "nope", 1, output_root=str(tmp_path / "raw"))
    assert _nothing_written(tmp_path / "raw")
