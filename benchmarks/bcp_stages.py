"""BCP's stage switch on a short budget: how long the labeled copy-paste pre-training must run before self-training.

``python -m benchmarks.bcp_stages --profile hippocampus-cpu [--fractions 0.25 0.5 1.0] [--seed 0]``

Trains ``nnUNetTrainerBCP`` with the profile's budget (same data, plans, batch and seed as ``benchmarks.run``) once
per ``pretrain_fraction`` (the share of the epochs spent in the labeled copy-paste stage; 1.0 = no self-training)
and reports, from nnU-Net's own logger: the first epoch whose validation pseudo Dice is above 0, the final
validation pseudo Dice per class, and the foreground fraction of the teacher's pseudo-labels in the first
self-training epoch (0 = a background-only teacher). Writes ``benchmarks/results/<profile>/bcp_stages.md``. Not part
of the test suite.
"""
import argparse
import json
import sys
from pathlib import Path

from benchmarks.profiles import METHODS, PROFILES, trainer_name
from benchmarks.run import RESULTS, REPO, Runner


def train_fraction(profile, fraction: float) -> None:
    """Child process: one training with ``pretrain_fraction = fraction`` (nnU-Net's paths from the environment)."""
    import torch

    from nnunetv2.run.run_training import get_trainer_from_args

    trainer = get_trainer_from_args(str(profile.dataset_id), profile.configuration, 0,
                                    trainer_name(METHODS["bcp"], profile), profile.plans,
                                    device=torch.device(profile.device))
    trainer.pretrain_fraction = fraction
    trainer.run_training()


def summarise(checkpoint_file: Path, fraction: float) -> dict:
    """The study's numbers from nnU-Net's logging in the final checkpoint."""
    import torch

    checkpoint = torch.load(checkpoint_file, map_location="cpu", weights_only=False)
    log = checkpoint["logging"]
    dice = [list(map(float, d)) for d in log["dice_per_class_or_region"]]
    stages = log["self_training_stage"]
    switch = next((e for e, stage in enumerate(stages) if stage == 1.0), None)
    return {"fraction": fraction, "pretrain_epochs": len(dice) if switch is None else switch, "epochs": len(dice),
            "first_foreground_epoch": next((e for e, d in enumerate(dice) if max(d) > 0), None),
            "final_dice": dice[-1],
            "teacher_foreground": None if switch is None else float(log["pseudo_label_foreground"][switch])}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="hippocampus-cpu", choices=sorted(PROFILES))
    parser.add_argument("--fractions", nargs="+", type=float, default=[0.25, 0.5, 1.0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--one", type=float, default=None, help=argparse.SUPPRESS)  # child: train one fraction
    args = parser.parse_args(argv)
    profile = PROFILES[args.profile]
    work = REPO / "benchmarks" / "work" / profile.name
    runner = Runner(profile, work, RESULTS / profile.name)
    if args.one is not None:
        train_fraction(profile, args.one)
        return
    runner.prepare()
    rows = []
    for fraction in args.fractions:
        # nnU-Net reads its paths when imported: one child process (and results folder) per fraction
        results = work / "bcp_stages" / f"seed{args.seed}_fraction{fraction}"
        final = runner.fold_folder(str(results), trainer_name(METHODS["bcp"], profile)) / "checkpoint_final.pth"
        if not final.is_file():
            runner.step(f"BCP pretrain_fraction {fraction}",
                        [sys.executable, "-m", "benchmarks.bcp_stages", "--profile", profile.name, "--seed",
                         str(args.seed), "--one", str(fraction)],
                        {**runner.seed_env(args.seed), "nnUNet_results": str(results)},
                        f"bcp_stages_seed{args.seed}_{fraction}")
        rows.append(summarise(final, fraction))
        print(json.dumps(rows[-1]), flush=True)
    names = [profile.labels[c] for c in sorted(profile.labels)]
    lines = [f"# BCP: labeled copy-paste pre-training length ({profile.name}, seed {args.seed})", "",
             f"`python -m benchmarks.bcp_stages --profile {profile.name} --fractions "
             f"{' '.join(map(str, args.fractions))} --seed {args.seed}`: `nnUNetTrainerBCP` with the profile's budget, "
             f"`pretrain_fraction` varied (1.0 = the copy-paste stage only). Validation pseudo Dice is nnU-Net's "
             f"(fold-0 validation patches).", "",
             "| pretrain_fraction | pre-training epochs | first epoch with validation foreground | teacher's pseudo-label "
             "foreground at the switch | " + " | ".join(f"final val Dice {n}" for n in names) + " |",
             "|" + "---|" * (4 + len(names))]
    for r in rows:
        fg = "—" if r["teacher_foreground"] is None else f"{100 * r['teacher_foreground']:.2f} %"
        first = "never" if r["first_foreground_epoch"] is None else str(r["first_foreground_epoch"])
        lines.append(f"| {r['fraction']} | {r['pretrain_epochs']} of {r['epochs']} | {first} | {fg} | "
                     + " | ".join(f"{100 * d:.1f}" for d in r["final_dice"]) + " |")
    out = RESULTS / profile.name / "bcp_stages.md"
    out.write_text("\n".join(lines) + "\n")
    print(out.read_text())


if __name__ == "__main__":
    sys.exit(main())
