"""The rest of nnU-Net's toolbox with our trainers (real MSD Hippocampus data, small plans, 2d, CPU).

One seeded CPS run (2 epochs x 5 iterations, validation exported with ``--npz``) is shared by the module:

* zip: ``nnUNetv2_export_model_to_zip`` -> ``nnUNetv2_install_pretrained_model_from_zip`` into an empty results
  folder with empty raw / preprocessed folders -> ``nnUNetv2_predict`` equals, voxel for voxel (probabilities to
  float tolerance), ``nnUNetPredictor.predict_from_files`` and ``predict_single_npy_array`` on the original folder;
* ``--val --npz`` and ``--val --val_best`` re-validate the finished run;
* ``nnUNetv2_find_best_configuration`` over CPS and MC-Net (fold 0), then ``nnUNetv2_ensemble`` and
  ``nnUNetv2_apply_postprocessing`` with the files it selected; folds 0 and 1 share the unlabeled pool;
* ``-pretrained_weights`` with a labeled-only nnU-Net checkpoint, through nnU-Net's ``maybe_load_checkpoint``;
* ResEnc-M presets: ``nnUNetv2_plan_and_preprocess -pl nnUNetPlannerResEncM``, every pretraining method on them and
  one training step + checkpoint + predictor-style strict loading of every trainer.
"""
import json
import shutil
import sys
import zipfile

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from tests.conftest import HIPPO_ID, SMALL_PLANS, nnunet_bin, run, train_env

CPS = "nnUNetTrainerCPS_2epochs_5its"
MCNET = "nnUNetTrainerMCNet_2epochs_5its"
N_TEST = 3

# nnUNetPredictor's Python API on a trained model folder, as a user script (spawned workers need __main__)
PYTHON_API = """
import os, sys
import numpy as np, torch
from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

if __name__ == "__main__":
    model, out, single = sys.argv[1:4]
    images = sys.argv[4:]
    predictor = nnUNetPredictor(use_mirroring=False, device=torch.device("cpu"), allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(model, use_folds=(0,))
    torch.set_num_threads(os.cpu_count())  # as nnUNetv2_predict -device cpu: float sums split alike
    predictor.predict_from_files([[i] for i in images], out, save_probabilities=True,
                                 num_processes_preprocessing=1, num_processes_segmentation_export=1)
    for image in images:
        data, properties = SimpleITKIO().read_images([image])
        seg, probabilities = predictor.predict_single_npy_array(data, properties, None, None, True)
        name = os.path.basename(image)[:-len("_0000.nii.gz")]
        np.save(os.path.join(single, name + "_seg.npy"), seg)
        np.save(os.path.join(single, name + "_prob.npy"), probabilities)
"""

# nnUNetv2_train's own functions (get_trainer_from_args, then maybe_load_checkpoint with -pretrained_weights) for
# several trainers in one process; dumps each network's state_dict or the error
PRETRAINED_PROBE = """
import json, sys, torch
from nnunetv2.run import run_training
from nnunet_semi.networks.dual import unwrap

checkpoint, out, plans = sys.argv[1:4]
results = {}
for name in sys.argv[4:]:
    trainer = run_training.get_trainer_from_args(str(%d), "2d", 0, name, plans, device=torch.device("cpu"))
    try:
        run_training.maybe_load_checkpoint(trainer, False, False, checkpoint)
    except Exception as error:
        results[name] = f"{type(error).__name__}: {error}"
        continue
    torch.save(unwrap(trainer.network).state_dict(), f"{out}/{name}.pth")
    results[name] = "loaded"
json.dump(results, open(f"{out}/results.json", "w"))
""" % HIPPO_ID


@pytest.fixture(scope="module")
def toolbox(hippocampus_nnunet, unlabeled_preprocessed):
    """The module's own results folder and environment (seeded, single-process augmentation)."""
    unlabeled_preprocessed("2d")
    root = hippocampus_nnunet["root"] / "toolbox"
    (root / "results").mkdir(parents=True, exist_ok=True)
    env = {**train_env(hippocampus_nnunet["env"]), "nnUNet_results": str(root / "results"), "nnUNet_semi_seed": "0"}
    inputs = root / "inputs"
    inputs.mkdir(exist_ok=True)
    for image in sorted((hippocampus_nnunet["raw"] / "imagesTs").glob("*_0000.nii.gz"))[:N_TEST]:
        shutil.copy(image, inputs)
    return {"root": root, "env": env, "inputs": inputs, "dataset": hippocampus_nnunet["dataset"]}


def _model_folder(toolbox, trainer: str, plans: str = SMALL_PLANS):
    return toolbox["root"] / "results" / toolbox["dataset"] / f"{trainer}__{plans}__2d"


def _train(toolbox, trainer: str):
    return run([nnunet_bin("nnUNetv2_train"), HIPPO_ID, "2d", "0", "-tr", trainer, "-p", SMALL_PLANS, "-device",
                "cpu", "--npz"], toolbox["env"])


def _predict(env, trainer: str, inputs, out, probabilities: bool = True):
    run([nnunet_bin("nnUNetv2_predict"), "-i", inputs, "-o", out, "-d", HIPPO_ID, "-c", "2d", "-f", "0", "-tr", trainer,
         "-p", SMALL_PLANS, "-device", "cpu", "--disable_tta", "-npp", "1", "-nps", "1",
         *(["--save_probabilities"] if probabilities else [])], env)


@pytest.fixture(scope="module")
def cps_run(toolbox):
    proc = _train(toolbox, CPS)
    assert "Unlabeled stream: 40 cases" in proc.stdout
    return _model_folder(toolbox, CPS)


def _seg(path):
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def test_zip_on_a_bare_machine_predicts_like_the_python_api(toolbox, cps_run, tmp_path):
    """Items 3 + 4 of the toolbox issue: the zip and the plugin are all prediction needs; CLI = Python API."""
    archive = tmp_path / "cps.zip"
    run([nnunet_bin("nnUNetv2_export_model_to_zip"), "-d", HIPPO_ID, "-o", archive, "-c", "2d", "-tr", CPS, "-p",
         SMALL_PLANS, "-f", "0"], toolbox["env"])
    with zipfile.ZipFile(archive) as z:
        names = z.namelist()
    assert f"{toolbox['dataset']}/{CPS}__{SMALL_PLANS}__2d/fold_0/checkpoint_final.pth" in names
    assert not any("unlabeled" in n or n.endswith(".b2nd") for n in names), names

    bare = {k: tmp_path / "bare" / k for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    for folder in bare.values():
        folder.mkdir(parents=True)
    env = {**toolbox["env"], **{k: str(v) for k, v in bare.items()}}
    run([nnunet_bin("nnUNetv2_install_pretrained_model_from_zip"), archive], env)
    installed = bare["nnUNet_results"] / toolbox["dataset"] / f"{CPS}__{SMALL_PLANS}__2d"
    weights = torch.load(installed / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert weights["trainer_name"] == CPS
    assert {k.split(".")[0] for k in weights["network_weights"]} == {"net_a", "net_b"}  # both CPS networks
    from_zip = tmp_path / "pred_zip"
    _predict(env, CPS, toolbox["inputs"], from_zip)
    assert not any(bare["nnUNet_raw"].iterdir()) and not any(bare["nnUNet_preprocessed"].iterdir())

    api, single = tmp_path / "pred_api", tmp_path / "single"
    single.mkdir()
    run([sys.executable, "-c", PYTHON_API, cps_run, api, single, *sorted(toolbox["inputs"].iterdir())],
        toolbox["env"])

    cases = sorted(p.name[:-len("_0000.nii.gz")] for p in toolbox["inputs"].iterdir())
    assert len(cases) == N_TEST
    for case in cases:
        reference = _seg(from_zip / f"{case}.nii.gz")  # nnUNetv2_predict with the installed zip
        reference_prob = np.load(from_zip / f"{case}.npz")["probabilities"]
        assert reference_prob.shape[0] == 3 and reference_prob[1:].max() > 0.01  # not an empty output
        assert np.array_equal(_seg(api / f"{case}.nii.gz"), reference), case
        np.testing.assert_allclose(np.load(api / f"{case}.npz")["probabilities"], reference_prob, atol=1e-5)
        assert np.array_equal(np.load(single / f"{case}_seg.npy"), reference), case
        np.testing.assert_allclose(np.load(single / f"{case}_prob.npy"), reference_prob, atol=1e-5)


def _dice_per_case(summary_file):
    summary = json.loads(summary_file.read_text())
    return {c["prediction_file"].split("/")[-1]: c["metrics"]["1"]["Dice"] for c in summary["metric_per_case"]}


def test_val_npz_and_val_best_revalidate_a_finished_run(toolbox, cps_run, tmp_path):
    """Item 5: --val --npz and --val --val_best on a finished semi-supervised run (a copy: the original validation
    feeds find_best_configuration)."""
    results = tmp_path / "results"
    copy = results / toolbox["dataset"] / cps_run.name
    shutil.copytree(cps_run, copy)
    original = _dice_per_case(cps_run / "fold_0" / "validation" / "summary.json")
    shutil.rmtree(copy / "fold_0" / "validation")
    env = {**toolbox["env"], "nnUNet_results": str(results)}
    cmd = [nnunet_bin("nnUNetv2_train"), HIPPO_ID, "2d", "0", "-tr", CPS, "-p", SMALL_PLANS, "-device", "cpu", "--val"]
    run(cmd + ["--npz"], env)
    validation = copy / "fold_0" / "validation"
    assert len(original) == 5
    for case in original:
        stem = case[:-len(".nii.gz")]
        assert all((validation / f"{stem}{ext}").is_file() for ext in (".nii.gz", ".npz", ".pkl")), stem
        assert np.load(validation / f"{stem}.npz")["probabilities"].shape[0] == 3
    again = _dice_per_case(validation / "summary.json")
    assert again.keys() == original.keys()
    for case, dice in original.items():
        assert again[case] == pytest.approx(dice, abs=1e-6, nan_ok=True), case

    (validation / "summary.json").unlink()
    run(cmd + ["--val_best"], env)
    assert _dice_per_case(validation / "summary.json").keys() == original.keys()
    assert (copy / "fold_0" / "checkpoint_best.pth").is_file()


def test_find_best_configuration_ensemble_and_postprocessing(toolbox, cps_run, tmp_path):
    """Item 2: nnU-Net's model selection over two semi-supervised models (fold 0, validation with --npz), then
    nnUNetv2_ensemble and nnUNetv2_apply_postprocessing with the files it selected, unchanged (on the validation
    probabilities: inputs to nnUNetv2_ensemble as nnUNetv2_predict --save_probabilities writes them)."""
    _train(toolbox, MCNET)
    env = toolbox["env"]
    run([nnunet_bin("nnUNetv2_find_best_configuration"), HIPPO_ID, "-c", "2d", "-tr", CPS, MCNET, "-p", SMALL_PLANS,
         "-f", "0", "-np", "1"], env)
    dataset_results = toolbox["root"] / "results" / toolbox["dataset"]
    information = json.loads((dataset_results / "inference_information.json").read_text())
    assert {m["trainer"] for m in information["considered_models"]} == {CPS, MCNET}
    assert set(information["all_results"]) == {f"{CPS}__{SMALL_PLANS}__2d", f"{MCNET}__{SMALL_PLANS}__2d",
                                               f"ensemble___{CPS}__{SMALL_PLANS}__2d___{MCNET}__{SMALL_PLANS}__2d___0"}
    assert all(np.isfinite(v) for v in information["all_results"].values())
    assert (dataset_results / "inference_instructions.txt").is_file()
    ensembles = list((dataset_results / "ensembles").iterdir())
    assert len(ensembles) == 1 and (ensembles[0] / "summary.json").is_file()
    best = information["best_model_or_ensemble"]

    validations = []
    for trainer in (CPS, MCNET):  # as nnUNetv2_predict --save_probabilities writes them: + dataset.json, plans.json
        folder = shutil.copytree(_model_folder(toolbox, trainer) / "fold_0" / "validation", tmp_path / trainer)
        for name in ("dataset.json", "plans.json"):
            shutil.copy(_model_folder(toolbox, trainer) / name, folder)
        validations.append(folder)
    ensemble, postprocessed = tmp_path / "ensemble", tmp_path / "postprocessed"
    run([nnunet_bin("nnUNetv2_ensemble"), "-i", *validations, "-o", ensemble, "-np", "1", "--save_npz"], env)
    run([nnunet_bin("nnUNetv2_apply_postprocessing"), "-i", ensemble, "-o", postprocessed, "-pp_pkl_file",
         best["postprocessing_file"], "-np", "1", "-plans_json", best["some_plans_file"]], env)
    cases = sorted(p.name[:-len(".npz")] for p in validations[0].glob("*.npz"))
    assert len(cases) == 5
    for case in cases:
        mean = 0.5 * sum(np.load(v / f"{case}.npz")["probabilities"] for v in validations)
        np.testing.assert_allclose(np.load(ensemble / f"{case}.npz")["probabilities"], mean, atol=1e-5)
        assert _seg(postprocessed / f"{case}.nii.gz").shape == _seg(ensemble / f"{case}.nii.gz").shape


def _labeled_only_checkpoint(hippocampus_nnunet, path, plans: str = SMALL_PLANS):
    """A checkpoint as nnU-Net's trainer writes it (plain planned network, NumPy values in the logs)."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    manager = PlansManager(str(hippocampus_nnunet["env"]["nnUNet_preprocessed"] + f"/{hippocampus_nnunet['dataset']}"
                               f"/{plans}.json"))
    torch.manual_seed(3)
    network = nnUNetTrainer.build_network_architecture(manager, manager.get_configuration("2d"), 1, 3)
    torch.save({"network_weights": network.state_dict(), "trainer_name": "nnUNetTrainer", "current_epoch": 1000,
                "logging": {"mean_fg_dice": [np.float64(0.8)]}}, path)
    return network.state_dict()


def test_pretrained_weights_from_a_labeled_only_checkpoint(hippocampus_nnunet, toolbox, tmp_path):
    """Item 5: nnUNetv2_train -pretrained_weights with a labeled-only nnU-Net checkpoint: every planned network of the
    trainer that fits starts from it (segmentation heads and extra heads fresh), a pretraining-based trainer refuses
    it with one message (no traceback from inside nnU-Net)."""
    checkpoint = tmp_path / "labeled_only.pth"
    reference = _labeled_only_checkpoint(hippocampus_nnunet, checkpoint)
    trainers = ["nnUNetTrainerCPS", "nnUNetTrainerMCNet", "nnUNetTrainerMeanTeacher", "nnUNetTrainerDualStreamCL",
                "nnUNetTrainerPLContrast", "nnUNetTrainerDTC", "nnUNetTrainerFixMatch", "nnUNetTrainerCCMCPS"]
    env = {**toolbox["env"], "nnUNet_results": str(tmp_path / "results")}
    proc = run([sys.executable, "-c", PRETRAINED_PROBE, checkpoint, tmp_path, SMALL_PLANS, *trainers], env)
    results = json.loads((tmp_path / "results.json").read_text())
    assert "net_b keeps its random initialisation (another architecture" in proc.stdout  # DualStreamCL's ResEnc

    def assert_loaded(state, prefix):
        body = [k for k in reference if ".seg_layers." not in k]
        for key in body:
            assert torch.equal(state[prefix + key], reference[key]), prefix + key
        heads = [k for k in reference if ".seg_layers." in k and k.endswith("weight")]
        assert heads and not any(torch.equal(state[prefix + k], reference[k]) for k in heads)

    loaded = {name: torch.load(tmp_path / f"{name}.pth", weights_only=True) for name, r in results.items()
              if r == "loaded"}
    assert set(loaded) == set(trainers) - {"nnUNetTrainerCCMCPS"}, results
    cps = loaded["nnUNetTrainerCPS"]
    assert_loaded(cps, "net_a."), assert_loaded(cps, "net_b.")
    heads = [k for k in reference if ".seg_layers." in k and k.endswith("weight")]
    assert not any(torch.equal(cps["net_a." + k], cps["net_b." + k]) for k in heads)  # independent fresh heads
    assert_loaded(loaded["nnUNetTrainerMeanTeacher"], "student."), assert_loaded(loaded["nnUNetTrainerMeanTeacher"],
                                                                                 "teacher.")
    mcnet = loaded["nnUNetTrainerMCNet"]
    assert_loaded({k.replace("decoder_1.", "decoder."): v for k, v in mcnet.items()}, "")
    assert any(".transpconvs.0.conv." in k for k in mcnet if k.startswith("decoder_2."))  # its own architecture
    assert_loaded(loaded["nnUNetTrainerDualStreamCL"], "net_a.")
    assert_loaded(loaded["nnUNetTrainerPLContrast"], "")
    assert any(k.startswith("contrastive_head.") for k in loaded["nnUNetTrainerPLContrast"])
    assert_loaded(loaded["nnUNetTrainerDTC"], "net.")
    assert_loaded(loaded["nnUNetTrainerFixMatch"], "")
    refusal = results["nnUNetTrainerCCMCPS"]
    assert refusal.startswith("PretrainedWeightsError") and "nnUNetTrainerCPS" in refusal and "\n" not in refusal


RESENC = "nnUNetResEncUNetMPlans"
RESENC_SMALL = "nnUNetResEncUNetMPlansSmall"
PRETRAINING = {"ccm": "CCM", "ideal": "IDEAL", "globallocal": "GlobalLocal", "mmgl_global": "MMGLGlobal",
               "mmgl_local": "MMGLLocal", "simclr": "SimCLR", "genesis": "Genesis"}

# every pretraining method of nnunet_semi_pretrain (its entry point, one process), 1 iteration each
PRETRAIN_ALL = """
import sys
from pretraining.cli import pretrain_entry
plans = sys.argv[1]
for method in sys.argv[2:]:
    pretrain_entry(["-d", "%d", "-c", "2d", "-p", plans, "-m", method, "-device", "cpu", "--epochs", "1",
                    "--iters-per-epoch", "1", "--batch-size", "4"])
""" % HIPPO_ID

# the CPS baselines from two single-network pretrainings: a second run of SimCLR and of Models Genesis (--seed 1
# --tag seed1, beside PRETRAIN_ALL's), each paired with the first where the paired-CPS trainers look
PAIR_SECOND_RUNS = """
import os, sys
from pretraining.cli import pretrain_entry
from nnunet_semi.pretrained.pairing import pair_checkpoints
plans, dataset = sys.argv[1:3]
for method, name in (("simclr", "SimCLR"), ("genesis", "Genesis")):
    pretrain_entry(["-d", "%d", "-c", "2d", "-p", plans, "-m", method, "-device", "cpu", "--epochs", "1",
                    "--iters-per-epoch", "1", "--batch-size", "4", "--seed", "1", "--tag", "seed1"])
    path = os.path.join(os.environ["nnUNet_results"], dataset, name + "Pretrain{}__" + plans + "__2d", "fold_0",
                        "checkpoint_final.pth")
    pair_checkpoints(path.format(""), path.format("_seed1"))
""" % HIPPO_ID

# nnUNetv2_train's trainer set-up (get_trainer_from_args), one epoch of one training and one validation iteration
# (nnU-Net's run_training: loaders, unlabeled stream, step, checkpoint), then what nnUNetv2_predict does with the
# checkpoint: build the network without deep supervision, load it strictly, one eval forward
ONE_STEP_EACH = """
import glob, json, os, shutil, sys, torch
from nnunetv2.run import run_training
from nnunetv2.run.run_training import get_trainer_from_args
from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name
from nnunet_semi.training.pretrained_init import PretrainedInitialisation

out, plans = sys.argv[1:3]
report = {}
for name in sys.argv[3:]:
    trainer = get_trainer_from_args("%d", "2d", 0, name, plans, device=torch.device("cpu"))
    trainer.num_epochs, trainer.num_iterations_per_epoch, trainer.num_val_iterations_per_epoch = 1, 1, 1
    trainer.run_training()
    checkpoint = torch.load(f"{trainer.output_folder}/checkpoint_final.pth", map_location="cpu", weights_only=False)
    network = type(trainer).build_network_architecture(
        trainer.plans_manager, trainer.configuration_manager, trainer.num_input_channels,
        trainer.label_manager.num_segmentation_heads, enable_deep_supervision=False)
    network.load_state_dict(checkpoint["network_weights"])
    network.eval()
    with torch.no_grad():
        output = network(torch.zeros(1, 1, *trainer.configuration_manager.patch_size))
    members = getattr(network, "members", [network])
    report[name] = {"output": list(output.shape), "loss": float(checkpoint["logging"]["train_losses"][-1]),
                    "classes": sorted({type(m).__name__ for m in members}),
                    "encoders": sorted({type(m).__name__ for m in network.modules()
                                        if type(m).__name__.endswith("Encoder")})}

# --val / --val_best of a finished run reads the training checkpoint only: the pretraining may be gone
for folder in glob.glob(f"{os.environ['nnUNet_results']}/*/*Pretrain*__*"):
    shutil.rmtree(folder)
for name in report:
    if issubclass(recursive_find_trainer_class_by_name(name), PretrainedInitialisation):
        trainer = get_trainer_from_args("%d", "2d", 0, name, plans, device=torch.device("cpu"))
        run_training.maybe_load_checkpoint(trainer, False, True)
        report[name]["validation_only_load"] = True
json.dump(report, open(f"{out}/report.json", "w"))
""" % (HIPPO_ID, HIPPO_ID)


@pytest.fixture(scope="module")
def resenc_plans(hippocampus_nnunet):
    """ResEnc-M plans as a user makes them, shrunk like the test's other plans."""
    from nnunet_semi.apps.small_plans import make_small_plans

    env = hippocampus_nnunet["env"]
    # nnUNetv2_plan_and_preprocess -pl nnUNetPlannerResEncM preprocesses into the default plans' data identifier
    # (nnUNetPlans_2d), which the session fixture filled already: planning alone gives the same result
    run([nnunet_bin("nnUNetv2_plan_experiment"), "-d", HIPPO_ID, "-pl", "nnUNetPlannerResEncM"], env)
    make_small_plans(hippocampus_nnunet["dataset"], source_plans=RESENC, target_plans=RESENC_SMALL,
                     configurations=["2d"], base_features=8, max_features=64, batch_size=2,
                     preprocessed_root=env["nnUNet_preprocessed"])
    return RESENC_SMALL


def test_resenc_presets_pretrain_and_train_every_trainer(hippocampus_nnunet, toolbox, resenc_plans, tmp_path):
    """Item 1: on ResEnc-M plans every pretraining method runs and every trainer (those that fine-tune find their
    pretraining by convention) trains a step, checkpoints and loads into the predictor's network; the two-decoder
    network takes the residual encoder; DualStreamCL pairs the planned ResEnc U-Net with a PlainConvUNet partner."""
    from nnunet_semi.training import TRAINERS

    plans = json.loads((hippocampus_nnunet["root"] / "preprocessed" / hippocampus_nnunet["dataset"]
                        / f"{resenc_plans}.json").read_text())
    assert plans["configurations"]["2d"]["architecture"]["network_class_name"].endswith("ResidualEncoderUNet")
    assert plans["configurations"]["2d"]["data_identifier"] == "nnUNetPlans_2d"
    env = {**toolbox["env"], "nnUNet_results": str(tmp_path / "results")}
    run([sys.executable, "-c", PRETRAIN_ALL, resenc_plans, *PRETRAINING], env)
    run([sys.executable, "-c", PAIR_SECOND_RUNS, resenc_plans, hippocampus_nnunet["dataset"]], env)
    for method in PRETRAINING.values():
        assert (tmp_path / "results" / hippocampus_nnunet["dataset"] / f"{method}Pretrain__{resenc_plans}__2d"
                / "fold_0" / "checkpoint_final.pth").is_file(), method

    trainers = sorted(name for name in TRAINERS if "_" not in name)
    run([sys.executable, "-c", ONE_STEP_EACH, tmp_path, resenc_plans, *trainers], env)
    report = json.loads((tmp_path / "report.json").read_text())
    assert sorted(report) == trainers
    patch = plans["configurations"]["2d"]["patch_size"]
    for name, r in report.items():
        assert r["output"] == [1, 3, *patch] and np.isfinite(r["loss"]), (name, r)
        assert "ResidualEncoder" in r["encoders"], (name, r)
    assert report["nnUNetTrainerDualStreamCL"]["classes"] == ["PlainConvUNet", "ResidualEncoderUNet"]
    assert report["nnUNetTrainerCPS"]["classes"] == ["ResidualEncoderUNet"]
    assert report["nnUNetTrainerMCNet"]["classes"] == ["TwoDecoderNetwork"]
    assert {n for n, r in report.items() if r.get("validation_only_load")} == {
        "nnUNetTrainerCCMCPS", "nnUNetTrainerIDEAL", "nnUNetTrainerPLContrastPI", "nnUNetTrainerMMGL",
        "nnUNetTrainerSimCLRCPS", "nnUNetTrainerGenesisCPS"}


# nnUNetv2_train's trainer set-up for two folds: the labeled split and the unlabeled folder each would train on
FOLD_INPUTS = """
import json, os, sys, torch
from nnunetv2.run.run_training import get_trainer_from_args
report = {}
for fold in (0, 1):
    trainer = get_trainer_from_args("%d", "2d", fold, "nnUNetTrainerCPS", "%s", device=torch.device("cpu"))
    train, val = trainer.do_split()
    folder = trainer.unlabeled_folder()
    report[fold] = {"train": sorted(train), "val": sorted(val), "unlabeled": folder,
                    "unlabeled_cases": sorted(f for f in os.listdir(folder) if f.endswith(".pkl"))}
json.dump(report, open(sys.argv[1], "w"))
""" % (HIPPO_ID, SMALL_PLANS)


def test_every_fold_reads_the_same_unlabeled_pool(toolbox, tmp_path):
    """Item 2: each fold trains on its own labeled split (fold 1: nnU-Net's seeded 80:20 split, the converter's
    splits_final.json has one fold) and on the same unlabeled cache, which holds no labeled case."""
    out = tmp_path / "folds.json"
    run([sys.executable, "-c", FOLD_INPUTS, out], {**toolbox["env"], "nnUNet_results": str(tmp_path)})
    folds = json.loads(out.read_text())
    assert folds["0"]["unlabeled"] == folds["1"]["unlabeled"]
    assert folds["0"]["unlabeled_cases"] == folds["1"]["unlabeled_cases"] and len(folds["0"]["unlabeled_cases"]) == 40
    assert (folds["0"]["train"], folds["0"]["val"]) != (folds["1"]["train"], folds["1"]["val"])
    labeled = set(folds["0"]["train"] + folds["0"]["val"])
    assert set(folds["1"]["train"] + folds["1"]["val"]) == labeled
    assert not labeled & {c[:-len(".pkl")] for c in folds["0"]["unlabeled_cases"]}
