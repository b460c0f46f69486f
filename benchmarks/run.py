"""Accuracy benchmark: the labeled-only nnU-Net against every semi-/self-supervised method, same protocol.

``python -m benchmarks.run --profile hippocampus-cpu [--methods labeled_only cps ...] [--seeds 0 1]``

For a profile (``benchmarks/profiles.py``): converts the dataset from ``../shared/data`` with the project's converter,
plans and preprocesses it with nnU-Net (and derives the profile's plans), then for every seed and method runs the
method's pretraining (``nnunet_semi_pretrain``), ``nnUNetv2_train`` with the trainer's budget variant,
``nnUNetv2_predict`` on the held-out ``imagesTs`` and evaluates against ``labelsTs`` (per-class Dice, HD95, ASSD;
``nnunet_semi.apps.metrics``). Every step is skipped when its output exists, so an interrupted benchmark continues
where it stopped. Results: ``benchmarks/results/<profile>/`` (``results.md``, ``results.csv``, ``dice.png``,
``runs/*.json`` with each run's metrics and wall times, ``commands.sh`` with the exact commands in order).
"""
import argparse
import json
import os
import shlex
import subprocess
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from benchmarks.profiles import METHODS, PROFILES, Method, Profile, methods_of, trainer_name
from nnunet_semi.utils.commands import installed_command
from nnunet_semi.utils.environment import SEED_ENV, THREADS_ENV

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def bin_path(name: str) -> str:
    return installed_command(name) or name


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

    def seed_env(self, seed: int) -> dict:
        env = {**self.env, "nnUNet_results": str(self.work / f"results_seed{seed}"), SEED_ENV: str(seed)}
        if self.profile.device == "cpu":
            env["nnUNet_n_proc_DA"] = "0"  # single-process augmentation: reproducible on 2-core machines
            if self.threads:
                env[THREADS_ENV] = str(self.threads)
        return env

    def step(self, title: str, cmd: List[str], env: dict, log_name: str) -> float:
        cmd = [str(c) for c in cmd]
        shown = {k: env[k] for k in ("nnUNet_results", SEED_ENV, "nnUNet_n_proc_DA", THREADS_ENV) if k in env}
        line = " ".join(f"{k}={shlex.quote(v)}" for k, v in shown.items()) + " " + " ".join(map(shlex.quote, cmd))
        with open(self.commands, "a") as f:
            f.write(line.replace(str(self.work), "$WORK").replace(str(REPO) + "/", "") + "\n")
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
    def prepare(self) -> Path:
        p = self.profile
        raw = Path(p.prepare(self.env["nnUNet_raw"], p.dataset_id))
        self.raw = raw
        pre = self.work / "preprocessed" / raw.name
        if not (pre / "nnUNetPlans.json").is_file():
            self.step("plan and preprocess (nnU-Net)",
                      [bin_path("nnUNetv2_plan_and_preprocess"), "-d", p.dataset_id, "-c", p.configuration,
                       "-np", "2", "-npfp", "2"], self.env, "plan_and_preprocess")
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
                self.step(f"preprocess for {p.plans}",
                          [bin_path("nnUNetv2_preprocess"), "-d", p.dataset_id, "-plans_name", p.plans, "-c",
                           p.configuration, "-np", "2"], self.env, "preprocess_plans")
        return raw

    # ---------------------------------------------------------------- one method, one seed
    def run_method(self, method: Method, seed: int) -> dict:
        p, env = self.profile, self.seed_env(seed)
        out = self.results / "runs" / f"{method.key}_seed{seed}.json"
        if out.is_file():
            return json.loads(out.read_text())
        timings: Dict[str, float] = {}
        pretrained: Dict[str, str] = {}
        for pre_method, extra in method.pretrain:
            final = self._pretrain_checkpoint(env, pre_method)
            if final is None:
                timings[f"pretrain_{pre_method}_s"] = self.step(
                    f"seed {seed} {method.key}: pretraining {pre_method}",
                    [bin_path("nnunet_semi_pretrain"), "-d", p.dataset_id, "-c", p.configuration, "-p", p.plans,
                     "-m", pre_method, "-device", p.device, *p.pretrain_budget, *extra], env,
                    f"seed{seed}_pretrain_{pre_method}")
                final = self._pretrain_checkpoint(env, pre_method)
            pretrained[pre_method] = str(final)
        trainer = trainer_name(method, p)
        fold = self.fold_folder(env["nnUNet_results"], trainer)
        if not (fold / "checkpoint_final.pth").is_file():
            args = [a.format(**{f"pretrained:{k}": v for k, v in pretrained.items()}) for a in method.train_args]
            timings["train_s"] = self.step(
                f"seed {seed} {method.key}: nnUNetv2_train -tr {trainer}",
                [bin_path("nnUNetv2_train"), p.dataset_id, p.configuration, "0", "-tr", trainer, "-p", p.plans,
                 "-device", p.device, *args], env, f"seed{seed}_{method.key}_train")
        pred = self.work / "predictions" / f"seed{seed}" / method.key
        cmd = [bin_path("nnUNetv2_predict"), "-i", self.raw / "imagesTs", "-o", pred, "-d", p.dataset_id, "-c",
               p.configuration, "-f", "0", "-tr", trainer, "-p", p.plans, "-device", p.device, "-npp", "1",
               "-nps", "1"] + (["--disable_tta"] if p.disable_tta else [])
        timings["predict_s"] = self.step(f"seed {seed} {method.key}: nnUNetv2_predict", cmd, env,
                                         f"seed{seed}_{method.key}_predict")
        from nnunet_semi.apps.metrics import evaluate_folders

        labels = sorted(p.labels)
        metrics = evaluate_folders(str(self.raw / "labelsTs"), str(pred), labels, [p.labels[c] for c in labels],
                                   num_processes=1)
        record = {"method": method.key, "trainer": trainer, "seed": seed, "profile": p.name,
                  "summary": metrics["summary"], "timings": timings,
                  "train_log": self._train_log_timing(fold)}
        out.write_text(json.dumps(record, indent=1))
        return record

    def fold_folder(self, results_root: str, trainer: str) -> Path:
        """nnU-Net's fold-0 output folder of ``trainer`` with this profile's plans and configuration."""
        p = self.profile
        return Path(results_root) / self.raw.name / f"{trainer}__{p.plans}__{p.configuration}" / "fold_0"

    def _pretrain_checkpoint(self, env: dict, pre_method: str) -> Optional[Path]:
        base = Path(env["nnUNet_results"]) / self.raw.name
        found = sorted(base.glob(f"*Pretrain__{self.profile.plans}__{self.profile.configuration}/fold_0/"
                                 f"checkpoint_final.pth"))
        from pretraining.cli import PRETRAINERS

        wanted = PRETRAINERS[pre_method].method_name  # what the checkpoint records (e.g. "MMGLGlobal")
        return next((path for path in found if self._pretraining_method(path) == wanted), None)

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
def aggregate(profile: Profile, records: List[dict], results: Path) -> str:
    import matplotlib

    matplotlib.use("agg")
    import matplotlib.pyplot as plt

    names = [profile.labels[c] for c in sorted(profile.labels)]
    by_method: Dict[str, List[dict]] = {}
    for r in records:
        by_method.setdefault(r["method"], []).append(r)

    def stat(rs, name, metric):
        values = [r["summary"][name][metric]["mean"] for r in rs]
        return float(np.mean(values)), float(np.std(values)), len(values)

    base = by_method.get("labeled_only")
    base_by_seed = {r["seed"]: r["summary"]["mean"]["dice"]["mean"] for r in base or []}

    def gain(rs) -> str:
        """Paired with the labeled-only run of the same seed: mean over the shared seeds (seed variance is large on
        short budgets, so a one-seed row is compared with the baseline's run of that seed, not its mean)."""
        diffs = [r["summary"]["mean"]["dice"]["mean"] - base_by_seed[r["seed"]]
                 for r in rs if r["seed"] in base_by_seed]
        return f"{100 * float(np.mean(diffs)):+.2f} ({len(diffs)})" if diffs else ""

    header = ["method", "trainer", "seeds", "mean Dice (%)", "gain vs labeled-only, same seeds (points, n)"] + \
        [f"Dice {n} (%)" for n in names] + ["HD95 (mm)", "ASSD (mm)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    csv = [",".join(["method", "trainer", "seeds", "dice_mean", "dice_std", "gain"] + [f"dice_{n}" for n in names]
                    + ["hd95", "assd"])]
    for key, rs in by_method.items():
        d, s, n = stat(rs, "mean", "dice")
        paired = "" if key == "labeled_only" else gain(rs)
        per_class = [stat(rs, name, "dice") for name in names]
        hd, assd = stat(rs, "mean", "hd95"), stat(rs, "mean", "assd")
        pm = (lambda m, sd: f"{100 * m:.2f} ± {100 * sd:.2f}") if n > 1 else (lambda m, sd: f"{100 * m:.2f}")
        lines.append("| " + " | ".join([key, rs[0]["trainer"], str(n), pm(d, s), paired or "—"]
                                       + [pm(m, sd) for m, sd, _ in per_class]
                                       + [f"{hd[0]:.2f}", f"{assd[0]:.2f}"]) + " |")
        csv.append(",".join(map(str, [key, rs[0]["trainer"], n, d, s, paired.split(" ")[0]]
                                + [m for m, _, _ in per_class] + [hd[0], assd[0]])))
    table = "\n".join(lines)
    (results / "results.csv").write_text("\n".join(csv) + "\n")
    md = [f"# {profile.name}", "", profile.description, "",
          f"Test cases: labelsTs of the converted dataset; metrics of `nnunet_semi.apps.metrics` (mean over test "
          f"cases, then over seeds: mean ± std when several seeds ran). Reproduce: `python -m benchmarks.run "
          f"--profile {profile.name}`; the exact commands are in `commands.sh`. Wall times are in `runs/*.json` (they "
          f"depend on what else the machine ran); the cost of each method per iteration is measured separately in "
          f"`cost.md`.", "", table, ""]
    reading = results / "reading.md"  # the hand-written interpretation of these numbers, kept across re-runs
    if reading.is_file():
        md += [reading.read_text().rstrip(), ""]
    (results / "results.md").write_text("\n".join(md))

    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(by_method)), 4.5))
    keys = list(by_method)
    means = [100 * stat(by_method[k], "mean", "dice")[0] for k in keys]
    stds = [100 * stat(by_method[k], "mean", "dice")[1] for k in keys]
    colors = ["0.6" if k == "labeled_only" else "tab:blue" for k in keys]
    ax.bar(range(len(keys)), means, yerr=stds, color=colors, capsize=4, alpha=0.6)
    for i, k in enumerate(keys):  # every seed as a dot, labelled with its seed
        for r in by_method[k]:
            value = 100 * r["summary"]["mean"]["dice"]["mean"]
            ax.plot(i, value, "o", color="k", markersize=4)
            ax.annotate(str(r["seed"]), (i, value), xytext=(4, 0), textcoords="offset points", fontsize=7,
                        va="center")
    if base:
        ax.axhline(100 * stat(base, "mean", "dice")[0], color="0.3", linestyle="--", linewidth=1, label="labeled-only")
        ax.legend()
    ax.set_xticks(range(len(keys)))
    ax.set_xticklabels(keys, rotation=30, ha="right")
    ax.set_ylabel("mean test Dice (%)")
    ax.set_title(profile.name)
    fig.tight_layout()
    fig.savefig(results / "dice.png", dpi=100)
    plt.close(fig)
    return table


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", required=True, choices=sorted(PROFILES))
    parser.add_argument("--methods", nargs="+", default=None, help=f"default: the profile's; known: {sorted(METHODS)}")
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="default: the profile's")
    parser.add_argument("--work", default=None, help="work folder (default benchmarks/work/<profile>)")
    parser.add_argument("--results", default=None, help="results folder (default benchmarks/results/<profile>)")
    parser.add_argument("--aggregate-only", action="store_true", help="rebuild the tables from runs/*.json")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads per training/pretraining (nnUNet_semi_threads; default: all cores). "
                             "With 1, two benchmark chains (e.g. different --seeds) can run side by side on 2 cores")
    args = parser.parse_args(argv)
    profile = PROFILES[args.profile]
    work = Path(args.work or REPO / "benchmarks" / "work" / profile.name).resolve()
    results = Path(args.results or RESULTS / profile.name).resolve()
    methods = methods_of(profile, args.methods)
    seeds = args.seeds if args.seeds is not None else list(profile.seeds)
    runner = Runner(profile, work, results, threads=args.threads)
    if not args.aggregate_only:
        runner.prepare()
        start = time.time()
        for seed in seeds:
            for method in methods:
                runner.run_method(method, seed)
        print(f"benchmark {profile.name}: {(time.time() - start) / 60:.1f} min")
    records = [json.loads(f.read_text()) for f in sorted((results / "runs").glob("*.json"))]
    order = {m.key: i for i, m in enumerate(METHODS.values())}
    records.sort(key=lambda r: (order.get(r["method"], 99), r["seed"]))
    print(aggregate(profile, records, results))


if __name__ == "__main__":
    main()
