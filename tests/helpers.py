"""Helpers shared by the CLI tests: prediction + evaluation with nnU-Net's commands, interrupted runs, comparisons."""
import json
import signal
import socket
import subprocess
from pathlib import Path

import SimpleITK as sitk
import torch

from tests.conftest import HIPPO_ID, SMALL_PLANS, nnunet_bin, run, seeded_env, train_env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def result_folder(env: dict, dataset: str, trainer: str, configuration: str) -> Path:
    return Path(env["nnUNet_results"]) / dataset / f"{trainer}__{SMALL_PLANS}__{configuration}" / "fold_0"


def predict_and_evaluate(hippocampus_nnunet, trainer: str, configuration: str, name: str) -> dict:
    """nnUNetv2_predict on imagesTs, then nnUNetv2_evaluate_folder against labelsTs; asserts that every test case
    was predicted with its reference's geometry and returns nnU-Net's summary.json."""
    env, raw = hippocampus_nnunet["env"], hippocampus_nnunet["raw"]
    pred = hippocampus_nnunet["root"] / name
    run([nnunet_bin("nnUNetv2_predict"), "-i", raw / "imagesTs", "-o", pred, "-d", HIPPO_ID, "-c", configuration,
         "-f", "0", "-tr", trainer, "-p", SMALL_PLANS, "-device", "cpu", "--disable_tta", "-npp", "1", "-nps", "1"],
        train_env(env))
    plans = result_folder(env, hippocampus_nnunet["dataset"], trainer, configuration).parent / "plans.json"
    run([nnunet_bin("nnUNetv2_evaluate_folder"), raw / "labelsTs", pred, "-djfile", raw / "dataset.json",
         "-pfile", plans], env)
    summary = json.loads((pred / "summary.json").read_text())
    references = sorted((raw / "labelsTs").glob("*.nii.gz"))
    assert sorted(c["reference_file"] for c in summary["metric_per_case"]) == [str(r) for r in references]
    for reference in references:
        assert sitk.ReadImage(str(pred / reference.name)).GetSize() == sitk.ReadImage(str(reference)).GetSize()
    return summary


def train_cmd(trainer: str, configuration: str = "2d") -> list:
    """``nnUNetv2_train`` on the test dataset with the small plans, CPU."""
    return [nnunet_bin("nnUNetv2_train"), str(HIPPO_ID), configuration, "0", "-tr", trainer, "-p", SMALL_PLANS,
            "-device", "cpu"]


def seeded_training(hippocampus_nnunet, unlabeled_preprocessed, trainer: str, seed: int,
                    configuration: str = "2d") -> tuple:
    """One uninterrupted seeded ``nnUNetv2_train`` run in the fixture's own results folder (where
    :func:`predict_and_evaluate` looks): a pipeline test's model and a resume test's reference. Returns
    ``(env, process)``."""
    unlabeled_preprocessed(configuration)
    env = seeded_env(hippocampus_nnunet["env"], seed)
    return env, run(train_cmd(trainer, configuration), env)


def final_checkpoint(env: dict, dataset: str, trainer: str, configuration: str = "2d") -> dict:
    return torch.load(result_folder(env, dataset, trainer, configuration) / "checkpoint_final.pth",
                      map_location="cpu", weights_only=False)


NNUNET_CURVES = ("train_losses", "val_losses", "mean_fg_dice")


def assert_resume_is_bit_identical(hippocampus_nnunet, env_a: dict, trainer: str, configuration: str = "2d",
                                   curves: tuple = (), name: str = None, extra_env: dict = None,
                                   before_resume=None, kill_epoch: int = 1) -> tuple:
    """The training of ``env_a`` (already run to the end) again in a second results folder, killed (SIGKILL) once
    epoch ``kill_epoch`` started and continued with ``--c``: asserts that the final weights, optimizer state and curves
    (nnU-Net's and ``curves``) equal the uninterrupted run's. ``before_resume(folder)`` may inspect the interrupted
    folder. Returns ``(final_a, final_b, resume_process)`` for method-specific checks."""
    assert env_a.get("nnUNet_semi_threads") == "1" and "nnUNet_semi_seed" in env_a, \
        "the reference run must be seeded and single-threaded: build its env with tests.conftest.seeded_env"
    dataset = hippocampus_nnunet["dataset"]
    env_b = {**env_a, "nnUNet_results": str(hippocampus_nnunet["root"] / f"res_{name or trainer}_resumed"),
             **(extra_env or {})}
    cmd = train_cmd(trainer, configuration)
    kill_at_epoch(cmd, env_b, kill_epoch)
    folder = result_folder(env_b, dataset, trainer, configuration)
    assert not (folder / "checkpoint_final.pth").exists()
    if before_resume is not None:
        before_resume(folder)
    proc = run(cmd + ["--c"], env_b)

    final_a = final_checkpoint(env_a, dataset, trainer, configuration)
    final_b = final_checkpoint(env_b, dataset, trainer, configuration)
    assert_identical(final_a["network_weights"], final_b["network_weights"], "network_weights")
    assert_identical(final_a["optimizer_state"], final_b["optimizer_state"], "optimizer_state")
    for key in NNUNET_CURVES + tuple(curves):
        assert final_a["logging"][key] == final_b["logging"][key], key
    return final_a, final_b, proc


def kill_at_epoch(cmd: list, env: dict, epoch: int) -> None:
    """Start a training and SIGKILL it as soon as it logs the start of ``epoch`` (an interrupted job)."""
    proc = subprocess.Popen([str(c) for c in cmd], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.rstrip().endswith(f"Epoch {epoch}"):
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "".join(seen[-40:])


def assert_identical(a, b, path: str = "") -> None:
    """Recursively assert bit-identical checkpoint contents (tensors with torch.equal)."""
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), f"tensor differs at {path}"
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), f"keys differ at {path}"
        for k in a:
            assert_identical(a[k], b[k], f"{path}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"length differs at {path}"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_identical(x, y, f"{path}[{i}]")
    else:
        assert a == b, f"value differs at {path}: {a} vs {b}"
