"""The GPU kit's in-process measurements, run in subprocesses that ``check.py`` starts.

``python -m benchmarks.gpu.worker --result-dir R --dataset-id D --plans P --device cuda [--sync-dir S]
[--cost CONFIGURATION:TRAINER ...] [--unimatch CONFIGURATION ...]``

* ``--cost``: one cost measurement per job, with ``benchmarks.cost``'s machinery (``start_trainer``: nnU-Net's
  ``get_trainer_from_args`` + ``on_train_start``, at 0.25 of the training; ``time_steps`` with Stopwatch-wrapped
  loaders): ``--warmup`` steps (``torch.compile`` compiles in the first), then ``--iterations`` timed steps with
  nnU-Net's loaders (``live``: seconds per step, of which waiting for the loaders) and as many on
  ``--cached-batches`` batches drawn beforehand (``cached``: the step alone, loaders out of the picture). Peak memory:
  ``torch.cuda.max_memory_allocated`` over the timed steps (reset after the warm-up); on the CPU the process's peak
  resident size. With ``--sync-dir`` the worker empties its CUDA cache after its warm-up, writes ``<job>.ready`` and
  waits for ``<job>.go`` (so that several workers compile at once and are timed one after the other), then runs two
  untimed steps (the allocator fills again) before the timed ones. A warm-up step that runs out of GPU memory (other
  workers warming up) is retried after a pause.
* ``--unimatch``: UniMatch's feature perturbation under ``torch.compile`` (:func:`unimatch_check`).

Each job writes ``<result-dir>/<job>.json`` (its numbers, or ``error`` with the traceback's end); the exit status is
0 once every job wrote its file.
"""
import argparse
import contextlib
import itertools
import json
import math
import os
import sys
import time
import traceback
from pathlib import Path


def job_name(kind: str, configuration: str, trainer: str = "") -> str:
    return f"{kind}__{configuration}" + (f"__{trainer}" if trainer else "")


def write_json(path: Path, content: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(content, indent=1, default=str))
    os.replace(tmp, path)


def _synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _is_compiled(module) -> bool:
    from torch._dynamo.eval_frame import OptimizedModule
    from torch.nn.parallel import DistributedDataParallel

    if isinstance(module, DistributedDataParallel):
        module = module.module
    return isinstance(module, OptimizedModule)


def _finish_loaders(trainer, *more) -> None:
    """Stop the background augmentation workers of the trainer's loaders and of ``more`` loaders (what nnU-Net's
    ``on_train_end`` does, without its checkpoint)."""
    from benchmarks.cost import Stopwatch

    loaders = [getattr(trainer, n, None) for n in ("dataloader_train", "dataloader_val", "dataloader_unlabeled")]
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        for loader in loaders + list(more):
            loader = loader.loader if isinstance(loader, Stopwatch) else loader
            if hasattr(loader, "_finish"):
                loader._finish()


def wait_for_turn(sync_dir: Path, name: str, info: dict, timeout: float) -> None:
    write_json(sync_dir / f"{name}.ready", info)
    go = sync_dir / f"{name}.go"
    deadline = time.monotonic() + timeout
    while not go.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no turn on the GPU within {timeout:.0f} s")
        time.sleep(0.05)


def measure_cost(args, configuration: str, trainer_name: str) -> dict:
    import torch

    from benchmarks.cost import Stopwatch, start_trainer, time_steps

    name = job_name("cost", configuration, trainer_name)
    start = time.perf_counter()
    trainer, step, loaders = start_trainer(args.dataset_id, configuration, args.plans, trainer_name, args.device)
    device = trainer.device
    if device.type == "cpu" and os.environ.get("nnUNet_semi_threads"):
        torch.set_num_threads(int(os.environ["nnUNet_semi_threads"]))  # nnU-Net's own trainer too
    setup_s = time.perf_counter() - start
    start = time.perf_counter()
    oom_retries = sum(_step_retrying_on_oom(trainer, step, device) for _ in range(args.warmup))
    _synchronize(device)
    warmup_s = time.perf_counter() - start
    # the batches of the compute-only timing, drawn before the turn (bypassing the stopwatches)
    unlabeled = getattr(trainer, "dataloader_unlabeled", None)
    cached_l = [next(trainer.dataloader_train.loader) for _ in range(args.cached_batches)]
    cached_u = [next(unlabeled.loader) for _ in range(args.cached_batches)] if unlabeled is not None else None
    result = {"trainer": trainer_name, "configuration": configuration, "device": str(device),
              "compiled": _is_compiled(trainer.network), "batch_labeled": int(trainer.batch_size),
              "batch_unlabeled": int(getattr(trainer, "unlabeled_batch_size", 0) or 0),
              "patch_size": [int(p) for p in trainer.configuration_manager.patch_size],
              "parameters": int(sum(p.numel() for p in trainer.network.parameters())),
              "setup_s": setup_s, "warmup_steps": args.warmup, "warmup_s": warmup_s, "oom_retries": oom_retries,
              "iterations": args.iterations}

    rewarm = 0
    if args.sync_dir:
        if device.type == "cuda":
            torch.cuda.empty_cache()  # idle with the weights only while the others compile and warm up
        wait_for_turn(Path(args.sync_dir), name, {"warmup_s": warmup_s, "setup_s": setup_s,
                                                  "oom_retries": oom_retries}, args.turn_timeout)
        rewarm = 2  # the caching allocator fills again before the timed steps
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    # no FLOP count (benchmarks/results/*/cost.md have them; FlopCounterMode does not see compiled kernels)
    live = time_steps(step, loaders, device, rewarm, args.iterations, count_flops=False)
    originals = list(loaders)  # nnU-Net's loaders, finished at the end
    trainer.dataloader_train = Stopwatch(itertools.cycle(cached_l))
    cached_loaders = [trainer.dataloader_train]
    if cached_u is not None:
        trainer.dataloader_unlabeled = Stopwatch(itertools.cycle(cached_u))
        cached_loaders.append(trainer.dataloader_unlabeled)
    cached = time_steps(step, cached_loaders, device, 0, args.iterations, count_flops=False)
    memory_key = "peak_gpu_memory_gib" if device.type == "cuda" else "peak_rss_gib"
    result.update({
        "live": {k: live[k] for k in ("s_per_it", "load_s_per_it", "compute_s_per_it")},
        "cached": {k: cached[k] for k in ("s_per_it", "load_s_per_it", "compute_s_per_it")},
        "it_per_s": 1.0 / live["s_per_it"], "it_per_s_cached": 1.0 / cached["s_per_it"],
        memory_key: cached["peak_memory_gb"],
    })
    _finish_loaders(trainer, *originals)
    return result


def _step_retrying_on_oom(trainer, step, device, attempts: int = 4) -> int:
    """One warm-up step; on CUDA out-of-memory (other processes of the kit warming up at the same time) the cache
    is emptied and the step retried after a pause, up to ``attempts`` times. Returns the number of retries."""
    import torch

    for attempt in range(attempts):
        try:
            step()
            return attempt
        except torch.cuda.OutOfMemoryError:
            if device.type != "cuda" or attempt == attempts - 1:
                raise
            print(f"[worker] out of GPU memory in a warm-up step; retry {attempt + 1} after a pause", flush=True)
            trainer.optimizer.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
            time.sleep(10.0 * (attempt + 1))
    return attempts


def _relative_difference(a, b) -> float:
    return float((a - b).abs().mean() / b.abs().mean().clamp_min(1e-12))


def unimatch_check(args, configuration: str) -> dict:
    """What ``nnUNetTrainerUniMatch`` does about ``torch.compile``, and whether its perturbed stream is perturbed when
    the network is compiled (``nnUNetTrainerUniMatch_kitCompile``, same weights and input as the stock trainer):

    * ``stock_*``: the stock trainer's network compiled or not, nnU-Net's own decision here, its log line;
    * one forward pass as ``compute_losses`` makes it (labeled | weak | strong 1 | strong 2, the weak rows perturbed,
      with gradients, under autocast on CUDA), compiled and eager: the rows (the perturbed ones appended), the mean
      relative difference perturbed vs clean weak rows (0 would mean the perturbation is lost), and the clean rows of
      the compiled network against the eager one's (same weights: the same function);
    * the same input with the perturbation off: no extra rows (the compiled graph follows the hook's state);
    * eval mode without gradients (validation's pass): no extra rows;
    * ``--unimatch-steps`` real ``train_step`` calls of the compiled trainer: its losses and ``fp_losses`` (L_fp)
      finite (L_fp is 0 while no voxel is confident, as early in a training), and the number of graphs TorchDynamo
      compiled.
    """
    import torch
    from torch import autocast

    from nnunetv2.run.run_training import get_trainer_from_args
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    from nnunet_semi.networks.dual import unwrap
    from nnunet_semi.networks.outputs import full_resolution

    device = torch.device(args.device)
    result = {"configuration": configuration, "device": str(device)}
    stock = get_trainer_from_args(str(args.dataset_id), configuration, 0, "nnUNetTrainerUniMatch", args.plans,
                                  device=device)
    stock.initialize()
    result["nnunet_would_compile"] = bool(nnUNetTrainer._do_i_compile(stock))
    result["stock_compiled"] = _is_compiled(stock.network)
    log = Path(stock.log_file).read_text() if stock.log_file and Path(stock.log_file).exists() else ""
    result["stock_log_line"] = next((line.strip() for line in log.splitlines()
                                     if "torch.compile disabled for UniMatch" in line), None)

    kit = get_trainer_from_args(str(args.dataset_id), configuration, 0, "nnUNetTrainerUniMatch_kitCompile",
                                args.plans, device=device)
    kit.on_train_start()
    kit.on_train_epoch_start()
    result["kit_compiled"] = _is_compiled(kit.network)
    unwrap(stock.network).load_state_dict(unwrap(kit.network).state_dict())
    stock.network.train()

    data = next(kit.dataloader_train)["data"].to(device)
    data_u = next(kit.dataloader_unlabeled)["data"].to(device)
    n_l, n_u = data.shape[0], data_u.shape[0]
    x = torch.cat((data, data_u, kit.strong_view(data_u)[0], kit.strong_view(data_u)[0]))
    amp = autocast(device.type, enabled=True) if device.type == "cuda" else contextlib.nullcontext()

    def forward(trainer, perturbed: bool):
        start = time.perf_counter()
        with amp, trainer.feature_perturbation.active(n_l, n_l + n_u) if perturbed else contextlib.nullcontext():
            out = full_resolution(trainer.network(x)).float().detach()
        _synchronize(device)
        return out, time.perf_counter() - start

    out_kit, first_call_s = forward(kit, True)
    out_eager, _ = forward(stock, True)
    n_clean = n_l + 3 * n_u
    weak = slice(n_l, n_l + n_u)
    result.update({
        "rows_in": n_clean, "rows_expected_perturbed": n_clean + n_u, "rows_compiled": int(out_kit.shape[0]),
        "rows_eager": int(out_eager.shape[0]), "first_compiled_call_s": first_call_s,
        "perturbation_rel_diff_compiled": _relative_difference(out_kit[n_clean:], out_kit[weak]),
        "perturbation_rel_diff_eager": _relative_difference(out_eager[n_clean:], out_eager[weak]),
        "clean_rows_compiled_vs_eager_rel_diff": _relative_difference(out_kit[:n_clean], out_eager[:n_clean]),
    })
    out_off, _ = forward(kit, False)
    result["rows_compiled_unperturbed"] = int(out_off.shape[0])
    result["clean_rows_on_vs_off_rel_diff"] = _relative_difference(out_off, out_kit[:n_clean])
    kit.network.eval()
    with torch.no_grad(), amp:
        result["rows_compiled_eval"] = int(full_resolution(kit.network(data)).shape[0])
    kit.network.train()

    outputs = [kit.train_step(next(kit.dataloader_train)) for _ in range(args.unimatch_steps)]
    fp = [float(o["fp_losses"]) for o in outputs]
    result["train_steps"] = len(outputs)
    result["fp_losses"] = fp
    result["train_losses"] = [float(o["loss"]) for o in outputs]
    result["confident_fraction"] = [float(o["confident_fraction"]) for o in outputs]
    try:
        from torch._dynamo.utils import counters

        result["dynamo_unique_graphs"] = int(counters["stats"]["unique_graphs"])
    except Exception:  # noqa: BLE001 (a private counter: report it where it exists)
        result["dynamo_unique_graphs"] = None
    if device.type == "cuda":
        torch.cuda.empty_cache()
    result["checks"] = {
        "stock trainer runs uncompiled": not result["stock_compiled"],
        "kit trainer compiled": result["kit_compiled"],
        "perturbed rows appended (compiled)": result["rows_compiled"] == n_clean + n_u,
        "perturbed rows differ from clean (compiled)": result["perturbation_rel_diff_compiled"] > 1e-3,
        "compiled clean rows = eager clean rows": result["clean_rows_compiled_vs_eager_rel_diff"] < 5e-2,
        "perturbation off: no extra rows (compiled)": result["rows_compiled_unperturbed"] == n_clean,
        "eval pass: no extra rows (compiled)": result["rows_compiled_eval"] == n_l,
        # L_fp is 0 while no voxel is confident (q >= tau), as early in a training: finite is what is checked here
        "train_step runs (losses and L_fp finite)": bool(fp) and all(math.isfinite(v) and v >= 0 for v in fp)
        and all(math.isfinite(v) for v in result["train_losses"]),
    }
    _finish_loaders(kit)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--result-dir", required=True)
    parser.add_argument("--dataset-id", type=int, required=True)
    parser.add_argument("--plans", required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--cost", nargs="*", default=[], metavar="CONFIGURATION:TRAINER")
    parser.add_argument("--unimatch", nargs="*", default=[], metavar="CONFIGURATION")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--cached-batches", type=int, default=4)
    parser.add_argument("--unimatch-steps", type=int, default=3)
    parser.add_argument("--sync-dir", default=None)
    parser.add_argument("--turn-timeout", type=float, default=900.0)
    args = parser.parse_args(argv)
    results = Path(args.result_dir)
    results.mkdir(parents=True, exist_ok=True)
    failed = 0
    tasks = [(job_name("cost", *job.split(":", 1)), measure_cost, job.split(":", 1)) for job in args.cost]
    tasks += [(job_name("unimatch", c), unimatch_check, [c]) for c in args.unimatch]
    for name, function, params in tasks:
        print(f"[worker] {name}", flush=True)
        try:
            result = function(args, *params)
        except Exception as e:  # noqa: BLE001 (recorded and reported by check.py)
            failed += 1
            traceback.print_exc()
            result = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-4000:]}
            if args.sync_dir and not (Path(args.sync_dir) / f"{name}.ready").exists():
                write_json(Path(args.sync_dir) / f"{name}.ready", {"error": result["error"]})
        write_json(results / f"{name}.json", result)
        print(f"[worker] {name}: {'error' if 'error' in result else 'done'}", flush=True)
    print(f"[worker] {len(tasks) - failed} of {len(tasks)} tasks done, {failed} with an error (in their .json)")
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # no wait for loader threads at interpreter exit: every result is written, check.py ends the rest
