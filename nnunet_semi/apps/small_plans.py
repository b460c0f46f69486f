"""Derive a small-network copy of nnU-Net plans, for CPU runs (tests, the demo, quick checks).

The copy keeps each configuration's ``data_identifier``, spacing and normalisation, so it trains on the already
preprocessed data without re-preprocessing; only the network width, the batch size and (optionally) the patch
size change. Use it with ``-p <new plans name>`` in ``nnUNetv2_train`` / ``nnUNetv2_predict``.

``spacing_factor`` (optional) lowers the resolution instead: the target spacing is multiplied by the factor, the
patch size divided by it (rounded up to what the network's strides allow), and the ``data_identifier`` gets a
suffix, so the data must be preprocessed for the new plans:
``nnUNetv2_preprocess -d <id> -plans_name <new plans name> -c <configuration>``.
"""
import argparse
import copy
from typing import Dict, Iterable, Optional, Sequence, Union

import numpy as np
from batchgenerators.utilities.file_and_folder_operations import isfile, join, load_json, save_json

from nnunetv2.paths import nnUNet_preprocessed
from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name


def shrink_configuration(config: dict, base_features: int, max_features: int, batch_size: Optional[int],
                         patch_size: Optional[Sequence[int]], spacing_factor: Optional[float] = None) -> dict:
    """Return a copy of one plans configuration with ``features_per_stage[i] = min(base * 2**i, max)`` (and, with
    ``spacing_factor``, a coarser spacing, a smaller patch and a new data identifier; see the module docstring)."""
    config = copy.deepcopy(config)
    kwargs = config["architecture"]["arch_kwargs"]
    kwargs["features_per_stage"] = [min(base_features * 2 ** i, max_features) for i in range(kwargs["n_stages"])]
    if batch_size is not None:
        config["batch_size"] = int(batch_size)
    if spacing_factor is not None and spacing_factor != 1:
        if not spacing_factor > 0:
            raise ValueError(f"spacing_factor must be > 0, got {spacing_factor}")
        divisor = np.prod(np.array(kwargs["strides"]), axis=0)
        config["spacing"] = [float(s * spacing_factor) for s in config["spacing"]]
        config["patch_size"] = [int(np.ceil(p / spacing_factor / d) * d) for p, d in zip(config["patch_size"], divisor)]
        config["median_image_size_in_voxels"] = [float(m / spacing_factor)
                                                 for m in config["median_image_size_in_voxels"]]
        config["data_identifier"] = f"{config['data_identifier']}_spacing_x{spacing_factor:g}"
    if patch_size is not None:
        if len(patch_size) != len(config["patch_size"]):
            raise ValueError(f"patch size {list(patch_size)} has {len(patch_size)} axes, the configuration "
                             f"{len(config['patch_size'])}")
        divisor = np.prod(np.array(kwargs["strides"]), axis=0)
        if any(p % d for p, d in zip(patch_size, divisor)):
            raise ValueError(f"patch size {list(patch_size)} must be divisible by {divisor.tolist()} (the product "
                             f"of the network's strides)")
        config["patch_size"] = [int(p) for p in patch_size]
    return config


def make_small_plans(dataset_name_or_id, source_plans: str = "nnUNetPlans", target_plans: str = "nnUNetPlansSmall",
                     configurations: Optional[Iterable[str]] = None, base_features: int = 8, max_features: int = 64,
                     batch_size: Union[None, int, Dict[str, int]] = None,
                     patch_size: Optional[Sequence[int]] = None, preprocessed_root: Optional[str] = None,
                     spacing_factor: Optional[float] = None) -> str:
    """Write ``<target_plans>.json`` next to the source plans and return its path.

    ``batch_size``: one value for all configurations or ``{configuration: batch size}``; ``preprocessed_root``
    defaults to ``$nnUNet_preprocessed``.
    """
    root = preprocessed_root or nnUNet_preprocessed.require()
    folder = join(root, maybe_convert_to_dataset_name(dataset_name_or_id))
    source = join(folder, source_plans + ".json")
    if not isfile(source):
        raise FileNotFoundError(f"{source} does not exist. Fix: run nnUNetv2_plan_and_preprocess for this dataset "
                                f"first.")
    plans = load_json(source)
    plans["plans_name"] = target_plans
    names = list(configurations) if configurations else list(plans["configurations"])
    for name in names:
        config = plans["configurations"][name]
        if "inherits_from" in config:
            raise ValueError(f"configuration {name} inherits from another one; shrink a standalone configuration")
        batch = batch_size.get(name) if isinstance(batch_size, dict) else batch_size
        plans["configurations"][name] = shrink_configuration(config, base_features, max_features, batch, patch_size,
                                                             spacing_factor)
    target = join(folder, target_plans + ".json")
    save_json(plans, target, sort_keys=False)
    return target


def small_plans_entry():
    parser = argparse.ArgumentParser(description=__doc__,
                                     epilog="example: nnunet_semi_small_plans -d 27 -c 2d -o nnUNetPlansSmall")
    parser.add_argument("-d", required=True, help="dataset name or id")
    parser.add_argument("-p", default="nnUNetPlans", help="source plans identifier")
    parser.add_argument("-o", default="nnUNetPlansSmall", help="new plans identifier")
    parser.add_argument("-c", nargs="+", default=None, help="configurations to shrink (default: all)")
    parser.add_argument("--features", type=int, default=8, help="features of the first stage (doubling per stage)")
    parser.add_argument("--max-features", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--patch-size", type=int, nargs="+", default=None)
    parser.add_argument("--spacing-factor", type=float, default=None,
                        help="coarser resolution: spacing x factor, patch / factor (then run nnUNetv2_preprocess "
                             "with -plans_name of the new plans)")
    args = parser.parse_args()
    print(make_small_plans(args.d, args.p, args.o, args.c, args.features, args.max_features, args.batch_size,
                           args.patch_size, spacing_factor=args.spacing_factor))


if __name__ == "__main__":
    small_plans_entry()
