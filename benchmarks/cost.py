"""Cost benchmark: seconds per iteration, data-loading share, FLOPs and peak memory of every trainer and pretraining
method, against nnU-Net's own trainer on the same configuration, plans and labeled batch.

``python -m benchmarks.cost --profile hippocampus-cpu [--methods labeled_only cps ...] [--pretraining ccm ideal]``

Each measurement runs in a fresh process (so peak memory is the method's own): the trainer is built by nnU-Net's
``get_trainer_from_args`` and set up with its own ``on_train_start`` (loaders, augmentation, network), then
``--warmup`` iterations are run and ``--iterations`` timed, at epoch ``--at-progress`` x the trainer's epochs
(default 0.25: the main stage of the methods with a labeled-only first stage, BCP and PLContrast). The labeled and
unlabeled loaders are wrapped by a stopwatch, so a step's time splits into data loading (single-process augmentation
here, i.e. the worst case: with nnU-Net's background workers loading overlaps compute) and compute (forward,
losses, backward, optimizer step).
FLOPs of one training step are counted by ``torch.utils.flop_counter.FlopCounterMode`` (forward + backward
convolutions and matmuls). The FLOP-bound ideal of a method is its FLOP ratio to the labeled-only trainer (a
dual-network trainer processes 2 networks x (B_l + B_u) samples: ~4x); ``time ratio / FLOP ratio`` close to 1 means
the method costs what its arithmetic costs, above 1 that it wastes time elsewhere.

Peak memory: resident set size of the process (CPU) or ``torch.cuda.max_memory_allocated`` (GPU).
Results: ``benchmarks/results/<profile>/cost.md`` and ``cost.json`` (``--output STEM``: ``STEM.md`` / ``STEM.json``
beside them, e.g. one more trainer measured later without replacing the committed table and its reading).
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional

from benchmarks.profiles import METHODS, PROFILES, methods_of
from benchmarks.run import REPO, RESULTS, Runner


class Stopwatch:
    """Wraps an iterator (a data loader) and adds the time spent in ``next`` to ``seconds``."""

    def __init__(self, loader):
        self.loader, self.seconds = loader, 0.0

    def __next__(self):
        start = time.perf_counter()
        item = next(self.loader)
        self.seconds += time.perf_counter() - start
        return item

    def __iter__(self):
        return self

    def __getattr__(self, name):
        return getattr(self.loader, name)


def _peak_memory_gb(device) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1024 ** 3
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2  # kB on Linux


def _count_flops(fn) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return float(counter.get_total_flops())


def time_steps(step, loaders, device, warmup: int, iterations: int, count_flops: bool = True) -> dict:
    """Run ``warmup`` then ``iterations`` calls of ``step``; seconds per step, split into the time spent in the
    ``loaders`` (Stopwatch-wrapped) and the rest; FLOPs of one more step (``count_flops``; None otherwise, e.g. for
    a ``torch.compile``'d network, whose kernels the FLOP counter does not see); peak memory."""
    import torch

    def synchronize():
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(warmup):
        step()
    synchronize()
    for loader in loaders:
        loader.seconds = 0.0
    start = time.perf_counter()
    for _ in range(iterations):
        step()
    synchronize()
    total = (time.perf_counter() - start) / iterations
    load = sum(loader.seconds for loader in loaders) / iterations
    return {"s_per_it": total, "load_s_per_it": load, "compute_s_per_it": total - load,
            "flops_per_it": _count_flops(step) if count_flops else None, "peak_memory_gb": _peak_memory_gb(device)}


def _log_synthetic_epoch(trainer, epoch: int, with_end: bool = True) -> None:
    """One epoch of plausible values for every curve the trainer's logger holds (nnU-Net's and the method's): the
    EMA pseudo Dice rises every epoch, so nnU-Net saves its 'best' checkpoint at every epoch end, as early in
    training (the worst case)."""
    local = trainer.logger.local_logger
    n_classes = len(trainer.label_manager.foreground_labels)
    values = {"epoch_start_timestamps": 10.0 * epoch, "epoch_end_timestamps": 10.0 * epoch + 9.0,
              "mean_fg_dice": 0.5 + 0.01 * epoch, "dice_per_class_or_region": [0.5 + 0.01 * epoch] * n_classes,
              "lrs": 0.01 * (1 - epoch / 1000) ** 0.9}
    for key in list(local.my_fantastic_logging):
        if key == "ema_fg_dice" or (key == "epoch_end_timestamps" and not with_end):
            continue  # the EMA follows mean_fg_dice; the end timestamp is on_epoch_end's own
        trainer.logger.log(key, values.get(key, 1.0 / (1 + epoch)), epoch)


def time_epoch_end(trainer, epochs: int = 40, repeats: int = 3) -> dict:
    """Seconds of nnU-Net's ``on_epoch_end`` (its log lines, the 'latest' and 'best' checkpoints, progress.png) once
    ``epochs`` epochs of curves are logged, and of its two parts that methods change: one checkpoint write and the
    progress.png. Mean over ``repeats`` epoch ends."""
    trainer.num_epochs = 10 * (epochs + repeats)  # 'latest' is written at every epoch end but the last
    trainer.save_every = 1
    for values in trainer.logger.local_logger.my_fantastic_logging.values():
        values.clear()  # start from epoch 0 (on_train_epoch_start logged the timed epoch's first values)
    for epoch in range(epochs):
        _log_synthetic_epoch(trainer, epoch)
    total = 0.0
    for r in range(repeats):
        _log_synthetic_epoch(trainer, epochs + r, with_end=False)
        trainer.current_epoch = epochs + r
        start = time.perf_counter()
        trainer.on_epoch_end()
        total += time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(repeats):
        trainer.save_checkpoint(os.path.join(trainer.output_folder, "checkpoint_cost.pth"))
    checkpoint = (time.perf_counter() - start) / repeats
    start = time.perf_counter()
    for _ in range(repeats):
        trainer.logger.plot_progress_png(trainer.output_folder)
    plot = (time.perf_counter() - start) / repeats
    return {"epoch_end_s": total / repeats, "checkpoint_s": checkpoint, "plot_s": plot, "epoch_end_epochs": epochs}


def start_trainer(dataset_id: int, configuration: str, plans: str, trainer_name: str, device_name: str,
                  at_progress: float = 0.25):
    """A trainer built by nnU-Net's ``get_trainer_from_args`` and set up by its own ``on_train_start`` (loaders,
    augmentation, network), at epoch ``at_progress`` x its epochs, with Stopwatch-wrapped loaders. Returns
    ``(trainer, step, loaders)``: ``step()`` runs one ``train_step`` on the next labeled batch."""
    import torch

    from nnunetv2.run.run_training import get_trainer_from_args

    device = torch.device(device_name)
    if device.type == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    trainer = get_trainer_from_args(str(dataset_id), configuration, 0, trainer_name, plans, device=device)
    trainer.on_train_start()
    # time the steps of the training's main stage: methods with a labeled-only first stage (BCP, PLContrast: the
    # first quarter) are past it at this point, and ramped weights are mid-way
    trainer.current_epoch = int(round(at_progress * trainer.num_epochs))
    trainer.on_train_epoch_start()
    trainer.dataloader_train = Stopwatch(trainer.dataloader_train)
    unlabeled = getattr(trainer, "dataloader_unlabeled", None)
    if unlabeled is not None:
        trainer.dataloader_unlabeled = Stopwatch(unlabeled)
    loaders = [trainer.dataloader_train] + ([trainer.dataloader_unlabeled] if unlabeled is not None else [])

    def step():
        trainer.train_step(next(trainer.dataloader_train))

    return trainer, step, loaders


def measure_trainer(dataset_id: int, configuration: str, plans: str, trainer_name: str, device_name: str,
                    warmup: int, iterations: int, at_progress: float = 0.25) -> dict:
    trainer, step, loaders = start_trainer(dataset_id, configuration, plans, trainer_name, device_name, at_progress)
    timing = time_steps(step, loaders, trainer.device, warmup, iterations)
    timing.update(time_epoch_end(trainer))
    result = {"trainer": trainer_name, "batch_labeled": trainer.batch_size,
              "batch_unlabeled": getattr(trainer, "unlabeled_batch_size", 0) or 0, **timing,
              "parameters": sum(p.numel() for p in trainer.network.parameters())}
    trainer.on_train_end()
    return result


def measure_pretraining(dataset_id: int, configuration: str, plans: str, method: str, device_name: str,
                        batch_size: int, warmup: int, iterations: int) -> dict:
    import torch

    from pretraining.cli import create_pretrainer

    device = torch.device(device_name)
    if device.type == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    pretrainer = create_pretrainer(method, str(dataset_id), configuration, plans_identifier=plans, device=device,
                                   num_epochs=1, batch_size=batch_size)
    pretrainer.model = pretrainer.build_model().to(device)
    optimizer = torch.optim.Adam(pretrainer.model.parameters(), lr=pretrainer.learning_rate)
    loader, _ = pretrainer._loader(batch_size)
    loader = Stopwatch(loader)

    def step():
        batch = next(loader)  # a method's sample_transform (Genesis) runs in here: loading, not compute
        optimizer.zero_grad(set_to_none=True)
        loss, _ = pretrainer.compute_batch_loss(batch)
        loss.backward()
        optimizer.step()

    timing = time_steps(step, [loader], device, warmup, iterations)
    return {"trainer": f"pretrain -m {method}", "batch_labeled": batch_size, "batch_unlabeled": 0, **timing,
            "parameters": sum(p.numel() for p in pretrainer.model.parameters())}


def _worker(args) -> None:
    if args.pretraining_method:
        result = measure_pretraining(args.dataset_id, args.configuration, args.plans, args.pretraining_method,
                                     args.device, args.batch_size, args.warmup, args.iterations)
    else:
        result = measure_trainer(args.dataset_id, args.configuration, args.plans, args.trainer, args.device,
                                 args.warmup, args.iterations, args.at_progress)
    print("COST " + json.dumps(result), flush=True)


def _epoch_end_cells(row: dict, baseline: Optional[dict]) -> List[str]:
    """``on_epoch_end`` seconds (one checkpoint write / one progress.png) and the excess over the labeled-only
    trainer's (nnU-Net's own epoch end): what the plugin adds per epoch (the checkpoint of two networks included)."""
    if "epoch_end_s" not in row:
        return ["—", "—"]
    cell = f"{row['epoch_end_s']:.2f} ({row['checkpoint_s']:.2f} / {row['plot_s']:.2f})"
    overhead = f"{row['epoch_end_s'] - baseline['epoch_end_s']:+.2f}" if baseline and "epoch_end_s" in baseline \
        else "—"
    return [cell, overhead]


def table(rows: List[dict], baseline: Optional[dict]) -> str:
    header = ["method", "trainer / command", "batch (lab + unl)", "s/it", "compute s/it", "loading s/it (share)",
              "GFLOP/it", "time ratio", "FLOP ratio", "time / FLOP ratio", "peak memory (GB)", "parameters (M)",
              "epoch end s (checkpoint / plot)", "epoch-end overhead s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        if baseline and not r["trainer"].startswith("pretrain"):
            tr, fr = r["s_per_it"] / baseline["s_per_it"], r["flops_per_it"] / baseline["flops_per_it"]
            ratios = [f"{tr:.2f}", f"{fr:.2f}", f"{tr / fr:.2f}"]
        else:
            ratios = ["—", "—", "—"]
        lines.append("| " + " | ".join([
            r["method"], f"`{r['trainer']}`", f"{r['batch_labeled']} + {r['batch_unlabeled']}",
            f"{r['s_per_it']:.3f}", f"{r['compute_s_per_it']:.3f}",
            f"{r['load_s_per_it']:.3f} ({100 * r['load_s_per_it'] / r['s_per_it']:.0f}%)",
            f"{r['flops_per_it'] / 1e9:.1f}", *ratios, f"{r['peak_memory_gb']:.2f}",
            f"{r['parameters'] / 1e6:.2f}", *_epoch_end_cells(r, baseline)]) + " |")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=sorted(PROFILES))
    parser.add_argument("--methods", nargs="+", default=None, help=f"trainers; known: {sorted(METHODS)}")
    parser.add_argument("--pretraining", nargs="*", default=["ccm", "ideal"], help="pretraining methods to time")
    parser.add_argument("--pretraining-batch", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--at-progress", type=float, default=0.25,
                        help="time the steps at this fraction of the training (default 0.25)")
    parser.add_argument("--work", default=None)
    parser.add_argument("--output", default="cost",
                        help="file stem in benchmarks/results/<profile>/ (default: cost -> cost.md / cost.json); "
                             "another stem adds a measurement without replacing the committed table and its reading")
    # worker mode (one measurement in this process)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--dataset-id", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--configuration", help=argparse.SUPPRESS)
    parser.add_argument("--plans", help=argparse.SUPPRESS)
    parser.add_argument("--trainer", help=argparse.SUPPRESS)
    parser.add_argument("--pretraining-method", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--batch-size", type=int, default=16, help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return _worker(args)
    if not args.profile:
        parser.error("--profile is required")
    if not all(c.isalnum() or c in "_-." for c in args.output) or args.output.startswith("."):
        parser.error(f"--output {args.output!r}: a file stem (letters, digits, _ - .), e.g. cost_unimatch")

    profile = PROFILES[args.profile]
    work = Path(args.work or REPO / "benchmarks" / "work" / profile.name).resolve()
    results = RESULTS / profile.name
    runner = Runner(profile, work, results)
    runner.prepare()
    methods = [m for m in methods_of(profile, args.methods) if not m.pretrain]  # same compute as their base
    base_cmd = [sys.executable, "-m", "benchmarks.cost", "--worker", "--dataset-id", str(profile.dataset_id),
                "--configuration", profile.configuration, "--plans", profile.plans, "--device", profile.device,
                "--warmup", str(args.warmup), "--iterations", str(args.iterations), "--at-progress",
                str(args.at_progress)]
    jobs = [(m.key, base_cmd + ["--trainer", m.trainer]) for m in methods]
    jobs += [(f"pretrain_{p}", base_cmd + ["--pretraining-method", p, "--batch-size", str(args.pretraining_batch)])
             for p in args.pretraining]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        env = {**runner.seed_env(0), "nnUNet_results": tmp}
        for key, cmd in jobs:
            print(f"[{time.strftime('%H:%M:%S')}] cost: {key}", flush=True)
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("COST ")]
            if proc.returncode != 0 or not lines:
                raise RuntimeError(f"cost measurement of {key} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
            rows.append({"method": key, **json.loads(lines[-1][5:])})
            print(f"    {rows[-1]['s_per_it']:.3f} s/it", flush=True)
    baseline = next((r for r in rows if r["method"] == "labeled_only"), None)
    md = table(rows, baseline)
    (results / f"{args.output}.json").write_text(json.dumps({"profile": profile.name, "warmup": args.warmup,
                                                             "iterations": args.iterations, "rows": rows}, indent=1))
    command = " ".join(["python -m benchmarks.cost"] + list(sys.argv[1:] if argv is None else argv))
    (results / f"{args.output}.md").write_text(
        f"# Cost, {profile.name}\n\n{profile.description}\n\nMeasured with `{command}` ({args.warmup} warm-up + "
        f"{args.iterations} timed iterations per method at "
        f"{args.at_progress:g} of the training, one fresh process each; pretraining at batch "
        f"{args.pretraining_batch}). Ratios are against `labeled_only` (nnU-Net's trainer, same plans and labeled "
        f"batch). Loading = single-process augmentation (worst case). Epoch end: nnU-Net's `on_epoch_end` with "
        f"40 epochs of curves logged (log lines, the 'latest' and 'best' checkpoints, progress.png; mean of 3), "
        f"and its overhead over the labeled-only trainer's.\n\n"
        f"{md}\n")
    print(md)


if __name__ == "__main__":
    main()
