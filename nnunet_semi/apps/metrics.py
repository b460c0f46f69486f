"""The papers' evaluation tables from nnU-Net prediction folders: per-class Dice, HD95 and ASSD (mm).

``python -m nnunet_semi.apps.metrics GT_FOLDER PRED_FOLDER -l 1 2 3 [--names RV Myo LV] -o OUT_PREFIX``
(:func:`metrics_entry`; Python: :func:`evaluate_folders`, :func:`case_metrics`, :func:`surface_distances`).

Definitions, for each label ``c`` evaluated separately as a binary mask (prediction P, reference G):

* **Dice** = 2 |P ∩ G| / (|P| + |G|), a fraction in [0, 1] (the markdown table shows it in %).
* **Surface** of a mask: its voxels with at least one face-neighbour (6-neighbourhood in 3D, 4 in 2D) outside the
  mask; voxels on the image border count as surface (the image is treated as surrounded by background). This is
  the surface used by medpy (``mask XOR binary_erosion(mask)``), which the SSL4MIS / UA-MT papers' code calls.
* **Surface distances**: for every surface voxel of P the Euclidean distance (mm, using the reference image's
  spacing, so anisotropic voxels are honoured) to the nearest surface voxel of G, read from a SimpleITK Maurer
  distance map of G's surface; and the same from G to P.
* **HD95** = 95th percentile of both directed distance sets pooled (medpy ``hd95``).
* **ASSD** = mean of the two directed average surface distances, (mean(d(P→G)) + mean(d(G→P))) / 2 (medpy ``assd``).

Empty masks:

* P and G both empty (structure correctly absent): Dice = 1, HD95 = ASSD = 0.
* exactly one of them empty: Dice = 0; HD95 = ASSD = the length of the image diagonal in mm (the largest distance
  possible inside the image) with ``empty_distance='diagonal'`` (default), or NaN with ``'nan'``. NaN values are
  left out of every mean and standard deviation (the summary reports how many values each mean uses).

Per case, ``mean`` is the mean over the evaluated labels (NaN-skipping). The summary gives, for every label and for
the per-case mean, mean ± standard deviation over cases (population std, ``ddof=0``, like ``np.std``).

Outputs (``OUT_PREFIX`` = ``path/name``): ``name_per_case.csv`` (one row per case; columns ``dice_<name>``,
``hd95_<name>``, ``assd_<name>`` for every label and ``mean``), ``name_summary.csv`` (metric, label, mean, std, n)
and ``name.md`` (the papers' table: Dice (%), HD95 (mm), ASSD (mm), mean ± std, one row per label plus Mean).
"""
import argparse
import csv
import math
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from dataset_conversion.common import run_entry

METRICS = ("dice", "hd95", "assd")
EMPTY_DISTANCE = ("diagonal", "nan")


class MetricsError(ValueError):
    """The folders cannot be evaluated; the message names the offending file and the fix."""


# ----------------------------------------------------------------------------------------------------------------
# per mask
# ----------------------------------------------------------------------------------------------------------------
def _surface_and_distance(mask: np.ndarray, spacing: Sequence[float]):
    """(surface voxels as bool array, distance map to that surface in mm) of a padded, cropped mask."""
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(mask.astype(np.uint8))
    img.SetSpacing(tuple(float(s) for s in reversed(tuple(spacing))))
    contour = sitk.LabelContour(img, fullyConnected=False, backgroundValue=0)
    dist = sitk.SignedMaurerDistanceMap(contour, insideIsPositive=False, squaredDistance=False,
                                        useImageSpacing=True)
    return sitk.GetArrayViewFromImage(contour).astype(bool), np.abs(sitk.GetArrayFromImage(dist))


def surface_distances(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]) -> Tuple[np.ndarray, np.ndarray]:
    """Directed surface distances in mm: (from every surface voxel of ``pred`` to the surface of ``ref``, from every
    surface voxel of ``ref`` to the surface of ``pred``). ``pred`` / ``ref`` are boolean arrays in numpy axis order
    (2D or 3D, both non-empty) and ``spacing`` is given in the same axis order ((z, y, x) for 3D).

    The masks are cropped to the bounding box of their union and padded with one background voxel on every side,
    which leaves all distances unchanged and makes voxels on the image border surface voxels.
    """
    pred, ref = np.asarray(pred, bool), np.asarray(ref, bool)
    if pred.shape != ref.shape or pred.ndim != len(spacing):
        raise MetricsError(f"pred {pred.shape}, ref {ref.shape} and spacing {tuple(spacing)} do not match.")
    if not pred.any() or not ref.any():
        raise MetricsError("surface_distances needs two non-empty masks (see case_metrics for the empty cases).")
    union = pred | ref
    box = tuple(slice(int(np.min(ix)), int(np.max(ix)) + 1) for ix in np.nonzero(union))
    p = np.pad(pred[box], 1)
    r = np.pad(ref[box], 1)
    p_surface, p_dist = _surface_and_distance(p, spacing)
    r_surface, r_dist = _surface_and_distance(r, spacing)
    return r_dist[p_surface], p_dist[r_surface]


def diagonal_mm(shape: Sequence[int], spacing: Sequence[float]) -> float:
    """Length of the image diagonal in mm (the penalty distance for a one-sided empty mask)."""
    return float(math.sqrt(sum((n * s) ** 2 for n, s in zip(shape, spacing))))


def binary_metrics(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float],
                   empty_distance: str = "diagonal") -> Dict[str, float]:
    """Dice, HD95 and ASSD of two boolean masks, with the empty-mask conventions of the module docstring."""
    if empty_distance not in EMPTY_DISTANCE:
        raise MetricsError(f"empty_distance must be one of {EMPTY_DISTANCE}, got {empty_distance!r}.")
    pred, ref = np.asarray(pred, bool), np.asarray(ref, bool)
    n_p, n_r = int(pred.sum()), int(ref.sum())
    if n_p == 0 and n_r == 0:
        return {"dice": 1.0, "hd95": 0.0, "assd": 0.0}
    if n_p == 0 or n_r == 0:
        penalty = diagonal_mm(pred.shape, spacing) if empty_distance == "diagonal" else float("nan")
        return {"dice": 0.0, "hd95": penalty, "assd": penalty}
    dice = 2.0 * int(np.logical_and(pred, ref).sum()) / (n_p + n_r)
    d_pr, d_rp = surface_distances(pred, ref, spacing)
    return {"dice": float(dice), "hd95": float(np.percentile(np.concatenate([d_pr, d_rp]), 95)),
            "assd": float((d_pr.mean() + d_rp.mean()) / 2.0)}


def case_metrics(pred: np.ndarray, ref: np.ndarray, labels: Sequence[int], spacing: Sequence[float],
                 empty_distance: str = "diagonal") -> Dict[int, Dict[str, float]]:
    """label -> {'dice', 'hd95', 'assd'} for two label maps (numpy axis order, ``spacing`` in the same order)."""
    pred, ref = np.asarray(pred), np.asarray(ref)
    if pred.shape != ref.shape:
        raise MetricsError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}.")
    return {int(c): binary_metrics(pred == c, ref == c, spacing, empty_distance) for c in labels}


# ----------------------------------------------------------------------------------------------------------------
# folders
# ----------------------------------------------------------------------------------------------------------------
def _read(path: str):
    import SimpleITK as sitk

    try:
        img = sitk.ReadImage(path)
    except RuntimeError as e:
        raise MetricsError(f"{path}: cannot read the image ({e}). Replace the file.")
    return sitk.GetArrayFromImage(img), tuple(reversed(img.GetSpacing()))


def _evaluate_case(args) -> Tuple[str, Dict[int, Dict[str, float]]]:
    case, ref_path, pred_path, labels, empty_distance = args
    ref, spacing = _read(ref_path)
    pred, pred_spacing = _read(pred_path)
    if pred.shape != ref.shape:
        raise MetricsError(f"{pred_path}: shape {pred.shape} (numpy z, y, x) differs from the reference's "
                           f"{ref.shape} ({ref_path}). Predict in the reference's geometry (nnUNetv2_predict does).")
    if not np.allclose(pred_spacing, spacing, rtol=1e-3, atol=1e-5):
        raise MetricsError(f"{pred_path}: spacing {pred_spacing} (z, y, x) differs from the reference's {spacing} "
                           f"({ref_path}). Predict in the reference's geometry (nnUNetv2_predict does).")
    return case, case_metrics(pred, ref, labels, spacing, empty_distance)


def _stats(values: List[float]) -> Tuple[float, float, int]:
    v = np.asarray(values, float)
    v = v[~np.isnan(v)]
    if v.size == 0:
        return float("nan"), float("nan"), 0
    return float(v.mean()), float(v.std()), int(v.size)


def evaluate_folders(gt_folder: str, pred_folder: str, labels: Sequence[int], names: Optional[Sequence[str]] = None,
                     output_prefix: Optional[str] = None, file_ending: str = ".nii.gz", num_processes: int = 1,
                     empty_distance: str = "diagonal", allow_missing: bool = False) -> Dict:
    """Evaluate every reference file ``GT_FOLDER/<case><file_ending>`` against ``PRED_FOLDER/<case><file_ending>``.

    A reference without prediction is an error unless ``allow_missing`` (then only the predicted cases are
    evaluated); a prediction without reference is always an error. Other files (nnU-Net's dataset.json,
    plans.json, ...) are ignored. Prediction and reference must have the same shape and spacing; distances use
    the reference's spacing. ``names`` label the columns (default: the label values).

    Returns ``{'cases': [...], 'names': [...], 'per_case': {case: {name: {metric: value}}}, 'summary': {name:
    {metric: {'mean', 'std', 'n'}}}}`` where the names include ``'mean'`` (per-case mean over the labels); with
    ``output_prefix`` also writes ``<prefix>_per_case.csv``, ``<prefix>_summary.csv`` and ``<prefix>.md``.
    """
    labels = [int(c) for c in labels]
    if not labels or any(c <= 0 for c in labels) or len(set(labels)) != len(labels):
        raise MetricsError(f"labels must be distinct positive label values (background 0 is not evaluated), got "
                           f"{labels}.")
    names = [str(n) for n in names] if names is not None else [str(c) for c in labels]
    if len(names) != len(labels) or len(set(names)) != len(names) or "mean" in names:
        raise MetricsError(f"names must give one distinct name per label ({len(labels)}: {labels}), not 'mean'; got "
                           f"{names}.")
    if empty_distance not in EMPTY_DISTANCE:
        raise MetricsError(f"empty_distance must be one of {EMPTY_DISTANCE}, got {empty_distance!r}.")
    for folder, what in ((gt_folder, "reference"), (pred_folder, "prediction")):
        if not os.path.isdir(folder):
            raise MetricsError(f"{what} folder not found: {folder}.")

    def cases_in(folder):
        return sorted(f[:-len(file_ending)] for f in os.listdir(folder)
                      if f.endswith(file_ending) and not f.startswith("."))

    ref_cases, pred_cases = cases_in(gt_folder), cases_in(pred_folder)
    if not ref_cases:
        raise MetricsError(f"No '*{file_ending}' files in the reference folder {gt_folder}. Pass the labelsTs folder "
                           f"(or --file-ending).")
    extra = sorted(set(pred_cases) - set(ref_cases))
    if extra:
        raise MetricsError(f"{os.path.join(pred_folder, extra[0] + file_ending)} has no reference "
                           f"{os.path.join(gt_folder, extra[0] + file_ending)}. Pass the matching reference folder.")
    missing = sorted(set(ref_cases) - set(pred_cases))
    if missing and not allow_missing:
        raise MetricsError(f"Prediction missing: {os.path.join(pred_folder, missing[0] + file_ending)}"
                           + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                           + ". Predict every reference case, or pass allow_missing=True (--allow-missing) to "
                             "evaluate only the predicted cases.")
    cases = sorted(set(ref_cases) & set(pred_cases))
    if not cases:
        raise MetricsError(f"No predictions in {pred_folder} match the references in {gt_folder}.")

    from tqdm import tqdm

    jobs = [(c, os.path.join(gt_folder, c + file_ending), os.path.join(pred_folder, c + file_ending), labels,
             empty_distance) for c in cases]
    if num_processes > 1:
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(num_processes) as pool:
            results = list(tqdm(pool.imap(_evaluate_case, jobs), total=len(jobs), desc="Evaluating", unit="case"))
    else:
        results = [_evaluate_case(j) for j in tqdm(jobs, desc="Evaluating", unit="case")]

    per_case: Dict[str, Dict[str, Dict[str, float]]] = {}
    for case, res in results:
        row = {n: res[c] for n, c in zip(names, labels)}
        row["mean"] = {m: _stats([res[c][m] for c in labels])[0] for m in METRICS}
        per_case[case] = row
    all_names = names + ["mean"]
    summary = {n: {m: dict(zip(("mean", "std", "n"), _stats([per_case[c][n][m] for c in cases])))
                   for m in METRICS} for n in all_names}
    result = {"cases": cases, "names": all_names, "labels": labels, "per_case": per_case, "summary": summary,
              "empty_distance": empty_distance}
    if output_prefix is not None:
        write_tables(result, output_prefix)
    return result


def _fmt(x: float, digits: int = 4) -> str:
    return "nan" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def write_tables(result: Dict, output_prefix: str) -> List[str]:
    """Write ``<prefix>_per_case.csv``, ``<prefix>_summary.csv`` and ``<prefix>.md``; returns their paths."""
    prefix = os.path.abspath(os.path.expanduser(str(output_prefix)))
    os.makedirs(os.path.dirname(prefix), exist_ok=True)
    names, cases = result["names"], result["cases"]
    paths = [prefix + "_per_case.csv", prefix + "_summary.csv", prefix + ".md"]
    with open(paths[0], "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["case"] + [f"{m}_{n}" for m in METRICS for n in names])
        for c in cases:
            w.writerow([c] + [_fmt(result["per_case"][c][n][m], 6) for m in METRICS for n in names])
    with open(paths[1], "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["metric", "label", "mean", "std", "n"])
        for m in METRICS:
            for n in names:
                s = result["summary"][n][m]
                w.writerow([m, n, _fmt(s["mean"], 6), _fmt(s["std"], 6), s["n"]])
    lines = ["| Label | Dice (%) | HD95 (mm) | ASSD (mm) |", "|---|---|---|---|"]
    for n in names:
        s = result["summary"][n]
        cells = [f"{_fmt(s['dice']['mean'] * 100, 2)} ± {_fmt(s['dice']['std'] * 100, 2)}"]
        cells += [f"{_fmt(s[m]['mean'], 2)} ± {_fmt(s[m]['std'], 2)}" for m in ("hd95", "assd")]
        lines.append(f"| {'Mean' if n == 'mean' else n} | " + " | ".join(cells) + " |")
    conv = ("one-sided empty masks count as the image diagonal" if result["empty_distance"] == "diagonal"
            else "one-sided empty masks give NaN distances, left out of the means")
    lines += ["", f"{len(cases)} cases; mean ± std (ddof=0) over cases; 'Mean' = per-case mean over the labels. "
              f"HD95 / ASSD from surface distances in mm (medpy conventions); both masks empty: Dice 1, distances "
              f"0; {conv}."]
    with open(paths[2], "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return paths


# ----------------------------------------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------------------------------------
def metrics_entry(argv: Optional[List[str]] = None) -> None:
    """``python -m nnunet_semi.apps.metrics GT_FOLDER PRED_FOLDER -l 1 2 3 [--names RV Myo LV] -o OUT_PREFIX``"""
    parser = argparse.ArgumentParser(
        prog="nnunet_semi_metrics",
        epilog="example: nnunet_semi_metrics labelsTs pred -l 1 2 3 -o results/acdc",
        description="Per-class and mean Dice, HD95 and ASSD (mm) of an nnU-Net prediction folder against a reference "
                    "folder, written as markdown and CSV (OUT_PREFIX.md, OUT_PREFIX_per_case.csv, "
                    "OUT_PREFIX_summary.csv).")
    parser.add_argument("gt_folder", help="reference label folder, e.g. labelsTs")
    parser.add_argument("pred_folder", help="prediction folder (nnUNetv2_predict output)")
    parser.add_argument("-l", dest="labels", type=int, nargs="+", required=True, help="label values, e.g. 1 2 3")
    parser.add_argument("--names", nargs="+", default=None, help="one name per label, e.g. RV Myo LV")
    parser.add_argument("-o", dest="output_prefix", required=True, help="output prefix, e.g. results/acdc_cps")
    parser.add_argument("--file-ending", default=".nii.gz", help="file ending (default .nii.gz)")
    parser.add_argument("-np", dest="num_processes", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--empty-distance", choices=EMPTY_DISTANCE, default="diagonal",
                        help="HD95/ASSD when exactly one mask is empty: image diagonal in mm (default) or NaN")
    parser.add_argument("--allow-missing", action="store_true",
                        help="evaluate only the references that have a prediction")
    args = parser.parse_args(argv)

    def report(res: Dict) -> None:
        with open(os.path.abspath(args.output_prefix) + ".md", encoding="utf-8") as f:
            print(f.read(), end="")
        print(f"({len(res['cases'])} cases) -> {os.path.abspath(args.output_prefix)}.md, _per_case.csv, "
              f"_summary.csv")

    run_entry(parser.prog, lambda: evaluate_folders(
        args.gt_folder, args.pred_folder, args.labels, args.names, args.output_prefix, args.file_ending,
        args.num_processes, args.empty_distance, args.allow_missing), errors=(MetricsError,), report=report)


if __name__ == "__main__":
    metrics_entry()
