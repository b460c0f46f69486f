"""The GPU check kit (``benchmarks/gpu``) in its ``--cpu --tiny`` mode, end to end through ``run_check.sh``, on the
simulated bare GPU machine (imports of packages that machine lacks and the kit does not carry fail), so that the
one call on a lent GPU machine finds what it needs; and the kit's wheel list against this environment."""
import json
import os
import subprocess
import sys
import tarfile

from benchmarks.gpu import wheels
from tests.conftest import REPO, make_env

SEMI_TRAINERS = ("nnUNetTrainerCPS", "nnUNetTrainerFixMatch", "nnUNetTrainerUniMatch", "nnUNetTrainerMeanTeacher")


def test_the_carried_wheels_are_installed_here_and_the_bare_simulation_refuses_what_is_not_carried():
    # every carried package is installed here (the kit ran with them), nnU-Net in the version the kit drives; exact
    # differences (a newer release installed here) are fetch_wheels.sh's warning, not a failure
    assert not [p for p in wheels.check_versions() if "not installed" in p]
    from importlib import metadata

    pinned = {w.name: w.version for w in wheels.read_wheel_list()}["nnunetv2"]
    assert metadata.version("nnunetv2").split(".")[:2] == pinned.split(".")[:2]
    names = {wheels.normalize(w.name) for w in wheels.read_wheel_list()}
    assert {"nnunetv2", "simpleitk", "blosc2", "acvl-utils", "batchgeneratorsv2"} <= names
    assert not names & wheels.read_machine_packages()  # only what the machine lacks travels
    code = ("import importlib\n"
            "for name in ('wandb', 'nnunetv2', 'SimpleITK', 'torch', 'json'):\n"
            "    try:\n"
            "        importlib.import_module(name); print(name, 'ok')\n"
            "    except ModuleNotFoundError as e:\n"
            "        print(name, 'refused', 'bare-machine simulation' in str(e))\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "KIT_BARE_REFUSED")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO,
                         env={**env, "PYTHONPATH": str(REPO / "benchmarks" / "gpu" / "bare")}).stdout
    assert out.split("\n")[:5] == ["wandb refused True", "nnunetv2 ok", "SimpleITK ok", "torch ok", "json ok"], out


def test_cpu_tiny_mode_measures_every_trainer_and_passes_the_correctness_checks(tmp_path):
    env = make_env(tmp_path / "unused")  # the kit sets its own nnU-Net folders inside --work
    out, work = tmp_path / "out", tmp_path / "work"
    env.update(OUT=str(out), PYTHON=sys.executable, KIT_SIMULATE_BARE="1")
    env.pop("KIT_BARE_REFUSED", None)
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu" / "run_check.sh"), "--cpu", "--tiny",
                           "--configurations", "2d", "--work", str(work), "--keep-work"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-8000:] + proc.stderr[-3000:]
    report = json.loads((out / "gpu_check.json").read_text())
    assert {n: s["status"] for n, s in report["stages"].items()} == {
        "environment": "ok", "prepare": "ok", "cost": "ok", "correctness": "ok", "paired": "skipped"}
    assert report["mode"] == "cpu-tiny" and report["data"]["configurations"]["2d"]["batch_size"] == 2

    # the cost table: one row per trainer, positive speed and memory, the unlabeled batch beside the labeled one
    rows = {r["trainer"]: r for r in report["cost"] if r["configuration"] == "2d"}
    assert set(rows) == {"nnUNetTrainer", *SEMI_TRAINERS}
    for trainer, r in rows.items():
        assert "error" not in r, r
        assert r["it_per_s"] > 0 and r["it_per_s_cached"] > 0 and r["peak_rss_gib"] > 0, r
        assert r["live"]["s_per_it"] >= r["live"]["load_s_per_it"] >= 0
        assert not r["compiled"]  # nnU-Net does not compile on the CPU
        assert r["batch_labeled"] == 2 and r["batch_unlabeled"] == (0 if trainer == "nnUNetTrainer" else 2)
    table = (out / "gpu_check.md").read_text()
    for trainer in rows:
        assert f"| 2d | `{trainer}` | no | " in table
    assert "| 2d | `nnUNetTrainer` | no | 2 + 0 | " in table and " | 1.00x | " in table

    # UniMatch: the stock trainer stays uncompiled, the kit's compiled copy (aot_eager here) keeps the perturbation
    unimatch = report["unimatch"]["2d"]
    assert unimatch["stock_compiled"] is False and unimatch["kit_compiled"] is True
    assert unimatch["rows_compiled"] == unimatch["rows_expected_perturbed"] > unimatch["rows_in"]
    assert unimatch["perturbation_rel_diff_compiled"] > 0.05 and unimatch["perturbation_rel_diff_eager"] > 0.05
    assert unimatch["clean_rows_compiled_vs_eager_rel_diff"] < 1e-3
    assert unimatch["fp_losses"] and all(v >= 0 for v in unimatch["fp_losses"])  # 0 while nothing is confident
    assert report["checks"]["UniMatch under torch.compile (2d)"]["passed"]

    # resume: killed at the start of epoch 1, continued there with --c, finished at epoch 2 with epoch 0's curve
    resume = report["checks"]["resume (--c) continues from the saved epoch"]
    assert resume["passed"] and resume["saved_epoch"] == 1 and resume["epochs_logged_after_resume"] == [1]
    assert resume["final_epoch"] == 2 and resume["train_losses_final"][:1] == resume["train_losses_saved"]

    # nnUNetv2_predict of the CPS checkpoint wrote every test case
    predicted = report["checks"]["nnUNetv2_predict of the CPS checkpoint"]
    assert predicted["passed"] and predicted["predicted"] == predicted["expected"] == 2
    written = sorted(p.name for p in (work / "predict_cps").glob("*.nii.gz"))
    assert written == sorted(predicted["cases"]) and all(v is not None for v in predicted["cases"].values())

    # what comes back from the device machine: the tables, the json, the log and the subprocess logs
    assert sorted(p.name for p in out.iterdir()) == ["gpu_check.json", "gpu_check.log", "gpu_check.md",
                                                    "job_logs.tar.gz"]
    with tarfile.open(out / "job_logs.tar.gz") as tar:
        assert {"logs/cost_worker.log", "logs/cps_train_resumed.log", "logs/predict_cps.log"} <= set(tar.getnames())


def test_the_demo_generator_writes_the_same_files_in_a_process_pool(tmp_path):
    from nnunet_semi.apps.demo_data import generate_demo_dataset

    counts = {"num_labeled": 2, "num_val": 1, "num_test": 1, "num_unlabeled": 2, "shape": (8, 24, 24)}
    one = tmp_path / "one" / generate_demo_dataset(str(tmp_path / "one"), **counts).rsplit("/", 1)[1]
    two = tmp_path / "two" / generate_demo_dataset(str(tmp_path / "two"), num_processes=2, **counts).rsplit("/", 1)[1]
    files = sorted(p.relative_to(one) for p in one.rglob("*") if p.is_file())
    assert len(files) == 2 * (3 + 1) + 2 + 2  # image + label of 3 training and 1 test case, 2 unlabeled, 2 jsons
    assert files == sorted(p.relative_to(two) for p in two.rglob("*") if p.is_file())
    assert all((one / f).read_bytes() == (two / f).read_bytes() for f in files)
