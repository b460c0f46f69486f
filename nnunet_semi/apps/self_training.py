"""Self-training with pseudo-labels (Bai et al., MICCAI 2017, Sec. 2; the "pseudo-label" row of Chaitanya et al.,
MedIA 2023, Table I), driven entirely by nnU-Net's own commands.

One command runs every round::

    nnunet_semi_self_training -d 27 -c 2d -f 0 -tr nnUNetTrainerLabeledOnly -p nnUNetPlans --rounds 2
    (= python -m nnunet_semi.apps.self_training ...)

* round 0: ``nnUNetv2_train D C F -tr TRAINER -p PLANS`` on the labeled cases (the labeled-only baseline);
* round r = 1..R:
  1. ``nnUNetv2_predict`` of round r-1's model on ``imagesUnlabeled`` -> pseudo-labels (the paper's E-step; nnU-Net's
     own inference, test-time mirroring unless ``--disable-tta``, no CRF; ``--max-unlabeled N``: only the first N
     cases by name, to bound the cost on a large pool);
  2. a derived raw dataset ``Dataset<first_id + r - 1>_<task>SelfTrainR<r>``: the source's labeled cases plus every
     unlabeled image with its pseudo-label in imagesTr/labelsTr, and a ``splits_final.json`` whose validation folds
     are the source's (real labels only) and whose training folds add all pseudo-labeled cases. It is written to
     ``$nnUNet_raw/.<name>.partial`` and renamed when complete;
  3. the source's plans file is transferred with nnU-Net's ``nnUNetv2_move_plans_between_datasets`` (same plans
     identifier, ``dataset_name`` rewritten), the source's ``dataset_fingerprint.json`` is copied beside it (the
     plans, not a new fingerprint, define the preprocessing), and ``nnUNetv2_preprocess`` preprocesses the derived
     dataset with exactly those plans;
  4. ``nnUNetv2_train`` on the derived dataset from scratch (the paper's M-step; ``--init-from-previous`` starts from
     round r-1's weights through nnU-Net's ``-pretrained_weights``, heads excepted).
* every round's model stays in nnU-Net's results folder of its own dataset
  (``$nnUNet_results/<dataset of round r>/TRAINER__PLANS__C/fold_F``) with nnU-Net's validation summary; with
  ``imagesTs`` + ``labelsTs`` in the source dataset (and no ``--no-test``) each round's model also predicts the test
  images (``nnUNetv2_predict``) evaluated by ``nnUNetv2_evaluate_folder``. All rounds are summarised in
  ``$nnUNet_results/<source>/SelfTraining__TRAINER__PLANS__C/fold_F/summary.json`` (test predictions beside it,
  ``round_<r>_test/``).

Re-running the command continues where it stopped: finished trainings, datasets and evaluations are reused
(a training with ``checkpoint_latest.pth`` continues with ``--c``). A derived dataset records its origin in
``self_training.json``; an id used by anything else is refused.

Where this differs from Bai et al.: nnU-Net's network, training and inference replace the paper's FCN; no CRF
refinement of the pseudo-labels; the network is retrained from scratch each round unless ``--init-from-previous``
(the paper alternates label and network updates, continuing the network). ``TRAINER`` must be a supervised trainer
(``nnUNetTrainer``, ``nnUNetTrainerLabeledOnly``, ...): the derived datasets have no ``imagesUnlabeled``.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from typing import Dict, List, Optional

from batchgenerators.utilities.file_and_folder_operations import isdir, isfile, join, load_json, save_json
from nnunetv2.paths import nnUNet_preprocessed, nnUNet_raw, nnUNet_results
from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets

from nnunet_semi.apps.ext_trainer import ext_trainer_value
from nnunet_semi.data.unlabeled import UNLABELED_IMAGES_FOLDER, UnlabeledDataError, find_unlabeled_cases
from nnunet_semi.utils.commands import installed_command

MARKER = "self_training.json"
PARTIAL_SUFFIX = ".partial"


class SelfTrainingError(ValueError):
    """Invalid self-training set-up or a failed step; the message names the file/setting and the fix."""


def derived_dataset_name(source_name: str, dataset_id: int, round_index: int) -> str:
    """``Dataset<id>_<task>SelfTrainR<round>`` for the source ``Dataset<sid>_<task>``."""
    return f"Dataset{dataset_id:03d}_{source_name.split('_', 1)[1]}SelfTrainR{round_index}"


def _nnunet_command(name: str) -> str:
    """nnU-Net's console script of this interpreter's environment (else the one on PATH)."""
    found = installed_command(name)
    if found is None:
        raise SelfTrainingError(f"{name} not found next to {sys.executable} nor on PATH: install nnunetv2.")
    return found


def _datasets_with_id(dataset_id: int) -> Dict[str, List[str]]:
    """``{folder name: [roots]}`` of every folder ``Dataset<id>_*`` in nnU-Net's raw / preprocessed / results."""
    found: Dict[str, List[str]] = {}
    for root in (nnUNet_raw.get(), nnUNet_preprocessed.get(), nnUNet_results.get()):
        if root and isdir(root):
            for name in os.listdir(root):
                if name.startswith(f"Dataset{dataset_id:03d}_"):
                    found.setdefault(name, []).append(root)
    return found


class SelfTraining:
    """The rounds of one self-training run; see the module docstring. :meth:`run` does everything."""

    def __init__(self, dataset_name_or_id, configuration: str, fold: str = "0",
                 trainer: str = "nnUNetTrainerLabeledOnly", plans: str = "nnUNetPlans", rounds: int = 1,
                 first_id: Optional[int] = None, device: str = "cuda", num_processes: Optional[int] = None,
                 disable_tta: bool = False, init_from_previous: bool = False, test: bool = True,
                 max_unlabeled: Optional[int] = None):
        for var in (nnUNet_raw, nnUNet_preprocessed, nnUNet_results):
            if not var.is_set():
                raise SelfTrainingError(f"{var.env_var_name} is not set: export it (see nnU-Net's "
                                        f"documentation/setting_up_paths.md).")
        if rounds < 1:
            raise SelfTrainingError(f"--rounds must be >= 1, got {rounds}")
        try:
            self.source = str(maybe_convert_to_dataset_name(dataset_name_or_id))
        except RuntimeError as e:
            raise SelfTrainingError(f"dataset {dataset_name_or_id} not found: {e}") from e
        self.source_id = int(self.source[7:10])
        self.configuration, self.fold, self.trainer, self.plans = configuration, str(fold), trainer, plans
        self.rounds, self.device, self.num_processes = rounds, device, num_processes
        self.disable_tta, self.init_from_previous, self.test = disable_tta, init_from_previous, test
        self.first_id = self.source_id + 1 if first_id is None else first_id
        self.raw = join(nnUNet_raw.get(), self.source)
        self.dataset_json = load_json(join(self.raw, "dataset.json"))
        plans_file = join(nnUNet_preprocessed.get(), self.source, plans + ".json")
        if not isfile(plans_file):
            raise SelfTrainingError(f"{plans_file} does not exist. Fix: nnUNetv2_plan_and_preprocess -d "
                                    f"{self.source_id} -c {configuration} (or make plans '{plans}') first.")
        if configuration not in load_json(plans_file)["configurations"]:
            raise SelfTrainingError(f"configuration '{configuration}' is not in {plans_file}")
        try:
            self.unlabeled = find_unlabeled_cases(self.raw, self.dataset_json)
        except UnlabeledDataError as e:
            raise SelfTrainingError(f"self-training pseudo-labels {join(self.raw, UNLABELED_IMAGES_FOLDER)}: {e}") \
                from e
        if max_unlabeled is not None:
            if max_unlabeled < 1:
                raise SelfTrainingError(f"--max-unlabeled must be >= 1, got {max_unlabeled}")
            self.unlabeled = dict(list(self.unlabeled.items())[:max_unlabeled])  # the first cases by name
        labeled = get_filenames_of_train_images_and_targets(self.raw, self.dataset_json)
        self.labeled = {str(k): v for k, v in labeled.items()}  # nnU-Net's keys are numpy strings
        clash = sorted(set(self.unlabeled) & set(self.labeled))
        if clash:
            raise SelfTrainingError(f"unlabeled case ids {clash[:5]} are also labeled cases in {self.raw}: rename "
                                    f"them in {UNLABELED_IMAGES_FOLDER}/ (pseudo-labeled cases join imagesTr).")
        self.names = [self.source] + [derived_dataset_name(self.source, self.first_id + r - 1, r)
                                      for r in range(1, rounds + 1)]
        self._check_ids()
        self.env = {**os.environ, "nnUNet_extTrainer": ext_trainer_value(os.environ.get("nnUNet_extTrainer"))}

    # ------------------------------------------------------------------ checks
    def _origin(self, round_index: int) -> dict:
        return {"source": self.source, "round": round_index, "configuration": self.configuration,
                "fold": self.fold, "trainer": self.trainer, "plans": self.plans,
                "unlabeled_cases": sorted(self.unlabeled)}

    def _check_ids(self) -> None:
        for r, name in enumerate(self.names[1:], start=1):
            dataset_id = self.first_id + r - 1
            if not 1 <= dataset_id <= 999:
                raise SelfTrainingError(f"derived dataset id {dataset_id} is outside 1..999: choose --first-id so "
                                        f"that ids {self.first_id}..{self.first_id + self.rounds - 1} are free.")
            if dataset_id == self.source_id:
                raise SelfTrainingError(f"--first-id {self.first_id} makes round {r} reuse the source id.")
            for other, roots in _datasets_with_id(dataset_id).items():
                marker = join(nnUNet_raw.get(), other, MARKER)
                if other != name or not isfile(marker):
                    raise SelfTrainingError(
                        f"dataset id {dataset_id} (round {r}) is taken by {other} in {', '.join(roots)}. Fix: "
                        f"choose free ids with --first-id (rounds use {self.first_id}..."
                        f"{self.first_id + self.rounds - 1}) or remove that dataset.")
                if load_json(marker) != self._origin(r):
                    raise SelfTrainingError(
                        f"{join(nnUNet_raw.get(), other)} was made by another self-training run ({load_json(marker)})"
                        f". Fix: choose other ids with --first-id or remove that dataset.")

    # ------------------------------------------------------------------ steps
    def _run(self, args: List[str], env: Optional[dict] = None) -> None:
        cmd = [_nnunet_command(args[0])] + [str(a) for a in args[1:]]
        print(f"[self-training] $ {' '.join(args[:1] + cmd[1:])}", flush=True)
        proc = subprocess.run(cmd, env=env or self.env)
        if proc.returncode != 0:
            raise SelfTrainingError(f"{args[0]} failed (exit code {proc.returncode}); its output is above. Fix "
                                    f"the cause and re-run the same command: finished steps are reused.")

    def _step(self, text: str) -> None:
        print(f"[self-training {time.strftime('%H:%M:%S')}] {text}", flush=True)

    def model_folder(self, round_index: int) -> str:
        return join(nnUNet_results.get(), self.names[round_index],
                    f"{self.trainer}__{self.plans}__{self.configuration}", f"fold_{self.fold}")

    def summary_folder(self) -> str:
        return join(nnUNet_results.get(), self.source,
                    f"SelfTraining__{self.trainer}__{self.plans}__{self.configuration}", f"fold_{self.fold}")

    def train(self, round_index: int) -> None:
        folder = self.model_folder(round_index)
        if isfile(join(folder, "checkpoint_final.pth")) and isfile(join(folder, "validation", "summary.json")):
            self._step(f"round {round_index}: model {folder} exists, reused")
            return
        self._step(f"round {round_index}: training {self.trainer} on {self.names[round_index]}")
        args = ["nnUNetv2_train", self.names[round_index], self.configuration, self.fold, "-tr", self.trainer,
                "-p", self.plans, "-device", self.device]
        if isfile(join(folder, "checkpoint_latest.pth")) or isfile(join(folder, "checkpoint_final.pth")):
            args.append("--c")
        elif self.init_from_previous and round_index > 0:
            args += ["-pretrained_weights", join(self.model_folder(round_index - 1), "checkpoint_final.pth")]
        self._run(args)

    def _predict(self, input_folder: str, output_folder: str, round_index: int) -> None:
        args = ["nnUNetv2_predict", "-i", input_folder, "-o", output_folder, "-d", self.names[round_index],
                "-c", self.configuration, "-f", self.fold, "-tr", self.trainer, "-p", self.plans,
                "-device", self.device]
        if self.disable_tta:
            args.append("--disable_tta")
        if self.num_processes:
            args += ["-npp", self.num_processes, "-nps", self.num_processes]
        self._run(args)

    def build_dataset(self, round_index: int) -> None:
        """Raw dataset of ``round_index`` (>= 1) with the pseudo-labels of round ``round_index - 1``'s model."""
        name = self.names[round_index]
        final = join(nnUNet_raw.get(), name)
        if isdir(final):
            self._step(f"round {round_index}: dataset {final} exists, reused")
            return
        partial = join(nnUNet_raw.get(), "." + name + PARTIAL_SUFFIX)
        shutil.rmtree(partial, ignore_errors=True)
        try:
            unlabeled_input = join(partial, "_unlabeled_input")
            os.makedirs(unlabeled_input)
            for files in self.unlabeled.values():
                for f in files:
                    os.symlink(os.path.abspath(f), join(unlabeled_input, os.path.basename(f)))
            self._step(f"round {round_index}: pseudo-labelling {len(self.unlabeled)} unlabeled images with round "
                       f"{round_index - 1}'s model")
            pseudo = join(partial, "_pseudo_labels")
            self._predict(unlabeled_input, pseudo, round_index - 1)
            self._step(f"round {round_index}: writing {name} ({len(self.labeled)} labeled + {len(self.unlabeled)} "
                       f"pseudo-labeled cases)")
            self._write_raw(partial, pseudo, round_index)
            shutil.rmtree(unlabeled_input)
            shutil.rmtree(pseudo)
            os.rename(partial, final)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise

    def _write_raw(self, folder: str, pseudo: str, round_index: int) -> None:
        ending = self.dataset_json["file_ending"]
        images, labels = join(folder, "imagesTr"), join(folder, "labelsTr")
        os.makedirs(images)
        os.makedirs(labels)
        for case, entry in self.labeled.items():
            for c, f in enumerate(entry["images"]):
                shutil.copy2(f, join(images, f"{case}_{c:04d}{ending}"))
            shutil.copy2(entry["label"], join(labels, case + ending))
        for case, files in self.unlabeled.items():
            label = join(pseudo, case + ending)
            if not isfile(label):
                raise SelfTrainingError(f"nnUNetv2_predict wrote no pseudo-label {label} for {files[0]}")
            for c, f in enumerate(files):
                shutil.copy2(f, join(images, f"{case}_{c:04d}{ending}"))
            shutil.copy2(label, join(labels, case + ending))
        dataset_json = {k: v for k, v in self.dataset_json.items() if k != "dataset"}
        dataset_json.update(numTraining=len(self.labeled) + len(self.unlabeled),
                            name=self.names[round_index].split("_", 1)[1],
                            description=f"{self.source} labeled cases + pseudo-labels of its {len(self.unlabeled)} "
                                        f"unlabeled images by self-training round {round_index - 1}'s model")
        save_json(dataset_json, join(folder, "dataset.json"), sort_keys=False)
        save_json(self._splits(), join(folder, "splits_final.json"), sort_keys=False)
        save_json(self._origin(round_index), join(folder, MARKER), sort_keys=False)

    def _splits(self) -> list:
        """The source's splits with every pseudo-labeled case added to each training fold (never to validation)."""
        splits_file = join(nnUNet_preprocessed.get(), self.source, "splits_final.json")
        if not isfile(splits_file):
            raise SelfTrainingError(f"{splits_file} is missing (nnUNetv2_train writes it in round 0): train round 0 "
                                    f"first or copy the dataset's splits there.")
        pseudo = sorted(self.unlabeled)
        return [{"train": sorted(s["train"]) + pseudo, "val": sorted(s["val"])} for s in load_json(splits_file)]

    def prepare(self, round_index: int) -> None:
        """Preprocessed folder of a derived dataset, with the source's plans (nnU-Net's plans transfer)."""
        name = self.names[round_index]
        folder = join(nnUNet_preprocessed.get(), name)
        if isfile(join(folder, MARKER)):
            self._step(f"round {round_index}: preprocessed {folder} exists, reused")
            return
        self._step(f"round {round_index}: preprocessing {name} with {self.source}'s plans '{self.plans}'")
        shutil.rmtree(folder, ignore_errors=True)
        try:
            os.makedirs(folder)
            source = join(nnUNet_preprocessed.get(), self.source)
            shutil.copy2(join(nnUNet_raw.get(), name, "dataset.json"), join(folder, "dataset.json"))
            shutil.copy2(join(source, "dataset_fingerprint.json"), join(folder, "dataset_fingerprint.json"))
            self._run(["nnUNetv2_move_plans_between_datasets", "-s", self.source, "-t", name, "-sp", self.plans,
                       "-tp", self.plans])
            preprocess = ["nnUNetv2_preprocess", "-d", self.first_id + round_index - 1, "-plans_name", self.plans,
                          "-c", self.configuration]
            if self.num_processes:
                preprocess += ["-np", self.num_processes]
            # nnUNet_n_proc_DA=0 is for training only (nnU-Net's planning code passes it to torch.set_num_threads)
            self._run(preprocess, {k: v for k, v in self.env.items() if k != "nnUNet_n_proc_DA"})
            shutil.copy2(join(nnUNet_raw.get(), name, "splits_final.json"), join(folder, "splits_final.json"))
            save_json(self._origin(round_index), join(folder, MARKER), sort_keys=False)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise

    def evaluate(self, round_index: int) -> dict:
        folder = self.model_folder(round_index)
        validation = load_json(join(folder, "validation", "summary.json"))
        row = {"round": round_index, "dataset": self.names[round_index], "model": folder,
               "validation_dice": validation["foreground_mean"]["Dice"],
               "validation_summary": join(folder, "validation", "summary.json")}
        images_ts, labels_ts = join(self.raw, "imagesTs"), join(self.raw, "labelsTs")
        if self.test and isdir(images_ts) and isdir(labels_ts):
            out = join(self.summary_folder(), f"round_{round_index}_test")
            if not isfile(join(out, "summary.json")):
                self._step(f"round {round_index}: predicting and evaluating {images_ts}")
                partial = out + PARTIAL_SUFFIX
                shutil.rmtree(partial, ignore_errors=True)
                try:
                    self._predict(images_ts, partial, round_index)
                    self._run(["nnUNetv2_evaluate_folder", labels_ts, partial, "-djfile",
                               join(self.raw, "dataset.json"), "-pfile", join(os.path.dirname(folder), "plans.json")])
                    shutil.rmtree(out, ignore_errors=True)
                    os.rename(partial, out)
                except BaseException:
                    shutil.rmtree(partial, ignore_errors=True)
                    raise
            row.update(test_dice=load_json(join(out, "summary.json"))["foreground_mean"]["Dice"],
                       test_summary=join(out, "summary.json"))
        return row

    def run(self) -> dict:
        self._step(f"{self.source}: {len(self.labeled)} labeled, {len(self.unlabeled)} unlabeled cases; "
                   f"{self.rounds} round(s) -> {', '.join(self.names[1:])}")
        for r in range(self.rounds + 1):
            if r > 0:
                self.build_dataset(r)
                self.prepare(r)
            self.train(r)
        rows = [self.evaluate(r) for r in range(self.rounds + 1)]
        summary = {"source": self.source, "configuration": self.configuration, "fold": self.fold,
                   "trainer": self.trainer, "plans": self.plans, "num_unlabeled": len(self.unlabeled),
                   "rounds": rows}
        os.makedirs(self.summary_folder(), exist_ok=True)
        target = join(self.summary_folder(), "summary.json")
        with open(target + ".tmp", "w") as f:
            json.dump(summary, f, indent=2)
        os.replace(target + ".tmp", target)
        for row in rows:
            test = f", test Dice {row['test_dice']:.4f}" if "test_dice" in row else ""
            self._step(f"round {row['round']} ({row['dataset']}): validation Dice {row['validation_dice']:.4f}{test}")
        self._step(f"summary: {target}")
        return summary


def self_training_entry(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="example: nnunet_semi_self_training -d 27 -c 2d -f 0 -tr "
                                            "nnUNetTrainerLabeledOnly --rounds 1")
    parser.add_argument("-d", required=True, help="source dataset name or id (with imagesUnlabeled/)")
    parser.add_argument("-c", required=True, help="configuration, e.g. 2d or 3d_fullres")
    parser.add_argument("-f", default="0", help="fold (default: 0)")
    parser.add_argument("-tr", default="nnUNetTrainerLabeledOnly",
                        help="supervised trainer of every round (default: nnUNetTrainerLabeledOnly)")
    parser.add_argument("-p", default="nnUNetPlans", help="plans identifier, reused by every round")
    parser.add_argument("--rounds", type=int, default=1, help="pseudo-labelling rounds after round 0 (default: 1)")
    parser.add_argument("--first-id", type=int, default=None,
                        help="dataset id of round 1's derived dataset; round r uses first_id + r - 1 "
                             "(default: source id + 1)")
    parser.add_argument("-device", default="cuda", choices=["cuda", "cpu", "mps"])
    parser.add_argument("-np", type=int, default=None,
                        help="processes for nnU-Net's preprocessing and prediction (default: nnU-Net's)")
    parser.add_argument("--disable-tta", action="store_true", help="predict without test-time mirroring")
    parser.add_argument("--init-from-previous", action="store_true",
                        help="start each round from the previous round's weights (-pretrained_weights)")
    parser.add_argument("--no-test", action="store_true", help="skip the imagesTs/labelsTs evaluation")
    parser.add_argument("--max-unlabeled", type=int, default=None,
                        help="pseudo-label only the first N unlabeled cases by name (default: all)")
    args = parser.parse_args(argv)
    try:
        SelfTraining(args.d, args.c, args.f, args.tr, args.p, args.rounds, args.first_id, args.device, args.np,
                     args.disable_tta, args.init_from_previous, not args.no_test, args.max_unlabeled).run()
    except SelfTrainingError as e:
        sys.exit(f"Error: {e}")


if __name__ == "__main__":
    self_training_entry()
