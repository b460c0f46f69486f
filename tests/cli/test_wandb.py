"""Weights & Biases with our trainers and pretraining (issue 19 item 6): ``nnUNet_wandb_enabled=1`` and
``nnUNet_wandb_mode=offline``, nnU-Net's own W&B logger. The semi-supervised curves must arrive in the W&B run beside
nnU-Net's (same epochs, the values of the checkpoint's log), and a pretraining run must log its curves too.

The offline run file (``run-<id>.wandb``) is read back here: W&B's record log (LevelDB log format: 32 KiB blocks,
7-byte record headers, chunked records) of protobuf ``Record`` messages; the ``history`` records are the logged rows.
"""
import json
import os
import re
import struct
from pathlib import Path

import pytest
import torch

from tests.conftest import HIPPO_ID, SMALL_PLANS, nnunet_bin, run, seeded_env
from tests.helpers import final_checkpoint, result_folder, train_cmd

try:
    from wandb.proto import wandb_internal_pb2
except ImportError:  # W&B is in the test extra; CI installs it, so there a missing W&B is a failure, not a skip
    if os.environ.get("CI"):
        raise
    pytest.skip("W&B is not installed (a test extra): pip install -e '.[test]'", allow_module_level=True)

BLOCK, HEADER = 32768, 7
TRAINER = "nnUNetTrainerCPS_2epochs_5its"
NNUNET_KEYS = ("train_losses", "val_losses", "mean_fg_dice", "ema_fg_dice")
OUR_KEYS = ("sup_losses", "cps_losses", "pseudo_label_agreement", "foreground_agreement")


def wandb_history(path: Path) -> list:
    """The ``history`` rows of an offline W&B run file, in order (dicts of key -> value)."""
    raw = path.read_bytes()
    assert raw[:4] == b":W&B", f"{path} is not a W&B run file"
    pos, chunks, rows = HEADER, [], []
    while pos + HEADER <= len(raw):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # block trailer padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", raw[pos:pos + HEADER])
        if kind == 0 and length == 0:
            break
        chunks.append(raw[pos + HEADER:pos + HEADER + length])
        pos += HEADER + length
        if kind in (1, 4):  # a full record, or the last chunk of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(b"".join(chunks))
            chunks = []
            if record.WhichOneof("record_type") == "history":
                rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                             for item in record.history.item})
    return rows


def _run_file(folder: Path) -> Path:
    files = sorted(folder.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(files) == 1, f"expected one offline W&B run in {folder}/wandb, found {files}"
    return files[0]


def _wandb_env(hippocampus_nnunet, tmp_path) -> dict:
    return {**seeded_env(hippocampus_nnunet["env"], 0), "nnUNet_results": str(tmp_path),
            "nnUNet_wandb_enabled": "1", "nnUNet_wandb_mode": "offline", "nnUNet_wandb_project": "nnunet-semi-test",
            "WANDB_SILENT": "true", "WANDB_DIR": str(tmp_path), "WANDB_CACHE_DIR": str(tmp_path / "wandb_cache"),
            "WANDB_CONFIG_DIR": str(tmp_path / "wandb_config")}


def test_semi_supervised_curves_arrive_in_wandb(hippocampus_nnunet, unlabeled_preprocessed, tmp_path):
    unlabeled_preprocessed("2d")
    env = _wandb_env(hippocampus_nnunet, tmp_path)
    run(train_cmd(TRAINER), env)
    folder = result_folder(env, hippocampus_nnunet["dataset"], TRAINER, "2d")
    logged = final_checkpoint(env, hippocampus_nnunet["dataset"], TRAINER)["logging"]
    rows = wandb_history(_run_file(folder))
    by_epoch = {}
    for row in rows:
        by_epoch.setdefault(row["_step"], {}).update(row)
    assert sorted(by_epoch) == [0, 1], sorted(by_epoch)
    for epoch, row in by_epoch.items():
        for key in NNUNET_KEYS + OUR_KEYS:
            assert key in row, f"{key} missing from W&B epoch {epoch}: {sorted(row)}"
            assert row[key] == pytest.approx(float(logged[key][epoch]), rel=1e-6), (key, epoch)
        assert "dice_per_class_or_region/class_1" in row  # nnU-Net's per-class list, split by its logger


def test_pretraining_curves_arrive_in_wandb(hippocampus_nnunet, unlabeled_preprocessed, tmp_path):
    unlabeled_preprocessed("2d")
    env = _wandb_env(hippocampus_nnunet, tmp_path)
    proc = run([nnunet_bin("nnunet_semi_pretrain"), "-d", HIPPO_ID, "-c", "2d", "-p", SMALL_PLANS, "-m", "simclr",
                "-device", "cpu", "--epochs", 2, "--iters-per-epoch", 2, "--batch-size", 4, "--proj-dim", 16], env)
    path = Path(re.findall(r"\S+checkpoint_final\.pth", proc.stdout)[-1])
    history = torch.load(path, map_location="cpu", weights_only=True)["history"]
    rows = wandb_history(_run_file(path.parent))
    by_epoch = {}
    for row in rows:
        by_epoch.setdefault(row["_step"], {}).update(row)
    assert sorted(by_epoch) == [0, 1], sorted(by_epoch)
    assert set(history) >= {"lr"} and len(history) >= 2
    for key, values in history.items():
        for epoch in (0, 1):
            assert by_epoch[epoch][key] == pytest.approx(values[epoch], rel=1e-6), (key, epoch)
