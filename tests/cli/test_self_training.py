"""Self-training (Bai et al. 2017) on real data: one command runs round 0 (labeled-only nnU-Net), pseudo-labels
imagesUnlabeled with nnUNetv2_predict, builds + preprocesses the derived dataset with the source's plans and
retrains; every round's model is evaluated (nnU-Net's validation summary, test prediction + evaluation)."""
import json
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import pytest

import torch

from tests.conftest import HIPPO_ID, SMALL_PLANS, nnunet_bin, run, train_env

TRAINER = "nnUNetTrainerLabeledOnly_2epochs_5its"
MAX_UNLABELED = 4  # of the fixture's 40 unlabeled images: nnU-Net's prediction dominates the CPU cost


@pytest.fixture(scope="module")
def self_training_run(hippocampus_nnunet):
    env = {**train_env(hippocampus_nnunet["env"]), "nnUNet_semi_seed": "0"}
    proc = run([sys.executable, "-m", "nnunet_semi.apps.self_training", "-d", HIPPO_ID, "-c", "2d", "-f", "0", "-tr",
                TRAINER, "-p", SMALL_PLANS, "--rounds", "1", "-device", "cpu", "-np", "1", "--disable-tta",
                "--max-unlabeled", MAX_UNLABELED], env)
    return proc


def _geometry(path):
    image = sitk.ReadImage(str(path))
    return image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection()


def test_self_training_one_round(hippocampus_nnunet, self_training_run):
    env, source_raw, source = hippocampus_nnunet["env"], hippocampus_nnunet["raw"], hippocampus_nnunet["dataset"]
    raw_root, pre_root, res_root = (Path(env[v]) for v in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"))
    derived = f"Dataset{HIPPO_ID + 1}_{source.split('_', 1)[1]}SelfTrainR1"
    out = self_training_run.stdout
    assert "[self-training" in out and f"round 1: writing {derived}" in out
    assert not [p for p in raw_root.iterdir() if p.name.endswith(".partial")]

    # the derived raw dataset: every labeled case unchanged, every unlabeled image with a pseudo-label of its geometry
    draw = raw_root / derived
    pool = sorted(p.name[:-len("_0000.nii.gz")] for p in (source_raw / "imagesUnlabeled").glob("*.nii.gz"))
    labeled = sorted(p.name[:-len(".nii.gz")] for p in (source_raw / "labelsTr").glob("*.nii.gz"))
    assert len(pool) == 40 and len(labeled) == 13
    unlabeled = pool[:MAX_UNLABELED]  # --max-unlabeled: the first cases by name, the others are not used
    assert sorted(p.name[:-len(".nii.gz")] for p in (draw / "labelsTr").glob("*.nii.gz")) == sorted(labeled +
                                                                                                     unlabeled)
    for case in labeled:
        assert (draw / "labelsTr" / f"{case}.nii.gz").read_bytes() == \
            (source_raw / "labelsTr" / f"{case}.nii.gz").read_bytes()
        assert (draw / "imagesTr" / f"{case}_0000.nii.gz").read_bytes() == \
            (source_raw / "imagesTr" / f"{case}_0000.nii.gz").read_bytes()
    foreground = 0
    for case in unlabeled:
        image = source_raw / "imagesUnlabeled" / f"{case}_0000.nii.gz"
        assert (draw / "imagesTr" / f"{case}_0000.nii.gz").read_bytes() == image.read_bytes()
        label = draw / "labelsTr" / f"{case}.nii.gz"
        size, spacing, origin, direction = _geometry(label)
        ref = _geometry(image)
        assert size == ref[0] and np.allclose(spacing, ref[1]) and np.allclose(origin, ref[2]) and \
            np.allclose(direction, ref[3])
        values = np.unique(sitk.GetArrayFromImage(sitk.ReadImage(str(label))))
        assert set(values.tolist()) <= {0, 1, 2}
        foreground += int(values.max() > 0)
    print(f"pseudo-labels with foreground: {foreground}/{len(unlabeled)}")
    dataset_json = json.loads((draw / "dataset.json").read_text())
    assert dataset_json["numTraining"] == 13 + MAX_UNLABELED
    marker = json.loads((draw / "self_training.json").read_text())
    assert marker == {"source": source, "round": 1, "configuration": "2d", "fold": "0", "trainer": TRAINER,
                      "plans": SMALL_PLANS, "unlabeled_cases": unlabeled}

    # splits: validation = the source's (real labels only), training = the source's + every pseudo-labeled case
    source_splits = json.loads((pre_root / source / "splits_final.json").read_text())
    splits = json.loads((pre_root / derived / "splits_final.json").read_text())
    assert len(splits) == len(source_splits)
    for s, d in zip(source_splits, splits):
        assert sorted(d["val"]) == sorted(s["val"]) and not set(d["val"]) & set(unlabeled)
        assert sorted(d["train"]) == sorted(s["train"] + unlabeled)
    # the source's plans, transferred (only the dataset name differs)
    plans = json.loads((pre_root / derived / f"{SMALL_PLANS}.json").read_text())
    source_plans = json.loads((pre_root / source / f"{SMALL_PLANS}.json").read_text())
    assert plans["dataset_name"] == derived
    assert plans["configurations"] == source_plans["configurations"]
    data_identifier = plans["configurations"]["2d"]["data_identifier"]
    assert len(list((pre_root / derived / data_identifier).glob("*.pkl"))) == 13 + MAX_UNLABELED

    # both rounds trained, validated by nnU-Net and evaluated on the test set
    summary_path = res_root / source / f"SelfTraining__{TRAINER}__{SMALL_PLANS}__2d" / "fold_0" / "summary.json"
    summary = json.loads(summary_path.read_text())
    assert [r["round"] for r in summary["rounds"]] == [0, 1]
    assert [r["dataset"] for r in summary["rounds"]] == [source, derived]
    tests = sorted(p.name for p in (source_raw / "labelsTs").glob("*.nii.gz"))
    for row, dataset in zip(summary["rounds"], (source, derived)):
        model = res_root / dataset / f"{TRAINER}__{SMALL_PLANS}__2d" / "fold_0"
        assert row["model"] == str(model) and (model / "checkpoint_final.pth").is_file()
        validation = json.loads((model / "validation" / "summary.json").read_text())
        assert row["validation_dice"] == validation["foreground_mean"]["Dice"]
        assert sorted(Path(c["reference_file"]).name[:-len(".nii.gz")] for c in validation["metric_per_case"]) \
            == sorted(source_splits[0]["val"])
        test = json.loads(Path(row["test_summary"]).read_text())
        assert row["test_dice"] == test["foreground_mean"]["Dice"]
        assert sorted(Path(c["reference_file"]).name for c in test["metric_per_case"]) == tests
        print(f"round {row['round']}: validation Dice {row['validation_dice']:.4f}, test Dice {row['test_dice']:.4f}")


def test_self_training_rerun_reuses_everything(hippocampus_nnunet, self_training_run):
    """Re-running the finished command redoes nothing (no training, prediction or preprocessing)."""
    env = {**train_env(hippocampus_nnunet["env"]), "nnUNet_semi_seed": "0"}
    proc = run([sys.executable, "-m", "nnunet_semi.apps.self_training", "-d", HIPPO_ID, "-c", "2d", "-f", "0", "-tr",
                TRAINER, "-p", SMALL_PLANS, "--rounds", "1", "-device", "cpu", "--max-unlabeled", MAX_UNLABELED], env)
    assert "$ nnUNetv2_" not in proc.stdout
    assert proc.stdout.count("exists, reused") == 4  # 2 models, 1 raw + 1 preprocessed dataset


def test_two_step_semi_supervised_on_the_derived_dataset(hippocampus_nnunet, self_training_run):
    """Chaitanya et al. 2023, Table II "Two step Tr. (semi-sup)", as README's commands on the self-training
    command's derived dataset (labeled cases + pseudo-labeled unlabeled images): stage 1
    nnUNetTrainerLocalContrastPretrain (the local contrastive loss alone, on labels and pseudo-labels), stage 2
    nnU-Net's supervised training from its checkpoint (-pretrained_weights). Stage 2 starts from stage 1's encoder
    and decoder (nnU-Net's loader, segmentation layers fresh) and is validated and predicts like any nnU-Net model."""
    env = {**train_env(hippocampus_nnunet["env"]), "nnUNet_semi_seed": "0"}
    res_root = Path(env["nnUNet_results"])
    derived = f"Dataset{HIPPO_ID + 1}_{hippocampus_nnunet['dataset'].split('_', 1)[1]}SelfTrainR1"
    stage1 = "nnUNetTrainerLocalContrastPretrain_2epochs_5its"
    proc = run([nnunet_bin("nnUNetv2_train"), derived, "2d", "0", "-tr", stage1, "-p", SMALL_PLANS, "-device", "cpu"],
               env)
    pre_dir = res_root / derived / f"{stage1}__{SMALL_PLANS}__2d" / "fold_0"
    log = "".join(p.read_text() for p in pre_dir.glob("training_log_*.txt"))
    assert "Two-step stage 1: local contrastive loss only" in log and "final validation is skipped" in log
    assert not (pre_dir / "validation").exists()
    pretrained = torch.load(pre_dir / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    curve = pretrained["logging"]["contrastive_losses"]
    assert len(curve) == 2 and all(0.0 < v < 10.0 for v in curve), curve  # eq. 4 per anchor: -log of a softmax
    assert pretrained["logging"]["train_losses"] == pytest.approx(curve)

    # stage 2: nnU-Net's trainer on the same derived dataset, from stage 1's weights
    stage2 = "nnUNetTrainerLabeledOnly_2epochs_5its"
    proc = run([nnunet_bin("nnUNetv2_train"), derived, "2d", "0", "-tr", stage2, "-p", SMALL_PLANS, "-device", "cpu",
                "-pretrained_weights", pre_dir / "checkpoint_final.pth"], env)
    assert f"Loading pretrained weights from file  {pre_dir / 'checkpoint_final.pth'}" in proc.stdout
    fine_dir = res_root / derived / f"{stage2}__{SMALL_PLANS}__2d" / "fold_0"
    validation = json.loads((fine_dir / "validation" / "summary.json").read_text())
    assert 0.0 <= validation["foreground_mean"]["Dice"] <= 1.0
    # 10 SGD steps move the loaded encoder by a few percent; a fresh initialisation would be ~100 % away
    fine = torch.load(fine_dir / "checkpoint_final.pth", map_location="cpu", weights_only=False)["network_weights"]
    start = pretrained["network_weights"]
    convs = [k for k in fine if k.startswith("encoder.") and k.endswith("conv.weight")]
    assert convs and not any(k.startswith("contrastive_head.") for k in fine)
    moved = max(float((fine[k] - start[k]).norm() / start[k].norm()) for k in convs)
    assert moved < 0.3, moved
