"""Accuracy benchmark: the labeled-only nnU-Net against every semi-/self-supervised method, same protocol.

``python -m benchmarks.run --profile acdc3-cpu [--methods labeled_only cps ...] [--seeds 0 1] [--draws 0 1]``

For a profile (``benchmarks/profiles.py``): converts the dataset from ``../shared/data`` with the project's converter,
plans and preprocesses it with nnU-Net (and derives the profile's plans), then for every labeled draw, seed and
method runs the method's pretraining (``nnunet_semi_pretrain``), ``nnUNetv2_train`` with the trainer's budget
variant, ``nnUNetv2_predict`` on the held-out ``imagesTs`` and evaluates against ``labelsTs`` (per-class Dice, HD95,
ASSD; ``nnunet_semi.apps.metrics``). Every step is skipped when its output exists, so an interrupted benchmark
continues where it stopped; an interrupted training (``checkpoint_latest.pth`` without ``checkpoint_final.pth``)
continues from its last epoch with nnU-Net's ``--c``. Results: ``benchmarks/results/<profile>/`` (``results.md``,
``results.csv``, ``dice.png``, ``runs/*.json`` with each run's metrics, wall times and provenance, ``commands.sh``
with the exact commands in order).

The protocol (profiles with ``draws``; ``benchmarks/README.md``):

* one fixed test set and one fixed validation set per dataset; several labeled draws (``--draws``), each with its
  paired seeds; the headline is the mean over all draws;
* settings are chosen on the validation cases: nnU-Net's fold validates on them at the end of every training and
  their Dice is recorded in the run (``validation``); ``--validation-only`` trains and records the validation Dice
  WITHOUT predicting the test set (a candidate setting: the test set is read once per final setting);
* mean ± sample standard deviation (n - 1) over seeds, gains paired by seed, ``dice.png`` shows every paired gain;
* ``all_labeled`` (the bound: every training case labeled) turns each gain into the fraction of the
  labeled-only -> all-labeled distance it closes; ``labeled_only_ensemble`` is the ensemble control of the
  two-network trainers (two labeled-only networks of different seeds averaged by ``nnUNetv2_ensemble``); a member
  whose checkpoint is gone is trained again with ``--rerun`` (recorded in ``reruns/``; ``runs/`` keeps the original).
"""
import argparse
import csv
import json
import os
import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from benchmarks.profiles import METHODS, PROFILES, Method, Profile, methods_of, trainer_name
from nnunet_semi.utils.commands import installed_command
from nnunet_semi.utils.environment import SEED_ENV, THREADS_ENV

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
BOUND = "all"  # the draw key of the all-labeled bound's runs
#: the closed fraction is reported only where the bound is at least this many Dice points above the draw's
#: reference: a bound within run-to-run noise of the reference (a budget too short for the bound) makes the
#: fraction meaningless (it divides by the noise)
BOUND_MARGIN = 3.0


def bin_path(name: str) -> str:
    return installed_command(name) or name


def sample_std(values) -> float:
    """Sample standard deviation (n - 1); 0 for a single value."""
    values = list(values)
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def code_version() -> dict:
    """The project commit the run used and whether the working tree differed from it."""
    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(status)}


def run_file_name(method: str, seed: int, draw=None) -> str:
    """``<method>_seed<s>.json`` for draw 0 / single-dataset profiles (the older results), else
    ``<method>_draw<d>_seed<s>.json``."""
    return f"{method}_seed{seed}.json" if draw in (None, 0) else f"{method}_draw{draw}_seed{seed}.json"


class Runner:
    def __init__(self, profile: Profile, work: Path, results: Path, threads: Optional[int] = None):
        from nnunet_semi.apps.ext_trainer import ext_trainer_value

        self.profile, self.work, self.results = profile, work, results
        self.results.mkdir(parents=True, exist_ok=True)
        (self.results / "runs").mkdir(exist_ok=True)
        (self.work / "logs").mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        for var, sub in (("nnUNet_raw", "raw"), ("nnUNet_preprocessed", "preprocessed")):
            env[var] = str(work / sub)
            (work / sub).mkdir(parents=True, exist_ok=True)
        env["nnUNet_results"] = str(work / "results_seed0")
        env["nnUNet_extTrainer"] = ext_trainer_value(os.environ.get("nnUNet_extTrainer"))
        env.setdefault("nnUNet_def_n_proc", str(os.cpu_count() or 2))
        env["PYTHONUNBUFFERED"] = "1"
        env.pop("nnUNet_n_proc_DA", None)  # nnUNetv2_plan_and_preprocess fails with 0
        self.threads = threads  # torch threads per training (nnUNet_semi_threads): two 1-thread chains share 2 cores
        self.env = env
        self.commands = self.results / "commands.sh"
        self.raw_by_draw: Dict[object, Path] = {}
        self._ran: List[str] = []  # the command lines of the current run (its provenance)

    @property
    def raw(self) -> Path:
        """The dataset of draw 0 (single-dataset profiles: the only one)."""
        return self.raw_by_draw[self._default_draw()]

    @raw.setter
    def raw(self, value: Path) -> None:
        self.raw_by_draw[self._default_draw()] = Path(value)

    def _default_draw(self):
        return self.profile.draws[0] if self.profile.draws else None

    def seed_env(self, seed: int) -> dict:
        env = {**self.env, "nnUNet_results": str(self.work / f"results_seed{seed}"), SEED_ENV: str(seed)}
        if self.profile.device == "cpu":
            env["nnUNet_n_proc_DA"] = "0"  # single-process augmentation: reproducible on 2-core machines
            if self.threads:
                env[THREADS_ENV] = str(self.threads)
                # nnUNetv2_predict -device cpu sets torch to every core and caps it at nnUNet_def_n_proc (default
                # 8): beside another chain, 2 threads on 2 busy cores spin against each other (a 2d Hippocampus test
                # set: 926 s with 2 threads, 26 s with 1). The chain's thread count holds for prediction too.
                env["nnUNet_def_n_proc"] = str(self.threads)
        return env

    def step(self, title: str, cmd: List[str], env: dict, log_name: str) -> float:
        cmd = [str(c) for c in cmd]
        shown = {k: env[k] for k in ("nnUNet_results", SEED_ENV, "nnUNet_n_proc_DA", THREADS_ENV, "nnUNet_def_n_proc",
                                     "nnUNet_semi_predict_member") if k in env}
        line = " ".join(f"{k}={shlex.quote(v)}" for k, v in shown.items()) + " " + " ".join(map(shlex.quote, cmd))
        line = line.replace(str(self.work), "$WORK").replace(str(REPO) + "/", "")
        with open(self.commands, "a") as f:
            f.write(line + "\n")
        self._ran.append(line)
        print(f"[{time.strftime('%H:%M:%S')}] {title}", flush=True)
        start = time.time()
        log = self.work / "logs" / f"{log_name}.log"
        with open(log, "w") as f:
            proc = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT)
        seconds = time.time() - start
        if proc.returncode != 0:
            tail = log.read_text()[-3000:]
            raise RuntimeError(f"{title} failed ({proc.returncode}); log {log}:\n{tail}")
        print(f"    {seconds:.0f} s", flush=True)
        return seconds

    # ---------------------------------------------------------------- dataset, plans
    def prepare(self, draw=None) -> Path:
        """Convert (once), plan and preprocess the dataset of ``draw`` (``BOUND``: the all-labeled dataset; None:
        the profile's only dataset). Under a file lock per draw: a second chain reaching the same unprepared draw
        waits for the first, then finds every step done (two conversions of one draw at once collided)."""
        import fcntl

        lock = self.work / "locks" / f"prepare_{draw}.lock"
        lock.parent.mkdir(parents=True, exist_ok=True)
        with open(lock, "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            return self._prepare(draw)

    def _prepare(self, draw) -> Path:
        p = self.profile
        if draw == BOUND:
            if p.bound is None:
                raise ValueError(f"profile {p.name} has no all-labeled bound")
            dataset_id = p.bound_dataset_id
            raw = Path(p.bound(self.env["nnUNet_raw"], dataset_id))
        elif draw is None:
            dataset_id = p.dataset_id
            raw = Path(p.prepare(self.env["nnUNet_raw"], dataset_id))
        else:
            dataset_id = p.dataset_id + int(draw)
            raw = Path(p.prepare(self.env["nnUNet_raw"], dataset_id, draw=int(draw)))
        self.raw_by_draw[draw] = raw
        pre = self.work / "preprocessed" / raw.name
        suffix = "" if draw is None else f"_draw{draw}"
        if not (pre / "nnUNetPlans.json").is_file():
            self.step(f"plan and preprocess {raw.name} (nnU-Net)",
                      [bin_path("nnUNetv2_plan_and_preprocess"), "-d", dataset_id, "-c", p.configuration,
                       "-np", "2", "-npfp", "2"], self.env, f"plan_and_preprocess{suffix}")
        if p.make_plans and not (pre / f"{p.plans}.json").is_file():
            from nnunet_semi.apps.small_plans import make_small_plans

            make_small_plans(raw.name, target_plans=p.plans, preprocessed_root=str(self.work / "preprocessed"),
                             **p.make_plans)
            with open(self.commands, "a") as f:
                f.write(f"# plans {p.plans}: nnunet_semi.apps.small_plans.make_small_plans({raw.name!r}, "
                        f"target_plans={p.plans!r}, **{p.make_plans})\n")
        if p.preprocess_plans:
            identifier = json.loads((pre / f"{p.plans}.json").read_text())["configurations"][p.configuration][
                "data_identifier"]
            if not (pre / identifier).is_dir():
                self.step(f"preprocess {raw.name} for {p.plans}",
                          [bin_path("nnUNetv2_preprocess"), "-d", dataset_id, "-plans_name", p.plans, "-c",
                           p.configuration, "-np", "2"], self.env, f"preprocess_plans{suffix}")
        if p.draws is not None and draw != BOUND and any((raw / "imagesUnlabeled").glob("*")):
            # once, before any training: two chains starting a semi-supervised trainer on the same dataset would
            # otherwise both preprocess the unlabeled pool (the cache is incremental: a no-op when up to date)
            self.step(f"preprocess the unlabeled images of {raw.name}",
                      [bin_path("nnunet_semi_preprocess_unlabeled"), "-d", dataset_id, "-c", p.configuration, "-p",
                       p.plans, "-np", "2"], self.env, f"preprocess_unlabeled{suffix}")
        return raw

    def dataset_of(self, method: Method, draw):
        """The draw key a method's run uses: the bound's for ``all_labeled``, else the labeled draw."""
        return BOUND if method.dataset == "bound" else draw

    def run_path(self, method: Method, seed: int, draw, validation_only: bool = False) -> Path:
        folder = "validation_runs" if validation_only else "runs"
        return self.results / folder / run_file_name(method.key, seed, self.dataset_of(method, draw))

    # ---------------------------------------------------------------- one method, one seed
    def run_method(self, method: Method, seed: int, draw=None, validation_only: bool = False) -> Optional[dict]:
        """Train (or reuse), predict the test set (unless ``validation_only``) and record one run. An ensemble
        control method trains nothing: it ensembles two runs of ``method.ensemble_of``."""
        p = self.profile
        draw = self.dataset_of(method, draw)
        out = self.run_path(method, seed, draw, validation_only)
        if out.is_file():
            return json.loads(out.read_text())
        if draw not in self.raw_by_draw:
            self.prepare(draw)
        raw = self.raw_by_draw[draw]
        self._ran = []
        started = time.time()
        if method.ensemble_of:
            record = self._ensemble_control(method, seed, draw, raw)
            if record is None:
                return None
        else:
            record = self._train_and_evaluate(method, seed, draw, raw, validation_only)
        record["provenance"] = self._provenance(started)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(record, indent=1))
        return record

    def _provenance(self, started: float) -> dict:
        """Start and end time, code version and the commands of the current run (``self._ran``)."""
        return {"started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
                "ended": time.strftime("%Y-%m-%dT%H:%M:%S"), **code_version(), "commands": self._ran}

    # ---------------------------------------------------------------- a recorded run trained again
    def rerun_folder(self, method: Method, seed: int, draw) -> Path:
        """The test predictions (with probabilities) of ``method``'s re-run at ``seed``; the folder exists from the
        re-run's start, and marks the fold's checkpoint as the re-run's."""
        return self.prediction_folder(method, seed, draw).with_name(method.key + ".rerun")

    def rerun_record(self, method: Method, seed: int, draw) -> Optional[Path]:
        """The newest ``reruns/<run>_<date>.json`` that ``--rerun`` wrote for this run (``rerun_of`` names the
        original), or None."""
        stem = self.run_path(method, seed, draw).stem
        found = [f for f in sorted((self.results / "reruns").glob(f"{stem}_*.json"))
                 if re.fullmatch(re.escape(stem) + r"_\d{4}-\d{2}-\d{2}", f.stem)
                 and "rerun_of" in json.loads(f.read_text())]
        return found[-1] if found else None

    def finished_rerun(self, method: Method, seed: int, draw) -> Optional[Path]:
        """The record of this run's re-run where it finished with its test probabilities, or None."""
        record = self.rerun_record(method, seed, draw)
        return record if record is not None and any(self.rerun_folder(method, seed, draw).glob("*.npz")) else None

    def rerun_method(self, method: Method, seed: int, draw=None) -> dict:
        """Train a recorded run again whose checkpoint is gone (an earlier machine's work folder), so that an ensemble
        control gets its test probabilities: same trainer, seed and commands, predicted with ``--save_probabilities``
        into :meth:`rerun_folder` and recorded as ``reruns/<run>_<date>.json``. ``runs/`` keeps the original: the
        tables and every paired gain use it, and a re-run is not a second reading of a setting's result (training on
        CPU is not bit-reproducible across days and thread counts; the record lets the two be compared). An
        interrupted re-run continues with ``--c``; a finished one is reused."""
        draw = self.dataset_of(method, draw)
        original = self.run_path(method, seed, draw)
        if method.ensemble_of or method.predict_env or method.runner == "self_training":
            raise SystemExit(f"--rerun trains one network again: {method.key} is "
                             + ("an ensemble control" if method.ensemble_of else "not a plain training")
                             + "; re-run the method it reads instead")
        if not original.is_file():
            raise SystemExit(f"{original} does not exist: {method.key} seed {seed} has no recorded run to train "
                             f"again; run it without --rerun")
        done = self.finished_rerun(method, seed, draw)
        if done is not None:
            return json.loads(done.read_text())
        folder = self.rerun_folder(method, seed, draw)
        if draw not in self.raw_by_draw:
            self.prepare(draw)
        raw = self.raw_by_draw[draw]
        fold = self.fold_folder(self.seed_env(seed)["nnUNet_results"], trainer_name(method, self.profile), raw)
        if (fold / "checkpoint_final.pth").is_file() and not folder.is_dir():
            raise SystemExit(f"{fold} holds the recorded run's checkpoint: there is nothing to train again (an "
                             f"ensemble control predicts its test probabilities from it)")
        folder.mkdir(parents=True, exist_ok=True)  # from here on the fold's training is the re-run's
        self._ran = []
        started = time.time()
        record = self._train_and_evaluate(method, seed, draw, raw, False, predictions=folder)
        record["rerun_of"] = original.relative_to(self.results).as_posix()
        record["provenance"] = self._provenance(started)
        out = self.results / "reruns" / f"{original.stem}_{time.strftime('%Y-%m-%d')}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(record, indent=1))
        return record

    def _train_and_evaluate(self, method: Method, seed: int, draw, raw: Path, validation_only: bool,
                            predictions: Optional[Path] = None) -> dict:
        """Train (or continue / reuse) and record one run; the test set is predicted into ``predictions`` (default:
        the method's prediction folder), with probabilities where an ensemble control reads them (a re-run: always)."""
        p, env = self.profile, self.seed_env(seed)
        timings: Dict[str, float] = {}
        pretrained: Dict[str, str] = {}
        for pre_method, extra in method.pretrain:
            final = self._pretrain_checkpoint(env, pre_method, raw)
            if final is None:
                # an interrupted pretraining (checkpoint_latest.pth of this method, no final) continues from its
                # last epoch with nnunet_semi_pretrain's --c, as an interrupted training does with nnU-Net's
                resume = ["--c"] if self._interrupted_pretraining(env, pre_method, raw) else []
                timings[f"pretrain_{pre_method}_s"] = self.step(
                    f"seed {seed} {method.key}: pretraining {pre_method}" + (" --c" if resume else ""),
                    [bin_path("nnunet_semi_pretrain"), "-d", raw.name, "-c", p.configuration, "-p", p.plans,
                     "-m", pre_method, "-device", p.device, *p.pretrain_budget, *extra, *resume], env,
                    f"{self._tag(draw)}seed{seed}_pretrain_{pre_method}")
                final = self._pretrain_checkpoint(env, pre_method, raw)
            pretrained[pre_method] = str(final)
        trainer = trainer_name(method, p)
        model = raw.name  # the dataset whose model predicts the test set
        if method.runner == "self_training":
            model = self._self_training(method, seed, draw, raw, env, timings)
        fold = self.fold_folder(env["nnUNet_results"], trainer, Path(model))
        if not (fold / "checkpoint_final.pth").is_file():
            args = [a.format(**{f"pretrained:{k}": v for k, v in pretrained.items()}) for a in method.train_args]
            # an interrupted training (killed chain, ended session) continues from its last epoch with nnU-Net's
            # --c; our trainers resume bit-identically (tests/cli: resume tests), so the run equals an uninterrupted one
            resume = ["--c"] if (fold / "checkpoint_latest.pth").is_file() else []
            timings["train_s"] = self.step(
                f"{self._tag(draw)}seed {seed} {method.key}: nnUNetv2_train -tr {trainer}" + (" --c" if resume else ""),
                [bin_path("nnUNetv2_train"), raw.name, p.configuration, "0", "-tr", trainer, "-p", p.plans,
                 "-device", p.device, *args, *resume], env, f"{self._tag(draw)}seed{seed}_{method.key}_train")
        record = {"method": method.key, "trainer": trainer, "seed": seed, "profile": p.name, "dataset": model,
                  "timings": timings, "train_log": self._train_log_timing(fold)}
        if draw is not None:
            record["draw"] = draw
        if p.validation and not method.predict_env:  # a predict-only variant: the fold validated the trainer's
            record["validation"] = self.evaluate(raw / "labelsTr", fold / "validation", allow_missing=True)
        if validation_only:
            return record
        pred = predictions if predictions is not None else self.prediction_folder(method, seed, draw)
        timings["predict_s"] = self._predict(method, seed, draw, raw, model, env,
                                             predictions is not None or self._ensembled(method), out=pred)
        record["summary"] = self.evaluate(raw / "labelsTs", pred)
        return record

    def _predict(self, method: Method, seed: int, draw, raw: Path, model: str, env: dict,
                 probabilities: bool, title: str = "nnUNetv2_predict", out: Optional[Path] = None) -> float:
        """nnUNetv2_predict of ``method``'s fold-0 model (dataset ``model``) on the test images into its prediction
        folder (or ``out``), with the test probabilities (``--save_probabilities``) where an ensemble control reads
        them."""
        p = self.profile
        out = out if out is not None else self.prediction_folder(method, seed, draw)
        cmd = [bin_path("nnUNetv2_predict"), "-i", raw / "imagesTs", "-o", out,
               "-d", model, "-c", p.configuration, "-f", "0", "-tr", trainer_name(method, p), "-p", p.plans,
               "-device", p.device, "-npp", "1", "-nps", "1"] + (["--disable_tta"] if p.disable_tta else []) + \
            (["--save_probabilities"] if probabilities else [])
        if method.predict_env:
            env = {**env, **dict(method.predict_env)}
        return self.step(f"{self._tag(draw)}seed {seed} {method.key}: {title}", cmd, env,
                         f"{self._tag(draw)}seed{seed}_{method.key}_predict")

    def _member_folder(self, member: Method, seed: int, draw, raw: Path) -> Optional[Path]:
        """The folder with the test probabilities of ``member``'s run at ``seed`` for an ensemble control, or None
        while there is none.

        * the recorded run's predictions, where it ran with ``--save_probabilities``;
        * its re-run's (``--rerun``: the recorded run's checkpoint was gone);
        * else the recorded run's checkpoint predicts the test set again with ``--save_probabilities`` (the run was
          recorded before the profile listed the control), into a staging folder: its segmentations must score the
          recorded test Dice, or the run is refused as not the recorded one, and only its probabilities (``.npz``,
          ``.pkl``) join the recorded segmentations."""
        folder = self.prediction_folder(member, seed, draw)
        run = self.run_path(member, seed, draw)
        if not run.is_file():
            return None
        if any(folder.glob("*.npz")):
            return folder
        # before the checkpoint: after a re-run, the fold's checkpoint is the re-run's, not the recorded run's
        if self.finished_rerun(member, seed, draw) is not None:
            return self.rerun_folder(member, seed, draw)
        env = self.seed_env(seed)
        if member.runner == "self_training" or not (
                self.fold_folder(env["nnUNet_results"], trainer_name(member, self.profile), raw)
                / "checkpoint_final.pth").is_file():
            draws = f" --draws {draw}" if draw is not None else ""
            print(f"    {member.key} seed {seed}: recorded without test probabilities, and its checkpoint is gone: the "
                  f"ensemble control needs that run trained again (python -m benchmarks.run --profile "
                  f"{self.profile.name} --methods {member.key} --seeds {seed}{draws} --rerun)", flush=True)
            return None
        # into a staging folder: the recorded segmentations stay untouched, and a refused re-prediction leaves nothing
        staging = folder.with_name(folder.name + ".reprediction")
        shutil.rmtree(staging, ignore_errors=True)
        self._predict(member, seed, draw, raw, raw.name, env, True,
                      "nnUNetv2_predict --save_probabilities (for the ensemble control)", out=staging)
        recorded = json.loads(run.read_text())["summary"]["mean"]["dice"]["mean"]
        again = self.evaluate(raw / "labelsTs", staging)["mean"]["dice"]["mean"]
        if abs(again - recorded) > 5e-4:  # 0.05 Dice points: a voxel or two may flip between CPU thread counts
            shutil.rmtree(staging)
            raise RuntimeError(f"{member.key} seed {seed}: predicting its checkpoint again scores test Dice {again} "
                               f"where {run} records {recorded}: the checkpoint is not the recorded run's")
        for f in [*staging.glob("*.npz"), *staging.glob("*.pkl")]:  # nnUNetv2_ensemble reads both
            f.replace(folder / f.name)
        shutil.rmtree(staging)
        return folder

    def _self_training(self, method: Method, seed: int, draw, raw: Path, env: dict, timings: dict) -> str:
        """One round of ``nnunet_semi_self_training`` (round 0 = this seed's labeled-only run with the same trainer
        and plans, reused when it exists); returns the derived dataset whose model is then evaluated. Its id is
        700 + 10 * draw + seed: the derived raw datasets of every seed and draw share nnUNet_raw."""
        from nnunet_semi.apps.self_training import derived_dataset_name

        p = self.profile
        first_id = 700 + 10 * (int(draw) if draw not in (None, BOUND) else 0) + seed
        derived = derived_dataset_name(raw.name, first_id, 1)
        trainer = trainer_name(method, p)
        if not (self.fold_folder(env["nnUNet_results"], trainer, Path(derived)) / "checkpoint_final.pth").is_file():
            timings["self_training_s"] = self.step(
                f"{self._tag(draw)}seed {seed} {method.key}: nnunet_semi_self_training --rounds 1",
                [bin_path("nnunet_semi_self_training"), "-d", raw.name, "-c", p.configuration, "-f", "0", "-tr",
                 trainer, "-p", p.plans, "--rounds", "1", "--first-id", first_id, "-device", p.device, "-np", "1",
                 "--no-test"] + (["--disable-tta"] if p.disable_tta else []), env,
                f"{self._tag(draw)}seed{seed}_{method.key}")
        return derived

    def _ensemble_control(self, method: Method, seed: int, draw, raw: Path) -> Optional[dict]:
        """nnUNetv2_ensemble of the test probabilities of ``method.ensemble_of`` at ``seed`` and at the next seed of
        the profile (cyclically); None while either run is missing."""
        seeds = list(self.profile.seeds)
        if seed not in seeds or len(seeds) < 2:
            return None
        partner = seeds[(seeds.index(seed) + 1) % len(seeds)]
        member = METHODS[method.ensemble_of]
        # a list, not a generator: both members get their probabilities in one pass even when the first must wait
        folders = [self._member_folder(member, s, draw, raw) for s in (seed, partner)]
        if not all(folders):
            print(f"    {method.key} seed {seed}: waiting for {member.key} seeds {seed} and {partner}", flush=True)
            return None
        out = self.prediction_folder(method, seed, draw)
        seconds = self.step(f"{self._tag(draw)}seed {seed} {method.key}: nnUNetv2_ensemble seeds {seed} + {partner}",
                            [bin_path("nnUNetv2_ensemble"), "-i", *folders, "-o", out, "-np", "1"], self.env,
                            f"{self._tag(draw)}seed{seed}_{method.key}")
        member_trainer = trainer_name(member, self.profile)
        record = {"method": method.key, "trainer": f"{member_trainer} x2 (seeds {seed}, {partner})",
                  "member_trainer": member_trainer, "seed": seed, "profile": self.profile.name, "dataset": raw.name,
                  "ensembled_seeds": [seed, partner], "timings": {"ensemble_s": seconds},
                  # the records of the members' networks: the recorded runs, or their re-runs (--rerun)
                  "members": [self._member_record(member, s, draw, f) for s, f in zip((seed, partner), folders)],
                  "summary": self.evaluate(raw / "labelsTs", out)}
        if draw is not None:
            record["draw"] = draw
        return record

    def _member_record(self, member: Method, seed: int, draw, folder: Path) -> str:
        record = self.rerun_record(member, seed, draw) if folder == self.rerun_folder(member, seed, draw) \
            else self.run_path(member, seed, draw)
        return record.relative_to(self.results).as_posix()

    def _ensembled(self, method: Method) -> bool:
        return any(m.ensemble_of == method.key for m in METHODS.values() if m.key in self.profile.methods)

    def evaluate(self, gt: Path, pred: Path, allow_missing: bool = False) -> dict:
        from nnunet_semi.apps.metrics import evaluate_folders

        labels = sorted(self.profile.labels)
        return evaluate_folders(str(gt), str(pred), labels, [self.profile.labels[c] for c in labels],
                                num_processes=1, allow_missing=allow_missing)["summary"]

    @staticmethod
    def _tag(draw) -> str:
        return "" if draw is None else f"draw{draw}_"

    def prediction_folder(self, method: Method, seed: int, draw) -> Path:
        sub = f"seed{seed}" if draw is None else f"draw{draw}/seed{seed}"
        return self.work / "predictions" / sub / method.key

    def fold_folder(self, results_root: str, trainer: str, raw: Optional[Path] = None) -> Path:
        """nnU-Net's fold-0 output folder of ``trainer`` with this profile's plans and configuration."""
        p = self.profile
        raw = raw if raw is not None else self.raw
        return Path(results_root) / raw.name / f"{trainer}__{p.plans}__{p.configuration}" / "fold_0"

    def _pretraining_file(self, env: dict, pre_method: str, raw: Optional[Path], file_name: str) -> Optional[Path]:
        """``file_name`` (``checkpoint_final.pth`` / ``checkpoint_latest.pth``) of ``pre_method``'s pretraining in
        this seed's results: the first of the profile's ``*Pretrain`` folders whose checkpoint records the method."""
        raw = raw if raw is not None else self.raw
        base = Path(env["nnUNet_results"]) / raw.name
        found = sorted(base.glob(f"*Pretrain__{self.profile.plans}__{self.profile.configuration}/fold_0/{file_name}"))
        from pretraining.cli import PRETRAINERS

        wanted = PRETRAINERS[pre_method].method_name  # what the checkpoint records (e.g. "MMGLGlobal")
        return next((path for path in found if self._pretraining_method(path) == wanted), None)

    def _pretrain_checkpoint(self, env: dict, pre_method: str, raw: Optional[Path] = None) -> Optional[Path]:
        return self._pretraining_file(env, pre_method, raw, "checkpoint_final.pth")

    def _interrupted_pretraining(self, env: dict, pre_method: str, raw: Optional[Path] = None) -> bool:
        """Whether ``pre_method`` has a ``checkpoint_latest.pth`` and no ``checkpoint_final.pth`` (a killed chain or
        an ended session): it is then continued with ``--c`` instead of started again."""
        return (self._pretrain_checkpoint(env, pre_method, raw) is None and
                self._pretraining_file(env, pre_method, raw, "checkpoint_latest.pth") is not None)

    @staticmethod
    def _pretraining_method(path: Path) -> str:
        import torch

        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        return str(checkpoint["pretraining"]["method"])

    @staticmethod
    def _train_log_timing(fold: Path) -> dict:
        """Mean epoch time from nnU-Net's own log (the checkpoint's epoch timestamps)."""
        import torch

        final = fold / "checkpoint_final.pth"
        if not final.is_file():
            return {}
        logging = torch.load(final, map_location="cpu", weights_only=False)["logging"]
        starts, ends = logging.get("epoch_start_timestamps", []), logging.get("epoch_end_timestamps", [])
        durations = [e - s for s, e in zip(starts, ends)]
        return {"epochs": len(durations), "mean_epoch_s": float(np.mean(durations)) if durations else None}


# -------------------------------------------------------------------- aggregation
def _dice(record: dict, part: str = "summary", name: str = "mean") -> float:
    return record[part][name]["dice"]["mean"]


def trainer_text(records: List[dict]) -> str:
    """The trainer column of a method's row: its records' trainer, or for an ensemble control (each record names its
    own pair of seeds) the trainer once with every ensembled pair, ``X x2 (seeds 0+1, 1+2)``. The member trainer is
    the record's ``member_trainer``; records written before that field existed give it as the text before " x2 (".
    """
    pairs = [r["ensembled_seeds"] for r in records if r.get("ensembled_seeds")]
    if pairs and len(pairs) == len(records):
        base = records[0].get("member_trainer") or records[0]["trainer"].split(" x2 (")[0]
        return f"{base} x2 (seeds {', '.join('+'.join(map(str, p)) for p in pairs)})"
    return records[0]["trainer"]


def reference_of(key: str) -> Optional[str]:
    """The labeled-only method whose run of the same draw and seed a method's gain is paired with: the reference at
    the method's own budget where one is defined (``cps_2x`` against ``labeled_only_2x``: a longer budget helps the
    reference too); the profile-budget ``labeled_only`` for every other method, the longer references included (their
    "gain" is how far the reference moved: the convergence check); an ensemble control of a reference against that
    reference (``labeled_only_2x_ensemble`` against ``labeled_only_2x``). None for ``labeled_only`` itself."""
    if key == "labeled_only":
        return None
    reference, method = METHODS["labeled_only"], METHODS.get(key)
    if method is not None and method.ensemble_of and METHODS[method.ensemble_of].trainer == reference.trainer:
        return method.ensemble_of  # the ensemble control of a reference: that reference, one network, same budget
    if method is not None and method.budget and method.trainer != reference.trainer:
        same = [m.key for m in METHODS.values() if m.trainer == reference.trainer and m.budget == method.budget
                and m.dataset == "draw" and not m.ensemble_of and m.runner == "train" and not m.predict_env]
        if same:
            return same[0]
    return "labeled_only"


def budget_factor(key: str) -> int:
    """2 for a ``"2x"`` method, 1 for a method at the profile's budget."""
    budget = METHODS[key].budget if key in METHODS else None
    return int(budget[:-1]) if budget else 1


def paired_gains(records: List[dict], base: List[dict], part: str = "summary") -> List[float]:
    """``method - labeled-only`` per (draw, seed) that both ran, in Dice points."""
    reference = {(r.get("draw"), r["seed"]): _dice(r, part) for r in base if part in r}
    return [100 * (_dice(r, part) - reference[(r.get("draw"), r["seed"])]) for r in records
            if part in r and (r.get("draw"), r["seed"]) in reference]


def aggregate(profile: Profile, records: List[dict], results: Path,
              validation_records: Optional[List[dict]] = None) -> str:
    import matplotlib

    matplotlib.use("agg")
    import matplotlib.pyplot as plt

    names = [profile.labels[c] for c in sorted(profile.labels)]
    records = [r for r in records if "summary" in r]
    bound = [r for r in records if r.get("draw") == BOUND]
    records = [r for r in records if r.get("draw") != BOUND]
    draws = sorted({r.get("draw") for r in records}, key=lambda d: (d is None, d))
    multi = profile.draws is not None

    def group(rs):
        out: Dict[str, List[dict]] = {}
        for r in rs:
            out.setdefault(r["method"], []).append(r)
        return out

    def stat(rs, name, metric, part="summary"):
        values = [r[part][name][metric]["mean"] for r in rs]
        return float(np.mean(values)), sample_std(values), len(values)

    def pm(m, sd, n):
        return f"{100 * m:.2f} ± {100 * sd:.2f}" if n > 1 else f"{100 * m:.2f}"

    def gain_text(diffs) -> str:
        """Paired with the labeled-only run of the same draw and seed (seed variance is large on short budgets, so
        a one-seed row is compared with the baseline's run of that seed, not its mean)."""
        if not diffs:
            return ""
        spread = f" ± {sample_std(diffs):.2f}" if len(diffs) > 1 else ""
        return f"{np.mean(diffs):+.2f}{spread} ({len(diffs)}: " + " / ".join(f"{d:+.2f}" for d in diffs) + ")"

    # the bound at the longest budget that ran (the closest to the ceiling; the fraction divides by its distance)
    bound_by_method = group(bound)
    bound_means = {key: float(np.mean([_dice(r) for r in brs])) for key, brs in bound_by_method.items()}
    bound_key = max(bound_by_method, key=budget_factor) if bound else None
    bound_dice = bound_means[bound_key] if bound else None
    header = ["method", "trainer", "seeds", "mean Dice (%)", "gain vs labeled-only, paired (points: mean ± sd (n: "
              "per seed))"] + (["closes (% of labeled-only → all-labeled)"] if bound else []) + \
        (["validation Dice (%)"] if profile.validation else []) + \
        [f"Dice {n} (%)" for n in names] + ["HD95 (mm)", "ASSD (mm)"]
    csv_rows = [["draw", "method", "trainer", "seeds", "dice_mean", "dice_sd", "gain", "gain_sd", "closed",
                 "validation_dice"] + [f"dice_{n}" for n in names] + ["hd95", "assd"]]
    sections: List[str] = []
    gains_by_method: Dict[str, List[tuple]] = {}  # method -> [(draw, seed, gain)]
    for draw in draws:
        rs = [r for r in records if r.get("draw") == draw]
        by_method = group(rs)
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for key, mrs in by_method.items():
            d, s, n = stat(mrs, "mean", "dice")
            ref_key = reference_of(key)
            base = by_method.get(ref_key, []) if ref_key else []
            paired_seeds = {r["seed"] for r in mrs} & {b["seed"] for b in base}
            # the fraction's distance is measured from the reference runs the gains are paired with (a method run on
            # seed 0 only is not measured from the mean of the reference's seeds 0-2)
            paired_base = [b for b in base if b["seed"] in paired_seeds]
            base_mean = float(np.mean([_dice(r) for r in paired_base])) if paired_base else None
            diffs = paired_gains(mrs, base) if ref_key else []
            for r, g in zip([r for r in mrs if r["seed"] in paired_seeds], diffs):
                gains_by_method.setdefault(key, []).append((draw, r["seed"], g))
            closed = ""
            if (bound_dice is not None and base_mean is not None and diffs and
                    100 * (bound_dice - base_mean) >= BOUND_MARGIN):
                fraction = np.mean(diffs) / (100 * (bound_dice - base_mean)) * 100
                # past 100 % the method beats the "bound": the bound has not converged, the fraction means nothing
                closed = f"{fraction:.0f} %" if fraction <= 100 else "past the bound (not converged)"
            val = [r for r in mrs if "validation" in r]
            val_text = pm(*stat(val, "mean", "dice", "validation")) if val else "—"
            per_class = [stat(mrs, name, "dice") for name in names]
            hd, assd = stat(mrs, "mean", "hd95"), stat(mrs, "mean", "assd")
            versus = f" vs {ref_key}" if diffs and ref_key != "labeled_only" else ""
            trainer = trainer_text(mrs)
            row = [key, trainer, str(n), pm(d, s, n), (gain_text(diffs) + versus) or "—"] + \
                ([closed or "—"] if bound else []) + ([val_text] if profile.validation else []) + \
                [pm(*c) for c in per_class] + [f"{hd[0]:.2f}", f"{assd[0]:.2f}"]
            lines.append("| " + " | ".join(row) + " |")
            csv_rows.append([draw if draw is not None else "", key, trainer, n, d, s,
                             np.mean(diffs) if diffs else "", sample_std(diffs) if diffs else "",
                             closed.rstrip(" %") if closed.endswith("%") else "",
                             stat(val, "mean", "dice", "validation")[0] if val else ""] +
                            [m for m, _, _ in per_class] + [hd[0], assd[0]])
        title = [] if not multi else [f"### Labeled draw {draw}" + (f" ({_draw_cases(rs)})" if _draw_cases(rs)
                                                                     else ""), ""]
        sections.append("\n".join(title + lines))
    for key, brs in bound_by_method.items():
        csv_rows.append([BOUND, key, brs[0]["trainer"], len(brs), bound_means[key],
                         sample_std([_dice(r) for r in brs]), "", "", "", ""] +
                        [stat(brs, n, "dice")[0] for n in names] +
                        [stat(brs, "mean", "hd95")[0], stat(brs, "mean", "assd")[0]])
    headline = []
    if multi and gains_by_method:
        headline = ["### Headline: mean paired gain over the labeled draws", "",
                    "| method | draws | mean over draws of the per-draw paired gain (points) | per draw |", "|---|---|---|---|"]
        for key, items in gains_by_method.items():
            per_draw = {}
            for draw, _, g in items:
                per_draw.setdefault(draw, []).append(g)
            means = [float(np.mean(v)) for v in per_draw.values()]
            ref_key = reference_of(key)
            versus = f" (vs {ref_key})" if ref_key != "labeled_only" else ""
            headline.append(f"| {key}{versus} | {len(means)} | {np.mean(means):+.2f}" +
                            (f" ± {sample_std(means):.2f}" if len(means) > 1 else "") + " | " +
                            " / ".join(f"draw {d}: {np.mean(v):+.2f} ({len(v)})" for d, v in per_draw.items()) + " |")
        headline.append("")
    if bound:
        runs_text = "; ".join(
            f"`{key}` ({brs[0]['trainer']}, seed {'/'.join(str(r['seed']) for r in brs)}): "
            f"{100 * bound_means[key]:.2f} mean Dice, per class " +
            ", ".join(f"{n} {100 * stat(brs, n, 'dice')[0]:.2f}" for n in names)
            for key, brs in sorted(bound_by_method.items(), key=lambda kv: budget_factor(kv[0])))
        headline += [f"All-labeled bound (every training case labeled): {runs_text}. The fraction of the labeled-only "
                     f"→ all-labeled distance a gain closes uses `{bound_key}` (the longest budget that ran) and the "
                     f"reference the gain is paired with; it is given only where that reference is at least "
                     f"{BOUND_MARGIN:.0f} points below the bound (otherwise the bound has not converged and the "
                     f"fraction divides by noise).", ""]
    validation_table = _validation_table(profile, validation_records or [], records)
    table = "\n\n".join(sections)
    with open(results / "results.csv", "w", newline="") as f:  # csv quotes a field with a comma (a trainer's text)
        csv.writer(f, lineterminator="\n").writerows(csv_rows)
    md = [f"# {profile.name}", "", profile.description, "",
          f"Test cases: labelsTs of the converted dataset; metrics of `nnunet_semi.apps.metrics` (mean over test "
          f"cases, then over seeds: mean ± sample standard deviation (n − 1) when several seeds ran). Gains are "
          f"paired with the labeled-only run of the same draw and seed, at the method's own budget where the "
          f"reference ran at it (`cps_2x` against `labeled_only_2x`; the longer references themselves against "
          f"`labeled_only`: how far the reference moved). Reproduce: `python -m benchmarks.run "
          f"--profile {profile.name}`; the exact commands are in `commands.sh`, each run's commands, code commit and "
          f"start / end time in `runs/*.json`. Wall times depend on what else the machine ran" + (
              "; the cost of each method per iteration is measured separately in `cost.md`." if
              (results / "cost.md").exists() else
              " (two benchmark chains shared the machine's cores): they are not a cost measurement, and this "
              "profile has no `cost.md` yet."), ""] + headline + [table, ""]
    if validation_table:
        md += [validation_table, ""]
    reading = results / "reading.md"  # the hand-written interpretation of these numbers, kept across re-runs
    if reading.is_file():
        md += [reading.read_text().rstrip(), ""]
    (results / "results.md").write_text("\n".join(md))
    _plot(profile, records, gains_by_method, results, plt)
    return "\n\n".join(([ "\n".join(headline)] if headline else []) + [table])


def _draw_cases(records: List[dict]) -> str:
    return records[0].get("dataset", "") if records else ""


def _validation_table(profile: Profile, records: List[dict], test_records: Sequence[dict] = ()) -> str:
    """Candidate settings (``--validation-only`` runs): their validation Dice per seed, paired with the validation Dice
    of the reference's run of the same draw and seed (recorded by its full run, ``test_records``); the reference is
    :func:`reference_of` the candidate, so a longer-budget candidate (``fixmatch_2x``) is paired with the reference at
    its budget (``labeled_only_2x``), named in the row where it is not ``labeled_only``."""
    records = [r for r in records if "validation" in r]
    if not records:
        return ""
    by_run = {(r["method"], r.get("draw"), r["seed"]): r for r in test_records if "validation" in r}
    lines = ["### Candidate settings on the validation cases (`--validation-only`: the test set was not read)", "",
             "Validation Dice per seed; the gain is paired with labeled-only's validation Dice of the same draw and "
             "seed (from its full run), at the candidate's budget (a 2x candidate against `labeled_only_2x`).", "",
             "| draw | method | trainer | seeds | validation Dice (%) | per seed | labeled-only, same seeds | "
             "paired gain (points) |", "|---|---|---|---|---|---|---|---|"]
    groups: Dict[tuple, List[dict]] = {}
    for r in records:
        groups.setdefault((r.get("draw"), r["method"]), []).append(r)
    for (draw, key), rs in sorted(groups.items(), key=lambda kv: (str(kv[0][0]), kv[0][1])):
        rs = sorted(rs, key=lambda r: r["seed"])
        values = [_dice(r, "validation") for r in rs]
        per_seed = " / ".join(f"s{r['seed']} {100 * v:.2f}" for r, v in zip(rs, values))
        reference_key = reference_of(key) or "labeled_only"
        refs = [by_run.get((reference_key, draw, r["seed"])) for r in rs]
        if all(refs):
            ref_values = [_dice(ref, "validation") for ref in refs]
            gains = [100 * (v - rv) for v, rv in zip(values, ref_values)]
            reference = " / ".join(f"{100 * v:.2f}" for v in ref_values) + \
                (f" ({reference_key})" if reference_key != "labeled_only" else "")
            gain = f"{np.mean(gains):+.2f}" + (f" ± {sample_std(gains):.2f}" if len(gains) > 1 else "") + \
                f" ({' / '.join(f'{g:+.2f}' for g in gains)})"
        else:
            reference = gain = "—"
        lines.append(f"| {draw if draw is not None else ''} | {key} | {rs[0]['trainer']} | {len(rs)} | "
                     f"{100 * np.mean(values):.2f}" + (f" ± {100 * sample_std(values):.2f}" if len(values) > 1 else "")
                     + f" | {per_seed} | {reference} | {gain} |")
    return "\n".join(lines)


def _plot(profile: Profile, records: List[dict], gains_by_method: Dict[str, List[tuple]], results: Path, plt) -> None:
    """Left: mean test Dice per method with every seed as a dot; right: every paired gain (method - labeled-only of
    the same draw and seed) as a point, one colour per draw."""
    keys = list(dict.fromkeys(r["method"] for r in records))
    fig, axes = plt.subplots(1, 2, figsize=(max(10, 1.6 * len(keys) + 4), 4.8),
                             gridspec_kw={"width_ratios": [1, 1]})
    ax = axes[0]
    for i, k in enumerate(keys):
        values = [100 * _dice(r) for r in records if r["method"] == k]
        ax.bar(i, np.mean(values), color="0.6" if k == "labeled_only" else "tab:blue", alpha=0.5)
        for r in (r for r in records if r["method"] == k):
            ax.plot(i, 100 * _dice(r), "o", color="k", markersize=3)
    ax.set_xticks(range(len(keys)))
    ax.set_xticklabels(keys, rotation=35, ha="right")
    ax.set_ylabel("mean test Dice (%)")
    ax.set_title(f"{profile.name}: test Dice")
    ax = axes[1]
    gain_keys = [k for k in keys if k in gains_by_method]
    draws = sorted({d for items in gains_by_method.values() for d, _, _ in items}, key=str)
    colors = {d: c for d, c in zip(draws, ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple"] * 4)}
    for i, k in enumerate(gain_keys):
        items = gains_by_method[k]
        for j, (d, seed, g) in enumerate(items):
            ax.plot(i + 0.08 * (j - len(items) / 2), g, "o", color=colors[d], markersize=5,
                    label=f"draw {d}" if d is not None else None)
        ax.plot([i - 0.3, i + 0.3], [np.mean([g for _, _, g in items])] * 2, color="k", linewidth=1.5)
    ax.axhline(0, color="0.3", linestyle="--", linewidth=1)
    ax.set_xticks(range(len(gain_keys)))
    ax.set_xticklabels(gain_keys, rotation=35, ha="right")
    ax.set_ylabel("paired gain over labeled-only (Dice points)")
    ax.set_title("paired gains: one point per seed (colour: draw), line: mean", fontsize=10)
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    if len(unique) > 1:
        ax.legend(unique.values(), unique.keys(), fontsize=8)
    fig.tight_layout()
    fig.savefig(results / "dice.png", dpi=100)
    plt.close(fig)


def load_records(folder: Path) -> List[dict]:
    records = [json.loads(f.read_text()) for f in sorted(folder.glob("*.json"))] if folder.is_dir() else []
    order = {m.key: i for i, m in enumerate(METHODS.values())}
    records.sort(key=lambda r: (str(r.get("draw")), order.get(r["method"], 99), r["seed"]))
    return records


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", required=True, choices=sorted(PROFILES))
    parser.add_argument("--methods", nargs="+", default=None, help=f"default: the profile's; known: {sorted(METHODS)}")
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="default: the profile's")
    parser.add_argument("--draws", nargs="+", type=int, default=None,
                        help="labeled draws (profiles with draws; default: all of the profile's)")
    parser.add_argument("--validation-only", action="store_true",
                        help="train and record the validation Dice only (candidate settings): no test prediction")
    parser.add_argument("--work", default=None, help="work folder (default benchmarks/work/<profile>)")
    parser.add_argument("--results", default=None, help="results folder (default benchmarks/results/<profile>)")
    parser.add_argument("--rerun", action="store_true",
                        help="train recorded runs again whose checkpoints are gone, for an ensemble control's test "
                             "probabilities: recorded as reruns/<run>_<date>.json; runs/ keeps the original, with "
                             "which the tables and gains pair")
    parser.add_argument("--aggregate-only", action="store_true", help="rebuild the tables from runs/*.json")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads per training/pretraining (nnUNet_semi_threads; default: all cores). "
                             "With 1, two benchmark chains (e.g. different --seeds) can run side by side on 2 cores")
    args = parser.parse_args(argv)
    if args.rerun and (args.validation_only or args.aggregate_only):
        parser.error("--rerun trains and predicts the test set: not with --validation-only or --aggregate-only")
    profile = PROFILES[args.profile]
    work = Path(args.work or REPO / "benchmarks" / "work" / profile.name).resolve()
    results = Path(args.results or RESULTS / profile.name).resolve()
    methods = methods_of(profile, args.methods)
    seeds = args.seeds if args.seeds is not None else list(profile.seeds)
    draws = [None] if profile.draws is None else (args.draws if args.draws is not None else list(profile.draws))
    runner = Runner(profile, work, results, threads=args.threads)
    if not args.aggregate_only:
        start = time.time()
        for draw in draws:
            for seed in seeds:
                for method in methods:
                    if method.dataset == "bound" and seed != seeds[0]:
                        continue  # the bound runs once per profile
                    if args.rerun:
                        runner.rerun_method(method, seed, draw)
                    else:
                        runner.run_method(method, seed, draw, validation_only=args.validation_only)
        print(f"benchmark {profile.name}: {(time.time() - start) / 60:.1f} min")
    print(aggregate(profile, load_records(results / "runs"), results, load_records(results / "validation_runs")))


if __name__ == "__main__":
    main()
