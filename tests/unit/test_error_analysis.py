"""benchmarks.errors: pooled volume ratio, recall, precision and Dice per position along the slice axis, against
counts done by hand on a small case."""
import numpy as np
import pytest
import SimpleITK as sitk

from benchmarks.errors import case_counts, error_counts, error_table, main


def _case():
    """6 slices of 4 x 4; label 1 is a 2 x 2 square on slices 1-3 (12 voxels), label 2 one voxel on slice 2.
    Prediction: slice 1 exact, slice 2 half of the square + 2 voxels outside it, slice 3 nothing, one label-1 voxel
    on slice 5 (no reference foreground there: outside every part); label 2 missed, predicted once elsewhere."""
    gt = np.zeros((6, 4, 4), dtype=np.uint8)
    gt[1:4, 1:3, 1:3] = 1
    gt[2, 0, 3] = 2
    pred = np.zeros_like(gt)
    pred[1, 1:3, 1:3] = 1
    pred[2, 1, 1:3] = 1
    pred[2, 3, 0:2] = 1
    pred[5, 0, 0] = 1
    pred[4, 3, 3] = 2
    return pred, gt


def test_counts_pool_every_voxel_and_split_the_foreground_slices_into_equal_parts_in_order():
    pred, gt = _case()
    c = case_counts(pred, gt, labels=[1, 2], bins=3)
    # whole case: label 1 reference 12, predicted 4 + 4 + 1 = 9, overlap 4 + 2 = 6; label 2: 1 / 1 / 0
    assert c["gt"][0].tolist() == [12, 1] and c["pred"][0].tolist() == [9, 1] and c["inter"][0].tolist() == [6, 0]
    # 3 foreground slices (1, 2, 3) -> one per part; slice 4's and slice 5's predictions are in no part
    assert c["gt"][1:, 0].tolist() == [4, 4, 4]
    assert c["pred"][1:, 0].tolist() == [4, 4, 0]
    assert c["inter"][1:, 0].tolist() == [4, 2, 0]
    assert c["gt"][1:, 1].tolist() == [0, 1, 0] and c["pred"][1:, 1].tolist() == [0, 0, 0]


def test_table_gives_volume_ratio_recall_precision_and_dice_per_part():
    pred, gt = _case()
    table = error_table(case_counts(pred, gt, [1, 2], 3), ["A", "B"], 3).splitlines()
    # A: volume 9/12, recall 6/12, precision 6/9, Dice 12/21; parts: 8/8, 4/8, 0/4
    assert table[2] == "| A | 0.75 | 0.50 | 0.67 | 0.57 | 1.00 | 0.50 | 0.00 |"
    # B: volume 1/1, recall 0, precision 0, Dice 0; parts 1 and 3 have neither reference nor prediction: undefined
    assert table[3] == "| B | 1.00 | 0.00 | 0.00 | 0.00 | — | 0.00 | — |"
    # reference foreground per part: 4, 5, 4 of 13
    assert table[4].endswith("| 0.31 | 0.38 | 0.31 |")


def test_the_folder_command_sums_the_cases_and_names_a_missing_reference(tmp_path, capsys):
    pred, gt = _case()
    (tmp_path / "pred").mkdir()
    (tmp_path / "gt").mkdir()
    for name in ("c1", "c2"):
        sitk.WriteImage(sitk.GetImageFromArray(pred), str(tmp_path / "pred" / f"{name}.nii.gz"))
        sitk.WriteImage(sitk.GetImageFromArray(gt), str(tmp_path / "gt" / f"{name}.nii.gz"))
    counts, n = error_counts(tmp_path / "pred", tmp_path / "gt", [1], 3)
    assert n == 2 and counts["gt"][0, 0] == 24 and counts["inter"][0, 0] == 12
    assert main([str(tmp_path / "pred"), str(tmp_path / "gt"), "--names", "A", "B"]) == 0
    out = capsys.readouterr().out
    assert "2 cases" in out and "| A | 0.75 | 0.50 | 0.67 | 0.57 | 1.00 | 0.50 | 0.00 |" in out

    (tmp_path / "gt" / "c2.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"c2\.nii\.gz: no reference segmentation"):
        error_counts(tmp_path / "pred", tmp_path / "gt", [1], 3)
    # the labels are read from the first case's reference: its absence is named as such, not as a corrupt file
    (tmp_path / "gt" / "c1.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"gt/c1\.nii\.gz: no reference segmentation"):
        main([str(tmp_path / "pred"), str(tmp_path / "gt")])


def test_a_shape_mismatch_names_the_prediction(tmp_path):
    pred, gt = _case()
    (tmp_path / "pred").mkdir()
    (tmp_path / "gt").mkdir()
    sitk.WriteImage(sitk.GetImageFromArray(pred[:5]), str(tmp_path / "pred" / "c1.nii.gz"))
    sitk.WriteImage(sitk.GetImageFromArray(gt), str(tmp_path / "gt" / "c1.nii.gz"))
    with pytest.raises(ValueError, match=r"pred/c1\.nii\.gz: prediction shape \(5, 4, 4\) != reference shape"):
        error_counts(tmp_path / "pred", tmp_path / "gt", [1], 3)
    with pytest.raises(FileNotFoundError, match="no .nii.gz predictions"):
        error_counts(tmp_path / "gt" / "missing", tmp_path / "gt", [1], 3)
