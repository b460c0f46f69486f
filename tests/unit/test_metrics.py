"""nnunet_semi.apps.metrics: Dice / HD95 / ASSD checked against hand-computable shapes, an independent
scipy implementation of the medpy definitions, the empty-mask conventions, the folder evaluation and its CLI."""
import csv
import math

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from nnunet_semi.apps.metrics import (MetricsError, binary_metrics, case_metrics, diagonal_mm, evaluate_folders,
                                        metrics_entry, surface_distances)


def _ball(shape, center, radius):
    grid = np.ogrid[tuple(slice(0, n) for n in shape)]
    return sum((g - c) ** 2 for g, c in zip(grid, center)) <= radius ** 2


def _write(arr, path, spacing_zyx):
    img = sitk.GetImageFromArray(arr.astype(np.uint8))
    img.SetSpacing(tuple(float(s) for s in reversed(spacing_zyx)))
    sitk.WriteImage(img, str(path))


# ------------------------------------------------------------------------------------------------ Dice
def test_dice_offset_squares_2d():
    a = np.zeros((40, 40), bool)
    b = np.zeros((40, 40), bool)
    a[10:20, 10:20] = True
    b[10:20, 12:22] = True  # overlap 10 x 8
    m = binary_metrics(a, b, (1.0, 1.0))
    assert m["dice"] == pytest.approx(2 * 80 / 200)
    assert m["hd95"] == pytest.approx(2.0)  # every distance is 0 or 2 (the shifted side walls), >5 % are 2


def test_dice_offset_cubes_3d():
    a = np.zeros((30, 30, 30), bool)
    b = np.zeros((30, 30, 30), bool)
    a[10:20, 10:20, 10:20] = True
    b[10:20, 10:20, 13:23] = True  # overlap 10 x 10 x 7
    assert binary_metrics(a, b, (1.0, 1.0, 1.0))["dice"] == pytest.approx(2 * 700 / 2000)
    identical = binary_metrics(a, a, (2.0, 1.0, 1.0))
    assert identical == {"dice": 1.0, "hd95": 0.0, "assd": 0.0}


# ------------------------------------------------------------------------------------------------ distances
def test_sphere_vs_shifted_sphere():
    """Sphere radius R shifted by s along x: a surface point at polar angle θ lies | sqrt(R² + s² - 2Rs cosθ) - R |
    from the other sphere, cosθ uniform on [-1, 1] for area-uniform points -> HD95 and ASSD in closed form."""
    R, s = 10, 4
    shape = (40, 40, 44)
    a, b = _ball(shape, (20, 20, 18), R), _ball(shape, (20, 20, 18 + s), R)
    u = np.linspace(-1, 1, 200001)
    d = np.abs(np.sqrt(R * R + s * s - 2 * R * s * u) - R)
    m = binary_metrics(a, b, (1.0, 1.0, 1.0))
    assert m["hd95"] == pytest.approx(np.percentile(d, 95), abs=1.0)  # within one voxel
    assert m["assd"] == pytest.approx(d.mean(), abs=0.5)
    lens = math.pi * (4 * R + s) * (2 * R - s) ** 2 / 12  # volume of the intersection of two balls
    assert m["dice"] == pytest.approx(lens / (4 / 3 * math.pi * R ** 3), abs=0.01)
    # the same shift in mm on a grid with 0.5 mm voxels: distances stay in mm
    a2, b2 = _ball((80, 80, 88), (40, 40, 36), 2 * R), _ball((80, 80, 88), (40, 40, 36 + 2 * s), 2 * R)
    m2 = binary_metrics(a2, b2, (0.5, 0.5, 0.5))
    assert m2["hd95"] == pytest.approx(np.percentile(d, 95), abs=0.5)
    assert m2["assd"] == pytest.approx(d.mean(), abs=0.25)


@pytest.mark.parametrize("axis, expected", [(0, 6.0), (1, 2.4), (2, 1.0)])
def test_anisotropic_spacing_per_axis(axis, expected):
    """Two single voxels two voxels apart along one axis, spacing (z, y, x) = (3, 1.2, 0.5) mm."""
    a = np.zeros((10, 10, 10), bool)
    b = np.zeros((10, 10, 10), bool)
    a[4, 4, 4] = True
    idx = [4, 4, 4]
    idx[axis] += 2
    b[tuple(idx)] = True
    m = binary_metrics(a, b, (3.0, 1.2, 0.5))
    assert m["hd95"] == pytest.approx(expected, rel=1e-5) and m["assd"] == pytest.approx(expected, rel=1e-5)
    d_ab, d_ba = surface_distances(a, b, (3.0, 1.2, 0.5))
    assert d_ab.tolist() == pytest.approx([expected]) and d_ba.tolist() == pytest.approx([expected])


def _scipy_reference(p, r, spacing):
    """medpy's definitions written with scipy: surface = mask XOR erosion (face connectivity, border = outside)."""
    def surface(m):
        return m ^ ndimage.binary_erosion(m, ndimage.generate_binary_structure(m.ndim, 1), border_value=0)
    sp, sr = surface(p), surface(r)
    d_pr = ndimage.distance_transform_edt(~sr, sampling=spacing)[sp]
    d_rp = ndimage.distance_transform_edt(~sp, sampling=spacing)[sr]
    return np.percentile(np.hstack([d_pr, d_rp]), 95), (d_pr.mean() + d_rp.mean()) / 2


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (3.0, 1.2, 0.7)])
def test_matches_independent_scipy_implementation(spacing):
    rng = np.random.default_rng(0)
    p = ndimage.binary_opening(rng.random((24, 30, 28)) > 0.55)
    r = ndimage.binary_opening(rng.random((24, 30, 28)) > 0.55)
    p[0] = True  # a mask touching the image border: border voxels are surface voxels
    hd95, assd = _scipy_reference(p, r, spacing)
    m = binary_metrics(p, r, spacing)
    assert m["hd95"] == pytest.approx(hd95, rel=1e-5) and m["assd"] == pytest.approx(assd, rel=1e-5)


# ------------------------------------------------------------------------------------------------ empty masks
def test_empty_conventions():
    shape, spacing = (10, 20, 30), (2.0, 1.0, 0.5)
    empty, one = np.zeros(shape, bool), np.zeros(shape, bool)
    one[5, 5, 5] = True
    assert binary_metrics(empty, empty, spacing) == {"dice": 1.0, "hd95": 0.0, "assd": 0.0}
    diag = math.sqrt(20 ** 2 + 20 ** 2 + 15 ** 2)
    assert diagonal_mm(shape, spacing) == pytest.approx(diag)
    for p, r in ((one, empty), (empty, one)):
        assert binary_metrics(p, r, spacing) == {"dice": 0.0, "hd95": pytest.approx(diag), "assd": pytest.approx(diag)}
        m = binary_metrics(p, r, spacing, empty_distance="nan")
        assert m["dice"] == 0.0 and math.isnan(m["hd95"]) and math.isnan(m["assd"])
    with pytest.raises(MetricsError, match="empty_distance"):
        binary_metrics(one, one, spacing, empty_distance="zero")


def test_case_metrics_per_label():
    ref = np.zeros((20, 20, 20), np.uint8)
    pred = np.zeros((20, 20, 20), np.uint8)
    ref[2:8, 2:8, 2:8], pred[2:8, 2:8, 2:8] = 1, 1  # label 1 perfect
    ref[10:16, 10:16, 10:16], pred[10:16, 10:16, 13:19] = 2, 2  # label 2 half overlap
    res = case_metrics(pred, ref, [1, 2, 3], (1.0, 1.0, 1.0))  # label 3 absent in both
    assert res[1] == {"dice": 1.0, "hd95": 0.0, "assd": 0.0}
    assert res[2]["dice"] == pytest.approx(0.5)
    assert res[3] == {"dice": 1.0, "hd95": 0.0, "assd": 0.0}


# ------------------------------------------------------------------------------------------------ folders + CLI
@pytest.fixture()
def folders(tmp_path):
    """Two cases, spacing (z, y, x) = (3, 1, 1) mm. case_a: RV perfect, LV shifted 2 slices along z.
    case_b: RV missing in the prediction, LV perfect."""
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir()
    pred.mkdir()
    sp = (3.0, 1.0, 1.0)
    shape = (16, 24, 24)
    g = np.zeros(shape, np.uint8)
    g[2:6, 2:10, 2:10] = 1
    g[6:12, 12:20, 12:20] = 3
    p = g.copy()
    p[p == 3] = 0
    p[8:14, 12:20, 12:20] = 3  # shift by 2 slices = 6 mm
    _write(g, gt / "case_a.nii.gz", sp)
    _write(p, pred / "case_a.nii.gz", sp)
    p2 = g.copy()
    p2[p2 == 1] = 0
    _write(g, gt / "case_b.nii.gz", sp)
    _write(p2, pred / "case_b.nii.gz", sp)
    (pred / "dataset.json").write_text("{}")  # nnU-Net writes these beside the predictions: ignored
    (pred / "plans.json").write_text("{}")
    return gt, pred, shape, sp


def test_evaluate_folders_values_and_tables(folders, tmp_path):
    gt, pred, shape, sp = folders
    res = evaluate_folders(str(gt), str(pred), [1, 3], ["RV", "LV"], str(tmp_path / "out" / "table"))
    assert res["cases"] == ["case_a", "case_b"]
    a, b = res["per_case"]["case_a"], res["per_case"]["case_b"]
    assert a["RV"] == {"dice": 1.0, "hd95": 0.0, "assd": 0.0}
    assert a["LV"]["dice"] == pytest.approx(2 * 4 / 12)  # 6 slices, 4 overlap
    assert a["LV"]["hd95"] == pytest.approx(6.0)  # shifted faces: 2 slices x 3 mm
    diag = diagonal_mm(shape, sp)
    assert b["RV"] == {"dice": 0.0, "hd95": pytest.approx(diag), "assd": pytest.approx(diag)}
    assert b["LV"] == {"dice": 1.0, "hd95": 0.0, "assd": 0.0}
    assert a["mean"]["dice"] == pytest.approx((1 + 2 / 3) / 2)
    s = res["summary"]
    assert s["RV"]["dice"]["mean"] == pytest.approx(0.5) and s["RV"]["dice"]["std"] == pytest.approx(0.5)
    assert s["LV"]["dice"]["mean"] == pytest.approx((2 / 3 + 1) / 2) and s["LV"]["dice"]["n"] == 2

    rows = list(csv.DictReader(open(tmp_path / "out" / "table_per_case.csv")))
    assert [r["case"] for r in rows] == ["case_a", "case_b"]
    assert float(rows[0]["dice_LV"]) == pytest.approx(2 / 3, abs=1e-6)
    assert float(rows[1]["hd95_RV"]) == pytest.approx(diag, abs=1e-5)
    summ = list(csv.DictReader(open(tmp_path / "out" / "table_summary.csv")))
    assert {(r["metric"], r["label"]) for r in summ} == {(m, n) for m in ("dice", "hd95", "assd")
                                                         for n in ("RV", "LV", "mean")}
    md = (tmp_path / "out" / "table.md").read_text()
    assert "| Label | Dice (%) | HD95 (mm) | ASSD (mm) |" in md
    assert "| RV | 50.00 ± 50.00 |" in md and "| LV | 83.33 ± 16.67 |" in md and "| Mean |" in md

    nan = evaluate_folders(str(gt), str(pred), [1, 3], ["RV", "LV"], empty_distance="nan")
    assert math.isnan(nan["per_case"]["case_b"]["RV"]["hd95"])
    assert nan["summary"]["RV"]["hd95"] == {"mean": 0.0, "std": 0.0, "n": 1}  # NaN left out of the mean


def test_metrics_cli(folders, tmp_path, capsys):
    gt, pred, _, _ = folders
    metrics_entry([str(gt), str(pred), "-l", "1", "3", "--names", "RV", "LV", "-o", str(tmp_path / "cli")])
    out = capsys.readouterr().out
    assert "| LV | 83.33 ± 16.67 |" in out
    assert (tmp_path / "cli.md").is_file() and (tmp_path / "cli_per_case.csv").is_file()
    with pytest.raises(SystemExit) as e:
        metrics_entry([str(gt), str(pred), "-l", "1", "3", "--names", "RV", "-o", str(tmp_path / "bad")])
    assert e.value.code == 1 and "one distinct name per label" in capsys.readouterr().err


def test_multiprocess_evaluation_matches(folders):
    gt, pred, _, _ = folders
    one = evaluate_folders(str(gt), str(pred), [1, 3])
    two = evaluate_folders(str(gt), str(pred), [1, 3], num_processes=2)
    assert one["per_case"] == two["per_case"]


# ------------------------------------------------------------------------------------------------ errors
def test_missing_prediction_is_an_error(folders):
    gt, pred, _, _ = folders
    (pred / "case_b.nii.gz").unlink()
    with pytest.raises(MetricsError, match=r"Prediction missing: .*case_b\.nii\.gz"):
        evaluate_folders(str(gt), str(pred), [1, 3])
    assert evaluate_folders(str(gt), str(pred), [1, 3], allow_missing=True)["cases"] == ["case_a"]


def test_prediction_without_reference_is_an_error(folders):
    gt, pred, _, _ = folders
    (gt / "case_b.nii.gz").unlink()
    with pytest.raises(MetricsError, match=r"case_b\.nii\.gz has no reference"):
        evaluate_folders(str(gt), str(pred), [1, 3])


def test_shape_mismatch_is_an_error(folders):
    gt, pred, _, sp = folders
    _write(np.zeros((16, 24, 20), np.uint8), pred / "case_a.nii.gz", sp)
    with pytest.raises(MetricsError, match=r"case_a\.nii\.gz: shape"):
        evaluate_folders(str(gt), str(pred), [1, 3])


def test_spacing_mismatch_is_an_error(folders):
    gt, pred, shape, _ = folders
    _write(np.zeros(shape, np.uint8), pred / "case_a.nii.gz", (1.0, 1.0, 1.0))
    with pytest.raises(MetricsError, match=r"case_a\.nii\.gz: spacing"):
        evaluate_folders(str(gt), str(pred), [1, 3])


def test_bad_labels_and_folders(folders, tmp_path):
    gt, pred, _, _ = folders
    with pytest.raises(MetricsError, match="background 0"):
        evaluate_folders(str(gt), str(pred), [0, 1])
    with pytest.raises(MetricsError, match="prediction folder not found"):
        evaluate_folders(str(gt), str(tmp_path / "nope"), [1])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(MetricsError, match="No '\\*.nii.gz' files"):
        evaluate_folders(str(empty), str(pred), [1])
