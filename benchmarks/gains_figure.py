"""The README's figure of the measured gains: every method's test Dice minus that of the labeled-only nnU-Net run of
the same seed (in Dice points), one point per seed, one panel per benchmark profile.

    python -m benchmarks.gains_figure            # -> documentation/assets/measured_gains.png

It reads every ``benchmarks/results/<profile>/runs/*.json`` that ``python -m benchmarks.run`` writes (fields
``method``, ``trainer``, ``seed``, ``summary.mean.dice.mean``), so re-running it after new runs (a new seed, a new
method, a new profile such as a future ``acdc3-cpu``) redraws the figure with them. A profile enters the figure when it
has labeled-only runs and at least one other run of a (labeled draw, seed) the labeled-only runs have; a run without
such a labeled-only run is left out (the gain is paired by draw and seed, as in the results tables, because on short
budgets the seed, and the draw still more, move the reference by more than many methods' effects). A method run at a
longer budget than the panel's (``cps_2x``) is paired with the labeled-only run at that budget, as in the tables.
"""
import argparse
import json
import re
import textwrap
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
OUTPUT = REPO / "documentation" / "assets" / "measured_gains.png"
REFERENCE = "labeled_only"
BUDGET = re.compile(r"_(\d+)epochs(?:_(\d+)its)?$")
#: trainers that are another trainer's default under an explicit name (the benchmark runs were made with them), and
#: FixMatch's former default: the trainer ``nnUNetTrainerFixMatch`` used the soft Dice until 2026-12-05, when its
#: default became the paper's CE; every benchmark run under that plain name was made before (the benchmarks name
#: ``_dice`` and ``_ce`` explicitly), so those runs are the soft Dice's and the CE's runs are the default's. The same
#: holds for UniMatch, whose default became the CE on 2026-12-06
DEFAULT_ALIASES = {"CPS_dice": "CPS", "FixMatch_ce": "FixMatch", "FixMatch": "FixMatch_dice",
                   "UniMatch_ce": "UniMatch", "UniMatch": "UniMatch_dice"}


def mean_dice(record: dict) -> float:
    """Mean foreground test Dice of one run, in [0, 1]."""
    return float(record["summary"]["mean"]["dice"]["mean"])


def load_runs(results: Path = RESULTS) -> Dict[str, List[dict]]:
    """``{profile folder name: [run record, ...]}`` for every ``<results>/<profile>/runs/*.json``."""
    runs: Dict[str, List[dict]] = {}
    for path in sorted(results.glob("*/runs/*.json")):
        runs.setdefault(path.parent.parent.name, []).append(json.loads(path.read_text()))
    return runs


def draw_of(record: dict):
    """The labeled draw of a run (the protocol profiles record ``draw``; older single-dataset runs have none: 0)."""
    draw = record.get("draw")
    return 0 if draw is None else draw


def _base(trainer: str) -> str:
    return BUDGET.sub("", trainer)


def trainer_of(record: dict) -> str:
    """The trainer of a run; an ensemble control's (``<trainer> x2 (seeds ...)``) is its members'."""
    return record["trainer"].split(" x2")[0]


def is_longer_reference(record: dict, reference_trainer: str) -> bool:
    """A run of the reference's trainer at another budget (``labeled_only_2x``; not the ensemble control)."""
    return (_base(record["trainer"]) == _base(reference_trainer) and "ensembled_seeds" not in record
            and budget_of(trainer_of(record)) != budget_of(reference_trainer))


def at_own_budget(record: dict, reference_trainer: str) -> bool:
    """A method's run at a budget other than the reference's: paired with labeled-only at that budget."""
    return (budget_of(trainer_of(record)) != budget_of(reference_trainer)
            and not is_longer_reference(record, reference_trainer))


def paired_gains(records: Sequence[dict], reference: str = REFERENCE) -> Dict[str, List[Tuple[int, float]]]:
    """``{method: [(seed, gain in Dice points), ...]}``: each run of a method other than ``reference`` minus the
    ``reference`` run of the same labeled draw and seed; a run at a longer budget than the reference's minus the
    reference's run at that budget (``cps_2x`` - ``labeled_only_2x``; left out where none ran), the longer reference
    runs themselves minus the ``reference`` run (how far the reference moved); methods without such a pair are
    absent (so is the all-labeled bound, whose draw has no reference run), ordered by draw, then seed."""
    refs = [r for r in records if r["method"] == reference]
    if not refs:
        return {}
    ref_trainer = refs[0]["trainer"]
    base = {(draw_of(r), r["seed"]): mean_dice(r) for r in refs}
    longer = {(draw_of(r), r["seed"], budget_of(r["trainer"])): mean_dice(r) for r in records
              if r["method"] != reference and is_longer_reference(r, ref_trainer)}
    gains: Dict[str, List[Tuple[str, int, float]]] = {}
    for r in records:
        if r["method"] == reference:
            continue
        key = (draw_of(r), r["seed"])
        if at_own_budget(r, ref_trainer):
            other = longer.get((*key, budget_of(trainer_of(r))))
        else:
            other = base.get(key)
        if other is not None:
            gains.setdefault(r["method"], []).append((str(key[0]), r["seed"], 100.0 * (mean_dice(r) - other)))
    return {m: [(seed, gain) for _, seed, gain in sorted(v)] for m, v in gains.items()}


def budget_of(trainer: str) -> str:
    """``"40 x 50 its"`` for ``..._40epochs_50its``, ``"1000 x 250 its"`` for nnU-Net's own, ``"500 x 250 its"`` for
    ``..._500epochs``."""
    match = BUDGET.search(trainer)
    if match is None:
        return "1000 x 250 its"
    return f"{match.group(1)} x {match.group(2) or 250} its"


def method_label(trainer: str, reference_trainer: str) -> str:
    """The trainer's name without ``nnUNetTrainer`` and the budget suffix (defaults under their explicit name as the
    default); a budget other than the reference's is named."""
    name = BUDGET.sub("", trainer).removeprefix("nnUNetTrainer")
    name = DEFAULT_ALIASES.get(name, name)
    if budget_of(trainer) != budget_of(reference_trainer):
        name += f" ({budget_of(trainer)})"
    return name


def run_label(record: dict, reference_trainer: str) -> str:
    """:func:`method_label` of a run's trainer, naming the controls: an ensemble of two seeds (``ensembled_seeds``,
    the trainer field reads ``<trainer> x2 (seeds ...)``) and a two-network trainer predicting with one member (a
    method with ``predict_env``, e.g. ``cps_single``)."""
    if "ensembled_seeds" in record:
        return method_label(record["trainer"].split(" x2")[0], reference_trainer) + " x2 seeds, ensembled"
    label = method_label(record["trainer"], reference_trainer)
    try:
        from benchmarks.profiles import METHODS
        method = METHODS.get(record["method"])
    except ImportError:
        method = None
    if method is not None and method.runner == "self_training":  # its trainer is the reference's: name the method
        return "self-training (1 round of " + label + ")"
    env = dict(method.predict_env) if method is not None else {}
    member = env.get("nnUNet_semi_predict_member")
    return label + f" (network {member} alone)" if member else label


def pair_label(record: dict, reference_trainer: str) -> str:
    """:func:`run_label`, saying which reference a longer-budget run is paired with."""
    label = run_label(record, reference_trainer)
    if at_own_budget(record, reference_trainer):
        label = label[:-1] + "; minus labeled-only at that budget)" if label.endswith(")") else \
            label + " (minus labeled-only at that budget)"
    return label


def profile_order(names: Sequence[str]) -> List[str]:
    """The profiles of ``benchmarks/profiles.py`` in its order, then any other result folder by name."""
    try:
        from benchmarks.profiles import PROFILES
        known = [p for p in PROFILES if p in names]
    except ImportError:  # the figure does not need the profile definitions
        known = []
    return known + sorted(n for n in names if n not in known)


def configuration_of(profile: str) -> Optional[str]:
    try:
        from benchmarks.profiles import PROFILES
    except ImportError:
        return None
    return PROFILES[profile].configuration if profile in PROFILES else None


def panels(runs: Dict[str, List[dict]]) -> List[dict]:
    """One entry per profile with pairs: its name, title and methods (label, per-seed gains), best mean gain first."""
    out = []
    for profile in profile_order(list(runs)):
        records = runs[profile]
        reference = [r for r in records if r["method"] == REFERENCE]
        gains = paired_gains(records)
        if not reference or not gains:
            continue
        record_of = {r["method"]: r for r in records}
        methods = sorted(((pair_label(record_of[m], reference[0]["trainer"]), g) for m, g in gains.items()),
                         key=lambda item: -sum(v for _, v in item[1]) / len(item[1]))
        by_draw: Dict[str, List[dict]] = {}
        for r in reference:
            by_draw.setdefault(str(draw_of(r)), []).append(r)
        parts = []
        for d, refs in sorted(by_draw.items()):
            ref_mean = 100.0 * sum(mean_dice(r) for r in refs) / len(refs)
            seeds = " ".join(map(str, sorted(r["seed"] for r in refs)))
            parts.append(f"{ref_mean:.1f} ({'' if len(by_draw) == 1 else f'draw {d}, '}seeds {seeds})")
        configuration = configuration_of(profile)
        title = (f"{profile}\n{configuration + ', ' if configuration else ''}{budget_of(reference[0]['trainer'])}; "
                 f"labeled-only {'; '.join(parts)}{'; a dot = one (draw, seed) pair' if len(by_draw) > 1 else ''}")
        out.append({"profile": profile, "title": title, "methods": methods})
    return out


def draw(runs: Dict[str, List[dict]], output: Path = OUTPUT) -> Path:
    """Write the figure (PNG) and return its path."""
    import matplotlib

    matplotlib.use("agg")
    import matplotlib.pyplot as plt

    entries = panels(runs)
    if not entries:
        raise SystemExit("no profile has labeled-only runs paired with other runs: nothing to draw")
    # a panel's title wrapped to the plot's width (a long one would widen the saved canvas and squeeze every plot)
    titles = [textwrap.wrap(e["title"].replace("\n", ": "), 105) for e in entries]
    heights = [len(e["methods"]) + 1.6 + 0.45 * (len(t) - 1) for e, t in zip(entries, titles)]  # rows, title, axis
    fig, axes = plt.subplots(len(entries), 1, figsize=(9.0, 0.8 + 0.3 * sum(heights)),
                             gridspec_kw={"height_ratios": heights}, squeeze=False)
    for ax, entry, title in zip(axes[:, 0], entries, titles):
        n = len(entry["methods"])
        for i, (label, gains) in enumerate(entry["methods"]):
            y = n - 1 - i  # best mean gain at the top
            values = [g for _, g in gains]
            mean = sum(values) / len(values)
            color = "tab:green" if min(values) > 0 else "tab:red" if max(values) < 0 else "tab:gray"
            offsets = [(k - (len(values) - 1) / 2) * 0.16 for k in range(len(values))]
            ax.plot(values, [y + o for o in offsets], "o", color=color, markersize=5, alpha=0.85)
            ax.plot([mean, mean], [y - 0.32, y + 0.32], "-", color="k", linewidth=1.6)
            ax.annotate(f"{mean:+.2f} ({len(values)})", (max(values), y), xytext=(6, 0),
                        textcoords="offset points", va="center", fontsize=7)
        ax.axvline(0, color="0.4", linewidth=0.8, linestyle="--")
        ax.set_yticks(range(n))
        ax.set_yticklabels([label for label, _ in reversed(entry["methods"])], fontsize=8)
        ax.set_ylim(-0.7, n - 0.3)
        ax.margins(x=0.12)
        ax.tick_params(axis="x", labelsize=8)
        ax.grid(axis="x", alpha=0.3)
        ax.set_title("\n".join(title), fontsize=8, loc="left")
    axes[-1, 0].set_xlabel("test Dice minus labeled-only nnU-Net's, same draw, seed and budget (points; a longer\n"
                           "labeled-only run: minus the panel's budget); dot = one run, bar = mean, (n) = runs",
                           fontsize=8)
    fig.suptitle("Measured gain over nnU-Net trained on the labeled cases alone\n"
                 "green: every seed gains, red: every seed loses, gray: mixed", fontsize=9)
    # leave the suptitle its two lines (tight_layout alone lays the first panel's title under it), and let the
    # saved canvas grow to the long panel titles and the rightmost annotations rather than cutting them off
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.45 / fig.get_figheight()))
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return output


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="example: python -m benchmarks.gains_figure")
    parser.add_argument("--results", default=str(RESULTS), help="folder of the profiles' results (default: %(default)s)")
    parser.add_argument("-o", "--output", default=str(OUTPUT), help="PNG to write (default: %(default)s)")
    args = parser.parse_args(argv)
    runs = load_runs(Path(args.results))
    print(draw(runs, Path(args.output)))
    for entry in panels(runs):
        print(f"{entry['profile']}: " + ", ".join(f"{label} {sum(g for _, g in gains) / len(gains):+.2f} "
                                                  f"({len(gains)})" for label, gains in entry["methods"]))


if __name__ == "__main__":
    main()
