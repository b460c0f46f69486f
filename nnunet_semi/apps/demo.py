"""``nnunet_semi_demo``: the whole workflow on a generated dataset, on the CPU, in a few minutes.

It runs exactly the commands a user runs on their own data (nnU-Net's unmodified ``nnUNetv2_*`` commands plus
ours), in a work folder of its own:

1. generate ``Dataset990_SemiDemo`` (labeled, unlabeled and test images; ``nnunet_semi.apps.demo_data``);
2. ``nnUNetv2_plan_and_preprocess -d 990 -c 2d``; copy the dataset's ``splits_final.json``; derive small CPU plans;
3. ``nnunet_semi_preprocess_unlabeled -d 990 -c 2d`` (the trainer would also do this on its own);
4. ``nnUNetv2_train 990 2d 0 -tr nnUNetTrainerCPS_<budget> -p nnUNetPlansSmall -device cpu``;
5. ``nnUNetv2_predict`` on imagesTs and ``nnUNetv2_evaluate_folder`` against labelsTs; prints the Dice table.

Reproducibility: training is seeded (``nnUNet_semi_seed=0``) with single-process augmentation
(``nnUNet_n_proc_DA=0``), and training and prediction run with a fixed number of torch threads (``--threads``,
default 2: ``nnUNet_semi_threads`` for the trainer, ``nnUNet_def_n_proc`` for ``nnUNetv2_predict``, which caps its
threads at that value), whatever the calling shell exports. CPU float sums depend on how many threads split them,
so the printed table is the same for the same thread count, software versions (torch, nnU-Net) and CPU type.
"""
import argparse
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from nnunet_semi.apps.ext_trainer import ext_trainer_value
from nnunet_semi.utils.commands import installed_command
from nnunet_semi.utils.environment import SEED_ENV, THREADS_ENV

DATASET_ID = 990
SMALL_PLANS = "nnUNetPlansSmall"
DEFAULT_THREADS = 2


def _bin(name: str) -> str:
    """A console script of the running interpreter's environment (the project's venv), else found on PATH."""
    return installed_command(name) or name


def run_step(title: str, cmd: list, env: dict) -> None:
    print(f"\n=== {title}\n$ {' '.join(cmd)}", flush=True)
    start = time.time()
    subprocess.run(cmd, env=env, check=True)
    print(f"--- {title}: {time.time() - start:.0f} s", flush=True)


def nnunet_environment(work: Path) -> dict:
    env = dict(os.environ)
    for var, sub in (("nnUNet_raw", "raw"), ("nnUNet_preprocessed", "preprocessed"), ("nnUNet_results", "results")):
        env[var] = str(work / sub)
        (work / sub).mkdir(parents=True, exist_ok=True)
    env["nnUNet_extTrainer"] = ext_trainer_value(os.environ.get("nnUNet_extTrainer"))
    env.setdefault("nnUNet_def_n_proc", "2")
    return env


def step_environments(env: dict, threads: int = DEFAULT_THREADS) -> tuple:
    """``(train_env, predict_env)``: seeded, single-process augmentation, and ``threads`` torch threads for training
    (``nnUNet_semi_threads``) and prediction (``nnUNet_def_n_proc``: ``nnUNetv2_predict`` caps torch's threads at
    it), overriding what the calling shell exports so that the table depends on ``threads`` only."""
    if int(threads) < 1:
        raise ValueError(f"threads must be >= 1, got {threads}. Fix: pass --threads 2 (the default) or another "
                         f"positive count.")
    train_env = {**env, "nnUNet_n_proc_DA": env.get("nnUNet_n_proc_DA", "0"),
                 SEED_ENV: env.get(SEED_ENV, "0"), THREADS_ENV: str(threads)}
    return train_env, {**train_env, "nnUNet_def_n_proc": str(threads)}


def dice_table(summary_file: Path, dataset_json: dict) -> str:
    summary = json.loads(summary_file.read_text())
    names = {str(v): k for k, v in dataset_json["labels"].items()}
    rows = [f"| {names.get(label, label)} (label {label}) | {m['Dice']:.4f} |"
            for label, m in summary["mean"].items()]
    rows.append(f"| mean foreground | {summary['foreground_mean']['Dice']:.4f} |")
    return "\n".join(["| structure | Dice |", "|---|---|", *rows])


def run_demo(work: Path, trainer: str, keep: bool = False, threads: int = DEFAULT_THREADS) -> str:
    from dataset_conversion.msd import copy_splits_to_preprocessed
    from nnunet_semi.apps.demo_data import generate_demo_dataset
    from nnunet_semi.apps.small_plans import make_small_plans

    if work.exists() and not keep:
        shutil.rmtree(work)
    env = nnunet_environment(work)
    os.environ.update({k: env[k] for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")})
    # a fixed seed, single-process augmentation and fixed thread counts: the same table for the same threads,
    # software versions and CPU type (module docstring)
    train_env, predict_env = step_environments(env, threads)

    raw = Path(generate_demo_dataset(env["nnUNet_raw"], DATASET_ID))
    print(f"generated {raw}: " + ", ".join(f"{d}: {len(list((raw / d).glob('*.nii.gz')))}" for d in
                                          ("imagesTr", "imagesUnlabeled", "imagesTs")))
    run_step("plan and preprocess (nnU-Net, labeled cases only)",
             [_bin("nnUNetv2_plan_and_preprocess"), "-d", str(DATASET_ID), "-c", "2d", "-np", "2", "-npfp", "2",
              "--verify_dataset_integrity"], env)
    copy_splits_to_preprocessed(DATASET_ID)
    make_small_plans(DATASET_ID, target_plans=SMALL_PLANS, configurations=["2d"], base_features=8,
                     max_features=64, batch_size=8)
    run_step("preprocess unlabeled images", [_bin("nnunet_semi_preprocess_unlabeled"), "-d", str(DATASET_ID),
                                             "-c", "2d", "-p", SMALL_PLANS, "-np", "2"], env)
    run_step(f"train {trainer} (CPU)", [_bin("nnUNetv2_train"), str(DATASET_ID), "2d", "0", "-tr", trainer, "-p",
                                        SMALL_PLANS, "-device", "cpu"], train_env)
    pred = work / "predictions"
    run_step("predict imagesTs (nnUNetv2_predict)",
             [_bin("nnUNetv2_predict"), "-i", str(raw / "imagesTs"), "-o", str(pred), "-d", str(DATASET_ID), "-c",
              "2d", "-f", "0", "-tr", trainer, "-p", SMALL_PLANS, "-device", "cpu", "--disable_tta", "-npp", "1",
              "-nps", "1"], predict_env)
    dataset_name = raw.name
    plans_file = Path(env["nnUNet_results"]) / dataset_name / f"{trainer}__{SMALL_PLANS}__2d" / "plans.json"
    run_step("evaluate (nnUNetv2_evaluate_folder)",
             [_bin("nnUNetv2_evaluate_folder"), str(raw / "labelsTs"), str(pred), "-djfile",
              str(raw / "dataset.json"), "-pfile", str(plans_file)], env)
    table = dice_table(pred / "summary.json", json.loads((raw / "dataset.json").read_text()))
    print(f"\nTest-set Dice of {trainer} ({pred / 'summary.json'}):\n{table}")
    return table


def demo_entry(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="example: nnunet_semi_demo --work demo_output --threads 2")
    parser.add_argument("--work", default="demo_output", help="work folder (default: ./demo_output)")
    parser.add_argument("--trainer", default="nnUNetTrainerCPS_10epochs_100its",
                        help="trainer to run (default: nnUNetTrainerCPS_10epochs_100its)")
    parser.add_argument("--keep", action="store_true", help="keep an existing work folder instead of starting over")
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS,
                        help=f"torch threads for training and prediction (default: {DEFAULT_THREADS}); the printed "
                             f"table is reproducible for a given thread count, software versions and CPU type")
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    run_demo(Path(args.work).resolve(), args.trainer, args.keep, args.threads)


if __name__ == "__main__":
    demo_entry()
