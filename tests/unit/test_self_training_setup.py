"""Self-training set-up errors, on a fake nnU-Net tree (no training): each names the file/setting and the fix."""
import json

import pytest

from nnunet_semi.apps.self_training import SelfTraining, SelfTrainingError, derived_dataset_name

SOURCE = "Dataset123_Toy"


@pytest.fixture
def tree(tmp_path, monkeypatch):
    roots = {v: tmp_path / v for v in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    for var, path in roots.items():
        path.mkdir()
        monkeypatch.setenv(var, str(path))
    raw = roots["nnUNet_raw"] / SOURCE
    for sub in ("imagesTr", "labelsTr", "imagesUnlabeled"):
        (raw / sub).mkdir(parents=True)
    for case in ("a", "b"):
        (raw / "imagesTr" / f"{case}_0000.nii.gz").touch()
        (raw / "labelsTr" / f"{case}.nii.gz").touch()
    (raw / "imagesUnlabeled" / "u_0000.nii.gz").touch()
    (raw / "dataset.json").write_text(json.dumps({"channel_names": {"0": "MRI"}, "labels": {"background": 0, "x": 1},
                                                  "numTraining": 2, "file_ending": ".nii.gz"}))
    (roots["nnUNet_preprocessed"] / SOURCE).mkdir()
    (roots["nnUNet_preprocessed"] / SOURCE / "P.json").write_text(json.dumps({"configurations": {"2d": {}}}))
    return roots


def test_derived_names_and_defaults(tree):
    st = SelfTraining(123, "2d", trainer="T", plans="P", rounds=2)
    assert st.names == [SOURCE, "Dataset124_ToySelfTrainR1", "Dataset125_ToySelfTrainR2"]
    assert derived_dataset_name(SOURCE, 7, 3) == "Dataset007_ToySelfTrainR3"
    assert sorted(st.unlabeled) == ["u"] and sorted(st.labeled) == ["a", "b"]


def test_missing_unlabeled_images(tree):
    folder = tree["nnUNet_raw"] / SOURCE / "imagesUnlabeled"
    (folder / "u_0000.nii.gz").unlink()
    with pytest.raises(SelfTrainingError, match="imagesUnlabeled.*is empty"):
        SelfTraining(123, "2d", plans="P")
    folder.rmdir()
    with pytest.raises(SelfTrainingError, match="No folder .*imagesUnlabeled"):
        SelfTraining(123, "2d", plans="P")


def test_dataset_id_collision(tree):
    (tree["nnUNet_preprocessed"] / "Dataset125_Other").mkdir()
    with pytest.raises(SelfTrainingError, match=r"id 125 \(round 2\) is taken by Dataset125_Other.*--first-id"):
        SelfTraining(123, "2d", plans="P", rounds=2)
    SelfTraining(123, "2d", plans="P", rounds=1)  # round 1 only uses 124
    SelfTraining(123, "2d", plans="P", rounds=2, first_id=200)
    # a folder with our name but made by another run (or not by self-training) is refused as well
    mine = tree["nnUNet_raw"] / "Dataset200_ToySelfTrainR1"
    mine.mkdir()
    with pytest.raises(SelfTrainingError, match="taken by Dataset200_ToySelfTrainR1"):
        SelfTraining(123, "2d", plans="P", first_id=200)
    (mine / "self_training.json").write_text(json.dumps({"source": SOURCE, "round": 1, "configuration": "2d",
                                                         "fold": "0", "trainer": "OtherTrainer", "plans": "P",
                                                         "unlabeled_cases": ["u"]}))
    with pytest.raises(SelfTrainingError, match="made by another self-training run"):
        SelfTraining(123, "2d", plans="P", first_id=200)
    SelfTraining(123, "2d", trainer="OtherTrainer", plans="P", first_id=200)  # the same run: resumed
    with pytest.raises(SelfTrainingError, match="outside 1..999"):
        SelfTraining(123, "2d", plans="P", rounds=2, first_id=999)
    with pytest.raises(SelfTrainingError, match="reuse the source id"):
        SelfTraining(123, "2d", plans="P", first_id=123)


def test_other_setup_errors(tree):
    with pytest.raises(SelfTrainingError, match="NoPlans.json does not exist.*nnUNetv2_plan_and_preprocess"):
        SelfTraining(123, "2d", plans="NoPlans")
    with pytest.raises(SelfTrainingError, match="configuration '3d_fullres' is not in"):
        SelfTraining(123, "3d_fullres", plans="P")
    with pytest.raises(SelfTrainingError, match="--rounds must be >= 1"):
        SelfTraining(123, "2d", plans="P", rounds=0)
    (tree["nnUNet_raw"] / SOURCE / "imagesUnlabeled" / "a_0000.nii.gz").touch()
    with pytest.raises(SelfTrainingError, match=r"\['a'\] are also labeled cases"):
        SelfTraining(123, "2d", plans="P")


def test_entry_point_reports_errors_without_traceback(tree, capsys):
    from nnunet_semi.apps.self_training import self_training_entry

    with pytest.raises(SystemExit) as exit_info:
        self_training_entry(["-d", "123", "-c", "2d", "-p", "Missing"])
    assert "Error:" in str(exit_info.value) and "Missing.json does not exist" in str(exit_info.value)


def test_max_unlabeled_takes_the_first_cases(tree):
    for case in ("c", "v"):
        (tree["nnUNet_raw"] / SOURCE / "imagesUnlabeled" / f"{case}_0000.nii.gz").touch()
    assert sorted(SelfTraining(123, "2d", plans="P", max_unlabeled=2).unlabeled) == ["c", "u"]
    assert sorted(SelfTraining(123, "2d", plans="P").unlabeled) == ["c", "u", "v"]
    with pytest.raises(SelfTrainingError, match="--max-unlabeled must be >= 1"):
        SelfTraining(123, "2d", plans="P", max_unlabeled=0)
