"""The project's own default dataset: small synthetic 3D "MRI" volumes in nnU-Net v2 raw layout.

``generate_demo_dataset(root)`` writes ``<root>/Dataset990_SemiDemo`` with the nnunet-semi conventions::

    imagesTr/ labelsTr/      labeled training + validation cases   (<case>_0000.nii.gz, <case>.nii.gz)
    imagesTs/ labelsTs/      held-out test cases
    imagesUnlabeled/         unlabeled images (no labels)
    dataset.json             nnU-Net v2 format + 'nnunet_semi' entry
    splits_final.json        one fold: train = labeled ids, val = validation ids

Each volume holds an irregular ellipsoidal "organ" (label 1) with a smaller "core" (label 2) inside it. The core is
darker than the organ and about as bright as the background, and the background contains organ-bright distractor
blobs, so a global intensity threshold cannot segment it; a smooth background texture, a multiplicative bias field,
Gaussian noise and a random global intensity scale/offset per case make the intensities vary between cases.
Everything is drawn from ``np.random.default_rng([seed, case_index])``: deterministic, and case ``i`` does not
depend on the requested counts.

Command line: ``python -m nnunet_semi.apps.demo_data OUTPUT_ROOT [--id 990] [--labeled 8] [-np 4] ...``
"""
import argparse
import json
import os
import shutil
import uuid
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

DEMO_NAME = "SemiDemo"
FILE_ENDING = ".nii.gz"
LABELS = {"background": 0, "organ": 1, "core": 2}


def _smooth_noise(rng: np.random.Generator, shape: Sequence[int], sigma_vox: Sequence[float]) -> np.ndarray:
    """Gaussian-filtered white noise, normalised to zero mean / unit std."""
    from scipy.ndimage import gaussian_filter

    n = gaussian_filter(rng.standard_normal(shape), sigma=sigma_vox, mode="wrap")
    return (n - n.mean()) / (n.std() + 1e-8)


def _ellipsoid_radius(coords: Tuple[np.ndarray, ...], center, axes, angle: float) -> np.ndarray:
    """Normalised ellipsoid radius (<1 inside) in mm coordinates, rotated in-plane by ``angle``."""
    dz, dy, dx = (c - m for c, m in zip(coords, center))
    ca, sa = np.cos(angle), np.sin(angle)
    u, v = ca * dy + sa * dx, -sa * dy + ca * dx
    return np.sqrt((dz / axes[0]) ** 2 + (u / axes[1]) ** 2 + (v / axes[2]) ** 2)


def synthesize_case(seed: int, index: int, shape=(16, 64, 64),
                    spacing=(3.0, 1.0, 1.0)) -> Tuple[np.ndarray, np.ndarray]:
    """One synthetic case: ``(image float32, label uint8)``, arrays in (z, y, x) order. Labels 0, 1 and 2 are
    always all present."""
    shape = tuple(int(s) for s in shape)
    spacing = tuple(float(s) for s in spacing)
    if len(shape) != 3 or len(spacing) != 3:
        raise ValueError(f"shape and spacing must be 3D, got {shape} and {spacing}")
    rng = np.random.default_rng([int(seed), int(index)])
    extent = np.array(shape) * np.array(spacing)  # mm
    coords = np.meshgrid(*[(np.arange(n) + 0.5) * s for n, s in zip(shape, spacing)], indexing="ij")
    sigma = lambda mm: [mm / s for s in spacing]  # noqa: E731  (mm -> voxels per axis)

    for _ in range(100):  # resample the (rare) geometry where a label would vanish
        # organ: semi-axes up to ~30% of the field of view, centre kept inside so the organ is not clipped much
        axes = extent * rng.uniform(0.18, 0.3, size=3)
        axes[0] = max(axes[0], 2.0 * spacing[0])
        center = [rng.uniform(a * 0.9, e - a * 0.9) for a, e in zip(axes, extent)]
        angle = rng.uniform(0, np.pi)
        wobble = 1.0 + 0.18 * _smooth_noise(rng, shape, sigma(6.0))
        organ = _ellipsoid_radius(coords, center, axes, angle) * wobble < 1.0
        # core: 35-60% of the organ's semi-axes, offset from its centre but inside it
        c_axes = axes * rng.uniform(0.35, 0.6, size=3)
        c_axes[0] = max(c_axes[0], 0.75 * spacing[0])
        c_center = [m + rng.uniform(-0.35, 0.35) * (a - ca) for m, a, ca in zip(center, axes, c_axes)]
        core = (_ellipsoid_radius(coords, c_center, c_axes, rng.uniform(0, np.pi)) < 1.0) & organ
        label = organ.astype(np.uint8)
        label[core] = 2
        if (label == 1).sum() >= 20 and (label == 2).sum() >= 5:
            break

    # intensities (arbitrary "MRI" units): background ~100 with texture, organ ~165, core ~110 (background-like)
    bg = 100.0 + 18.0 * _smooth_noise(rng, shape, sigma(4.0))
    image = bg.copy()
    organ_tex = 165.0 + rng.uniform(-15, 15) + 10.0 * _smooth_noise(rng, shape, sigma(2.0))
    image[label == 1] = organ_tex[label == 1]
    core_int = 110.0 + rng.uniform(-10, 10) + 8.0 * _smooth_noise(rng, shape, sigma(2.0))
    image[label == 2] = core_int[label == 2]
    # distractors: organ-bright blobs in the background (unlabeled tissue)
    for _ in range(int(rng.integers(2, 5))):
        d_axes = np.maximum(extent * rng.uniform(0.05, 0.12, size=3), [spacing[0], 1.5, 1.5])
        d_center = rng.uniform(0, 1, size=3) * extent
        blob = (_ellipsoid_radius(coords, d_center, d_axes, rng.uniform(0, np.pi)) < 1.0) & (label == 0)
        image[blob] = rng.uniform(140, 190) + 8.0 * rng.standard_normal(int(blob.sum()))
    # acquisition: bias field, noise, global scale/offset
    bias = np.exp(0.15 * _smooth_noise(rng, shape, sigma(25.0)))
    image = image * bias + rng.normal(0.0, 12.0, size=shape)
    image = image * rng.uniform(0.6, 1.6) + rng.uniform(-20, 20)
    return image.astype(np.float32), label


def _write_nifti(arr: np.ndarray, path: str, spacing) -> None:
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(tuple(float(s) for s in spacing[::-1]))  # SimpleITK: (x, y, z)
    sitk.WriteImage(img, path, useCompression=True)


def _write_json(obj, path: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=4, sort_keys=False)
        f.write("\n")


def _write_case(job: tuple) -> None:
    """Synthesize one case and write its image (and label, if ``label_dir``): one job of
    :func:`generate_demo_dataset`, module-level so that a process pool can run it."""
    seed, case, im_dir, lb_dir, shape, spacing = job
    image, label = synthesize_case(seed, int(case.rsplit("_", 1)[1]), shape, spacing)
    _write_nifti(image, os.path.join(im_dir, f"{case}_0000{FILE_ENDING}"), spacing)
    if lb_dir:
        _write_nifti(label, os.path.join(lb_dir, case + FILE_ENDING), spacing)


def generate_demo_dataset(output_root: str, dataset_id: int = 990, num_labeled: int = 8, num_val: int = 4,
                          num_unlabeled: int = 32, num_test: int = 8, seed: int = 0, shape=(16, 64, 64),
                          spacing=(3.0, 1.0, 1.0), overwrite: bool = True, num_processes: int = 1) -> str:
    """Write ``<output_root>/DatasetXXX_SemiDemo`` (default ``Dataset990_SemiDemo``) and return its path.

    Cases ``SemiDemo_000 ...`` are numbered in the order labeled, validation, test, unlabeled. imagesTr/labelsTr
    hold the labeled + validation cases, imagesTs/labelsTs the test cases, imagesUnlabeled the unlabeled images;
    ``splits_final.json`` has one fold with train = labeled ids and val = validation ids (val = labeled ids if
    ``num_val == 0``). ``shape``/``spacing`` are in (z, y, x) order. The folder is written into a temporary sibling
    and renamed into place; an existing folder is replaced if ``overwrite`` (default), else FileExistsError.
    ``num_processes`` > 1 writes the cases in a 'spawn' process pool (the same files: each case depends on
    ``seed`` and its index only).
    """
    for n, v in (("num_labeled", num_labeled), ("num_val", num_val), ("num_test", num_test),
                 ("num_unlabeled", num_unlabeled)):
        if int(v) != v or v < (1 if n == "num_labeled" else 0):
            raise ValueError(f"{n} must be an integer >= {1 if n == 'num_labeled' else 0}, got {v!r}")
    if not 1 <= int(dataset_id) <= 999:
        raise ValueError(f"dataset_id must be between 1 and 999, got {dataset_id}")
    output_root = os.path.abspath(os.path.expanduser(str(output_root)))
    dataset_name = f"Dataset{int(dataset_id):03d}_{DEMO_NAME}"
    target = os.path.join(output_root, dataset_name)
    if os.path.exists(target) and not overwrite:
        raise FileExistsError(f"{target} already exists; pass overwrite=True to regenerate it.")
    if os.path.isdir(output_root):
        clash = [d for d in os.listdir(output_root) if d.startswith(f"Dataset{int(dataset_id):03d}_")
                 and d != dataset_name]
        if clash:
            raise FileExistsError(f"Dataset id {dataset_id} is already used by {os.path.join(output_root, clash[0])}; "
                                  f"choose another dataset_id.")

    counts = {"labeled": int(num_labeled), "val": int(num_val), "test": int(num_test),
              "unlabeled": int(num_unlabeled)}
    ids: Dict[str, list] = {}
    i = 0
    for group, n in counts.items():
        ids[group] = [f"{DEMO_NAME}_{j:03d}" for j in range(i, i + n)]
        i += n

    os.makedirs(output_root, exist_ok=True)
    tmp = os.path.join(output_root, f".{dataset_name}.partial-{uuid.uuid4().hex[:8]}")
    os.mkdir(tmp)
    try:
        dirs = {g: (os.path.join(tmp, im), os.path.join(tmp, lb) if lb else None) for g, im, lb in
                (("labeled", "imagesTr", "labelsTr"), ("val", "imagesTr", "labelsTr"),
                 ("test", "imagesTs", "labelsTs"), ("unlabeled", "imagesUnlabeled", None))}
        for im, lb in dirs.values():
            os.makedirs(im, exist_ok=True)
            if lb:
                os.makedirs(lb, exist_ok=True)
        jobs = [(int(seed), case, *dirs[group], shape, spacing) for group, case_ids in ids.items()
                for case in case_ids]
        if int(num_processes) > 1 and len(jobs) > 1:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            with ProcessPoolExecutor(min(int(num_processes), len(jobs)),
                                     mp_context=multiprocessing.get_context("spawn")) as pool:
                list(pool.map(_write_case, jobs))
        else:
            for job in jobs:
                _write_case(job)
        _write_json({
            "name": DEMO_NAME,
            "description": "Synthetic 3D MRI-like volumes (organ with inner core) generated by nnunet_semi.apps.demo_data",
            "channel_names": {"0": "MRI"},
            "labels": dict(LABELS),
            "numTraining": counts["labeled"] + counts["val"],
            "file_ending": FILE_ENDING,
            "nnunet_semi": {
                "source": "synthetic (nnunet_semi.apps.demo_data.generate_demo_dataset)",
                "seed": int(seed),
                "shape": [int(s) for s in shape],
                "spacing": [float(s) for s in spacing],
                "num_labeled": counts["labeled"],
                "num_val": counts["val"],
                "num_test": counts["test"],
                "num_unlabeled": counts["unlabeled"],
                "unlabeled_folder": "imagesUnlabeled",
                "splits_file": "splits_final.json",
                "val_is_train": counts["val"] == 0,
                **{g: v for g, v in ids.items()},
            },
        }, os.path.join(tmp, "dataset.json"))
        _write_json([{"train": ids["labeled"], "val": ids["val"] or list(ids["labeled"])}],
                    os.path.join(tmp, "splits_final.json"))
        if os.path.exists(target):
            old = os.path.join(output_root, f".{dataset_name}.old-{uuid.uuid4().hex[:8]}")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def demo_data_entry(argv: Optional[Sequence[str]] = None) -> None:
    p = argparse.ArgumentParser(prog="python -m nnunet_semi.apps.demo_data",
                                description="Generate the synthetic nnunet-semi demo dataset (nnU-Net raw layout).")
    p.add_argument("output_root", help="raw data root, e.g. $nnUNet_raw")
    p.add_argument("--id", type=int, default=990, dest="dataset_id")
    p.add_argument("--labeled", type=int, default=8)
    p.add_argument("--val", type=int, default=4)
    p.add_argument("--unlabeled", type=int, default=32)
    p.add_argument("--test", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shape", type=int, nargs=3, default=(16, 64, 64), metavar=("Z", "Y", "X"))
    p.add_argument("-np", type=int, default=1, dest="num_processes", help="worker processes (default: 1)")
    a = p.parse_args(argv)
    out = generate_demo_dataset(a.output_root, a.dataset_id, a.labeled, a.val, a.unlabeled, a.test, a.seed,
                                tuple(a.shape), num_processes=a.num_processes)
    print(out)
    print(f"imagesTr: {a.labeled + a.val} ({a.labeled} labeled + {a.val} validation), imagesTs: {a.test}, "
          f"imagesUnlabeled: {a.unlabeled}")


if __name__ == "__main__":
    demo_data_entry()
