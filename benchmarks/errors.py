"""Where a prediction folder's errors are, as text: what the readings quote (``python -m benchmarks.errors PRED_DIR
GT_DIR [--bins 3]``).

For every label of the reference segmentations, pooled over all cases (voxel counts summed, so large structures weigh
more than in the per-case Dice of ``results.md``):

* **volume ratio**: predicted / reference voxels (< 1: the prediction under-segments, > 1: it over-segments);
* **recall** (the share of the reference voxels predicted as the label) and **precision** (the share of the predicted
  voxels that are the label in the reference): which side the errors are on;
* **Dice per position along the first array axis** (the slice axis of nnU-Net's 2D configurations): the slices of each
  case that hold any reference foreground are split, in order, into ``--bins`` equal parts (e.g. base / middle / apex
  of a short-axis cardiac stack), and the Dice of each label is pooled per part over the cases; with the share of the
  reference foreground voxels each part holds.

Every ``.nii.gz`` of ``PRED_DIR`` needs the file of the same name in ``GT_DIR`` (nnU-Net's ``labelsTs`` layout)."""
import argparse
import sys
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np


def read_case(path: Path) -> np.ndarray:
    import SimpleITK as sitk

    try:
        return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    except RuntimeError as error:
        raise RuntimeError(f"{path}: could not be read as an image ({str(error).strip().splitlines()[-1]}). Fix: "
                           f"pass nnUNetv2_predict's output folder and the labelsTs folder of the same dataset.") \
            from None


def case_counts(pred: np.ndarray, gt: np.ndarray, labels: Sequence[int], bins: int) -> Dict[str, np.ndarray]:
    """Voxel counts of one case: ``inter`` / ``pred`` / ``gt`` of shape (bins + 1, labels); row 0 is the whole case,
    rows 1.. the position bins along axis 0 (over the slices that hold reference foreground)."""
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} != reference shape {gt.shape}")
    counts = {k: np.zeros((bins + 1, len(labels)), dtype=np.int64) for k in ("inter", "pred", "gt")}
    slices = np.flatnonzero((gt > 0).reshape(gt.shape[0], -1).any(axis=1))
    # slice j of the n foreground slices goes to bin floor(j * bins / n): equal parts in order
    bin_of = {int(z): 1 + (j * bins) // len(slices) for j, z in enumerate(slices)}
    for li, label in enumerate(labels):
        p, g = pred == label, gt == label
        i = p & g
        for key, mask in (("inter", i), ("pred", p), ("gt", g)):
            per_slice = mask.reshape(mask.shape[0], -1).sum(axis=1)
            counts[key][0, li] = per_slice.sum()
            for z, b in bin_of.items():
                counts[key][b, li] += per_slice[z]
    return counts


def prediction_files(pred_dir: Path) -> List[Path]:
    """The ``.nii.gz`` files of ``pred_dir``, sorted; one clear error when there are none."""
    files = sorted(Path(pred_dir).glob("*.nii.gz"))
    if not files:
        raise FileNotFoundError(f"{pred_dir}: no .nii.gz predictions. Fix: pass the output folder of "
                                f"nnUNetv2_predict.")
    return files


def reference_file(prediction: Path, gt_dir: Path) -> Path:
    """The reference segmentation of ``prediction`` (same file name in ``gt_dir``); one clear error when missing."""
    reference = Path(gt_dir) / prediction.name
    if not reference.is_file():
        raise FileNotFoundError(f"{reference}: no reference segmentation for the prediction {prediction}. Fix: pass "
                                f"the labelsTs folder of the dataset the prediction was made on.")
    return reference


def error_counts(pred_dir: Path, gt_dir: Path, labels: Sequence[int], bins: int) -> Tuple[Dict[str, np.ndarray], int]:
    """The counts of :func:`case_counts` summed over every case of ``pred_dir``; and the number of cases."""
    files = prediction_files(pred_dir)
    total = None
    for f in files:
        try:
            counts = case_counts(read_case(f), read_case(reference_file(f, gt_dir)), labels, bins)
        except ValueError as error:
            raise ValueError(f"{f}: {error}. Fix: compare a prediction with the reference of the same case.") \
                from None
        total = counts if total is None else {k: total[k] + counts[k] for k in total}
    return total, len(files)


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b > 0, a / np.maximum(b, 1), np.nan)


def error_table(counts: Dict[str, np.ndarray], names: Sequence[str], bins: int) -> str:
    """Markdown: one row per label (volume ratio, recall, precision, Dice, Dice per position bin), then the share of
    the reference foreground per bin."""
    inter, pred, gt = counts["inter"], counts["pred"], counts["gt"]
    dice = _ratio(2 * inter, pred + gt)
    fmt = lambda v: "—" if np.isnan(v) else f"{v:.2f}"  # noqa: E731
    header = ["label", "volume ratio (pred / ref)", "recall", "precision", "Dice (pooled)"] + \
             [f"Dice, part {b} of {bins}" for b in range(1, bins + 1)]
    rows: List[str] = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    volume, recall, precision = _ratio(pred[0], gt[0]), _ratio(inter[0], gt[0]), _ratio(inter[0], pred[0])
    for li, name in enumerate(names):
        cells = [name, fmt(volume[li]), fmt(recall[li]), fmt(precision[li]), fmt(dice[0, li])] + \
                [fmt(dice[b, li]) for b in range(1, bins + 1)]
        rows.append("| " + " | ".join(cells) + " |")
    share = gt[1:].sum(axis=1) / max(gt[1:].sum(), 1)
    rows.append("| share of the reference foreground | | | | | " + " | ".join(f"{s:.2f}" for s in share) + " |")
    return "\n".join(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pred_dir", type=Path)
    parser.add_argument("gt_dir", type=Path)
    parser.add_argument("--labels", type=int, nargs="+", default=None,
                        help="label values (default: every non-zero value of the first reference)")
    parser.add_argument("--names", nargs="+", default=None, help="a name per label")
    parser.add_argument("--bins", type=int, default=3, help="parts along the first axis (default 3)")
    args = parser.parse_args(argv)
    labels = args.labels
    if labels is None:
        first = prediction_files(args.pred_dir)[0]
        labels = [int(v) for v in np.unique(read_case(reference_file(first, args.gt_dir))) if v != 0]
    names = args.names or [str(v) for v in labels]
    if len(names) != len(labels):
        parser.error(f"--names gives {len(names)} names for {len(labels)} labels")
    counts, n = error_counts(args.pred_dir, args.gt_dir, labels, args.bins)
    print(f"{n} cases, {args.pred_dir} against {args.gt_dir}")
    print(error_table(counts, names, args.bins))
    return 0


if __name__ == "__main__":
    sys.exit(main())
