"""Helpers shared by the CLI tests: prediction + evaluation with nnU-Net's commands, interrupted runs, comparisons."""
import json
import signal
import socket
import subprocess
from pathlib import Path

import SimpleITK as sitk
import torch

from tests.conftest import HIPPO_ID, SMALL_PLANS, nnunet_bin, run, train_env


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
