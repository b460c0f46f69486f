"""The GPU check: what the trainers cost on a GPU with nnU-Net's defaults, and whether they work there.

``bash benchmarks/gpu/run_check.sh [--cpu] [--tiny] [options]`` (which runs ``python -m benchmarks.gpu.check``);
README.md beside this file says how to run it on a lent machine in one call. Stages:

1. **prepare**: the project's demo generator writes a dataset (labeled, validation, test and unlabeled volumes),
   ``nnUNetv2_plan_and_preprocess`` plans and preprocesses 2d and 3d_fullres with nnU-Net's default plans (``--tiny``:
   then small plans, ``nnunet_semi.apps.small_plans``), ``nnunet_semi_preprocess_unlabeled`` the unlabeled images.
2. **cost**: per configuration and trainer (nnU-Net's ``nnUNetTrainer`` and the semi-supervised trainers, with
   nnU-Net's defaults: ``torch.compile`` and AMP on CUDA), iterations per second after the warm-up, with nnU-Net's
   loaders and on cached batches (the step alone), peak GPU memory, and the ratios to nnU-Net's step
   (``worker.py``). At most ``--parallel`` processes work on the GPU at once (cost workers compiling and warming
   up, the correctness checks); the warmed-up workers are then timed one after the other, nothing else running.
3. **correctness**: UniMatch's feature perturbation under ``torch.compile`` (``worker.unimatch_check``); a CPS
   training killed in its second epoch and continued with ``--c`` from the saved state; ``nnUNetv2_predict`` of that
   CPS checkpoint on the test images (files written, test Dice).
4. **paired** (optional; default: on a GPU when the time left allows it): labeled-only, CPS and FixMatch trained
   on the same data and seed with a short budget, test Dice and the paired gains.

Outputs in ``--out`` (default ``$OUT``, else ``benchmarks/gpu/out``): ``gpu_check.md`` (tables), ``gpu_check.json``
(everything), ``job_logs.tar.gz`` (every subprocess's log and nnU-Net's training logs); ``run_check.sh`` adds
``gpu_check.log``. Both result files are rewritten after every stage, so a run cut short leaves what it measured.
Every stage runs within ``--budget-s`` (GPU default 480 s): one that would not fit is skipped and says so.
Exit status: 0 when every stage ran and every check passed, 2 when a check failed, 1 when a stage broke.
"""
import argparse
import io
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

REPO = Path(__file__).resolve().parents[2]
KIT = REPO / "benchmarks" / "gpu"
DATASET_ID = 993
BASELINE = "nnUNetTrainer"
TRAINERS = ["nnUNetTrainer", "nnUNetTrainerCPS", "nnUNetTrainerFixMatch", "nnUNetTrainerUniMatch",
            "nnUNetTrainerMeanTeacher", "nnUNetTrainerUniMatch_kitCompile"]
PAIRED_TRAINERS = ["nnUNetTrainerLabeledOnly", "nnUNetTrainerCPS", "nnUNetTrainerFixMatch"]
LABELS = (1, 2)  # the demo dataset's organ and core
#: nnU-Net's and our commands, started as ``python -c`` on their entry points: the same on this machine and on the
#: GPU machine, where the wheels are installed with ``--target`` (no console scripts on PATH) and nnunet-semi is the
#: working tree on PYTHONPATH (not installed)
ENTRY_POINTS = {
    "nnUNetv2_plan_and_preprocess": "nnunetv2.experiment_planning.plan_and_preprocess_entrypoints:"
                                    "plan_and_preprocess_entry",
    "nnUNetv2_train": "nnunetv2.run.run_training:run_training_entry",
    "nnUNetv2_predict": "nnunetv2.inference.predict_from_raw_data:predict_entry_point",
    "nnunet_semi_preprocess_unlabeled": "nnunet_semi.data.unlabeled:preprocess_unlabeled_entry",
}


@dataclass
class Settings:
    """What a mode runs; ``--tiny`` and ``--cpu`` pick one, options override single fields."""
    device: str = "cuda"
    tiny: bool = False
    shape: Sequence[int] = (64, 192, 192)
    spacing: Sequence[float] = (3.0, 1.0, 1.0)
    counts: Dict[str, int] = field(default_factory=lambda: {"num_labeled": 8, "num_val": 4, "num_test": 8,
                                                            "num_unlabeled": 16})
    configurations: Sequence[str] = ("2d", "3d_fullres")
    trainers: Sequence[str] = tuple(TRAINERS)
    plans: str = "nnUNetPlans"
    small_plans: Optional[dict] = None
    warmup: int = 5
    iterations: int = 20
    cached_batches: int = 4
    parallel: int = 3  # processes busy on the GPU at once (compiling, warming up, correctness checks)
    data_workers: Optional[int] = None  # nnUNet_n_proc_DA; None: nnU-Net's default
    budget_s: Optional[float] = 480.0
    paired: str = "auto"
    paired_budget: str = "1epochs"
    paired_min_s: float = 200.0
    cps_budget: str = "2epochs_5its"
    unimatch_configurations: Sequence[str] = ("2d", "3d_fullres")
    unimatch_steps: int = 3
    processes: int = 16  # preprocessing / prediction workers
    threads: Optional[int] = None  # torch threads per CPU process (nnUNet_semi_threads); None: nnU-Net's choice


def settings_for(cpu: bool, tiny: bool) -> Settings:
    s = Settings(device="cpu" if cpu else "cuda", tiny=tiny)
    cores = os.cpu_count() or 1
    s.processes = max(1, min(16, cores))
    if tiny:
        s.shape, s.counts = (16, 32, 32), {"num_labeled": 3, "num_val": 1, "num_test": 2, "num_unlabeled": 3}
        s.plans = "nnUNetPlansKitTiny"
        s.small_plans = {"base_features": 4, "max_features": 32, "batch_size": 2}
        s.warmup, s.iterations, s.cached_batches = 1, 1, 1
        s.unimatch_steps, s.paired, s.paired_budget = 1, "off", "2epochs_5its"
        s.budget_s = None if cpu else 300.0
    if cpu:
        # one worker process measures every row in turn, single-process augmentation, one torch thread and one
        # preprocessing process per command (nnU-Net's spawned workers each import torch: on two cores that costs
        # more than it saves); nnU-Net never compiles on the CPU, so the kit's compiled UniMatch is no row of its own
        s.parallel, s.data_workers, s.threads, s.processes = 1, 0, 1, 1
        s.trainers = tuple(t for t in s.trainers if t != "nnUNetTrainerUniMatch_kitCompile")
        s.budget_s = None
        s.paired = "off"
    return s


# ---------------------------------------------------------------------------------------------------- plumbing
class StageError(RuntimeError):
    pass


class Context:
    def __init__(self, settings: Settings, out: Path, work: Path):
        self.s, self.out, self.work = settings, out, work
        self.logs = work / "logs"
        self.start = time.monotonic()
        self.deadline = None if not settings.budget_s else self.start + settings.budget_s
        self.report: dict = {"kit": "benchmarks/gpu", "mode": ("cpu" if settings.device == "cpu" else "gpu") +
                             ("-tiny" if settings.tiny else ""), "settings": asdict(settings),
                             "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "stages": {}, "cost": [],
                             "checks": {}}
        self.lock = threading.Lock()
        self.children: List[subprocess.Popen] = []
        self.unimatch_dir: Optional[Path] = None  # where the sequential cost worker wrote the UniMatch check
        self.busy = 0  # correctness processes running on the GPU (cost_scheduled counts them against --parallel)
        self.env = dict(os.environ)

    def set_busy(self, delta: int) -> None:
        with self.lock:
            self.busy += delta

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def left(self) -> float:
        return float("inf") if self.deadline is None else self.deadline - time.monotonic()

    def timeout(self, default: float) -> float:
        return max(1.0, min(default, self.left()))

    def log(self, message: str) -> None:
        print(f"[{self.elapsed():6.1f}s] {message}", flush=True)

    def stage(self, name: str, **fields) -> None:
        with self.lock:
            self.report["stages"].setdefault(name, {}).update(fields)
            self.write()

    def write(self) -> None:
        self.report["elapsed_s"] = round(self.elapsed(), 1)
        self.out.mkdir(parents=True, exist_ok=True)
        for name, text in (("gpu_check.json", json.dumps(self.report, indent=1, default=str)),
                           ("gpu_check.md", render_markdown(self.report))):
            tmp = self.out / (name + ".tmp")
            tmp.write_text(text)
            os.replace(tmp, self.out / name)


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the process group this kit started for ``proc`` (the process and its augmentation workers)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def command(name: str, *args) -> List[str]:
    module, function = ENTRY_POINTS[name].split(":")
    code = f"import sys; from {module} import {function} as f; sys.argv[0] = {name!r}; sys.exit(f())"
    return [sys.executable, "-c", code, *[str(a) for a in args]]


def shown(cmd: List[str]) -> str:
    """A command as a reader would type it (the entry-point launcher shown by the command's name)."""
    if len(cmd) > 2 and cmd[1] == "-c" and "sys.argv[0] = " in cmd[2]:
        name = re.search(r"sys\.argv\[0\] = '([^']+)'", cmd[2]).group(1)
        return " ".join([name, *cmd[3:]])
    return " ".join(cmd)


def start(ctx: Context, name: str, cmd: List[str], env: dict) -> subprocess.Popen:
    ctx.logs.mkdir(parents=True, exist_ok=True)
    ctx.log(f"start {name}: {shown(cmd)}")
    log = open(ctx.logs / f"{name}.log", "w")
    log.write(f"$ {shown(cmd)}\n")
    log.flush()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO, start_new_session=True)
    proc.log_path = ctx.logs / f"{name}.log"
    ctx.children.append(proc)
    return proc


def tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def run(ctx: Context, name: str, cmd: List[str], env: dict, timeout: float) -> str:
    """Run to the end (killed at ``timeout``); the log's text; StageError on failure."""
    proc = start(ctx, name, cmd, env)
    try:
        rc = proc.wait(timeout=ctx.timeout(timeout))
    except subprocess.TimeoutExpired:
        kill_group(proc)
        proc.wait()
        raise StageError(f"{name} did not finish within {ctx.timeout(timeout):.0f} s (the budget); its log ends:\n"
                         f"{tail(proc.log_path)}")
    finally:
        kill_group(proc)  # augmentation workers a killed or finished process left behind
    if rc != 0:
        raise StageError(f"{name} failed (exit {rc}); its log ends:\n{tail(proc.log_path)}")
    return proc.log_path.read_text(errors="replace")


def run_stage(ctx: Context, name: str, function, *args):
    ctx.log(f"=== {name}")
    start_s = ctx.elapsed()
    ctx.stage(name, status="running")
    try:
        result = function(ctx, *args)
    except Exception as e:  # noqa: BLE001 (recorded: the other stages still run)
        message = e.args[0] if isinstance(e, StageError) else traceback.format_exc()[-3000:]
        ctx.log(f"stage {name} FAILED: {message}")
        ctx.stage(name, status="failed", error=message[-3000:], seconds=round(ctx.elapsed() - start_s, 1))
        return None
    status = result.pop("status", "ok") if isinstance(result, dict) else "ok"
    ctx.stage(name, status=status, seconds=round(ctx.elapsed() - start_s, 1), **(result or {}))
    ctx.log(f"--- {name}: {status} ({ctx.elapsed() - start_s:.0f} s)")
    return result


# ---------------------------------------------------------------------------------------------------- stages
def environment(ctx: Context) -> dict:
    from importlib import metadata

    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "cpus": os.cpu_count(), "hostname": platform.node()}
    for dist in ("nnunetv2", "numpy", "SimpleITK", "blosc2", "batchgeneratorsv2", "dynamic_network_architectures"):
        try:
            info[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            info[dist] = None
    try:
        meminfo = Path("/proc/meminfo").read_text()
        info["memory_gib"] = round(int(re.search(r"MemTotal:\s+(\d+)", meminfo).group(1)) / 1024 ** 2, 1)
    except (OSError, AttributeError):
        info["memory_gib"] = None
    if ctx.s.device == "cuda":
        if not torch.cuda.is_available():
            raise StageError("no CUDA device: run with --cpu (and --tiny) on a machine without a GPU")
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 1024 ** 3, 1),
                    gpu_multiprocessors=props.multi_processor_count)
    info["commit"] = "unknown (not a git checkout)"  # the device machine receives the working tree only
    try:
        git = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True)
        if git.returncode == 0:
            info["commit"] = git.stdout.strip()
            info["dirty"] = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                                                capture_output=True, text=True).stdout.strip())
    except OSError:  # no git there
        pass
    ctx.report["environment"] = info
    ctx.log("environment: " + ", ".join(f"{k} {v}" for k, v in info.items()))
    return {}


def memory_available_gib() -> Optional[float]:
    try:
        text = Path("/proc/meminfo").read_text()
        return round(int(re.search(r"MemAvailable:\s+(\d+)", text).group(1)) / 1024 ** 2, 1)
    except (OSError, AttributeError):
        return None


def dataset_name() -> str:
    return f"Dataset{DATASET_ID:03d}_SemiDemo"


def prepare(ctx: Context) -> dict:
    from nnunet_semi.apps.demo_data import generate_demo_dataset

    s, env = ctx.s, ctx.env
    raw = Path(generate_demo_dataset(env["nnUNet_raw"], DATASET_ID, seed=0, shape=tuple(s.shape),
                                     spacing=tuple(s.spacing), num_processes=s.processes, **s.counts))
    ctx.log(f"generated {raw} ({s.counts}, shape {tuple(s.shape)}) at {ctx.elapsed():.0f} s")
    np_ = str(s.processes)
    run(ctx, "plan_and_preprocess", command("nnUNetv2_plan_and_preprocess", "-d", DATASET_ID, "-c",
                                            *s.configurations, "-np", *[np_] * len(s.configurations), "-npfp",
                                            np_), env, 600)
    preprocessed = Path(env["nnUNet_preprocessed"]) / dataset_name()
    shutil.copy(raw / "splits_final.json", preprocessed / "splits_final.json")
    if s.small_plans:
        from nnunet_semi.apps.small_plans import make_small_plans

        make_small_plans(DATASET_ID, target_plans=s.plans, configurations=list(s.configurations),
                         preprocessed_root=env["nnUNet_preprocessed"], **s.small_plans)
    if s.processes > 1:
        run(ctx, "preprocess_unlabeled", command("nnunet_semi_preprocess_unlabeled", "-d", DATASET_ID, "-c",
                                                 *s.configurations, "-p", s.plans, "-np", np_), env, 600)
    else:  # one process (the CPU): the command's own function, here, saves a Python start-up on a busy machine
        from nnunet_semi.data.unlabeled import preprocess_unlabeled

        for c in s.configurations:
            preprocess_unlabeled(DATASET_ID, c, s.plans, num_processes=1, show_progress=False)
        ctx.log(f"preprocessed the unlabeled images ({', '.join(s.configurations)}) in this process")
    plans = json.loads((preprocessed / f"{s.plans}.json").read_text())
    summary = {}
    for c in s.configurations:
        config = plans["configurations"][c]
        arch = config["architecture"]["arch_kwargs"]
        summary[c] = {"patch_size": config["patch_size"], "batch_size": config["batch_size"],
                      "spacing": config["spacing"], "features_per_stage": arch["features_per_stage"],
                      "n_stages": arch["n_stages"]}
    ctx.report["data"] = {"dataset": dataset_name(), "shape": list(s.shape), "spacing": list(s.spacing),
                          **s.counts, "plans": s.plans, "configurations": summary}
    return {}


def worker_command(ctx: Context, result_dir: Path, cost_jobs: Sequence[str] = (),
                   unimatch: Sequence[str] = (), sync_dir: Optional[Path] = None) -> List[str]:
    s = ctx.s
    cmd = [sys.executable, "-m", "benchmarks.gpu.worker", "--result-dir", str(result_dir), "--dataset-id",
           str(DATASET_ID), "--plans", s.plans, "--device", s.device, "--warmup", str(s.warmup), "--iterations",
           str(s.iterations), "--cached-batches", str(s.cached_batches), "--unimatch-steps", str(s.unimatch_steps)]
    if cost_jobs:
        cmd += ["--cost", *cost_jobs]
    if unimatch:
        cmd += ["--unimatch", *unimatch]
    if sync_dir is not None:
        cmd += ["--sync-dir", str(sync_dir), "--turn-timeout", str(max(60.0, min(900.0, ctx.left())))]
    return cmd


def worker_env(ctx: Context, concurrent: int) -> dict:
    env = dict(ctx.env)
    if ctx.s.data_workers is not None:
        env["nnUNet_n_proc_DA"] = str(ctx.s.data_workers)
    if ctx.s.threads is not None:
        env["nnUNet_semi_threads"] = str(ctx.s.threads)
    # several processes compile at once: share the cores between their Inductor compile pools
    env.setdefault("TORCHINDUCTOR_COMPILE_THREADS", str(max(1, (os.cpu_count() or 1) // max(1, concurrent))))
    return env


def read_result(result_dir: Path, name: str) -> Optional[dict]:
    path = result_dir / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def record_cost(ctx: Context, result: dict) -> None:
    with ctx.lock:
        ctx.report["cost"].append(result)
    if "error" in result:
        ctx.log(f"cost {result.get('configuration')} {result.get('trainer')}: ERROR {result['error']}")
    else:
        ctx.log(f"cost {result['configuration']} {result['trainer']}: {result['it_per_s']:.2f} it/s "
                f"({result['it_per_s_cached']:.2f} on cached batches), warm-up {result['warmup_s']:.1f} s, "
                f"compiled {result['compiled']}")
    ctx.stage("cost")


def cost_jobs(s: Settings) -> List[tuple]:
    """``(configuration, trainer)`` in the order they start: nnU-Net's own trainer of every configuration first (the
    ratios need it), then each trainer's configurations side by side, so that a budget cut loses the last trainer's
    rows, not a whole configuration."""
    others = [t for t in s.trainers if t != BASELINE]
    return [(c, BASELINE) for c in s.configurations] + [(c, t) for t in others for c in s.configurations]


def cost(ctx: Context, correctness: Optional[threading.Thread] = None) -> dict:
    """The cost rows: one worker process measuring every row in turn (``--parallel 1``, the CPU), or the GPU
    schedule (:func:`cost_scheduled`)."""
    from benchmarks.gpu.worker import job_name

    s = ctx.s
    jobs = cost_jobs(s)
    result_dir = ctx.work / "cost"
    if s.parallel > 1:
        skipped, memory = cost_scheduled(ctx, jobs, result_dir, correctness)
    else:  # one process measures every job in turn, and then runs the UniMatch check
        skipped, memory = [], []
        proc_env = {**worker_env(ctx, 1), "KIT_CPU_COMPILE_BACKEND": "aot_eager"}
        ctx.unimatch_dir = result_dir
        try:
            run(ctx, "cost_worker", worker_command(ctx, result_dir, [f"{c}:{t}" for c, t in jobs],
                                                   unimatch=s.unimatch_configurations), proc_env, 3600)
        finally:
            for c, t in jobs:
                result = read_result(result_dir, job_name("cost", c, t))
                if result is None:
                    skipped.append(f"{c}:{t}")
                else:
                    record_cost(ctx, {"trainer": t, "configuration": c, **result})
    errors = [r for r in ctx.report["cost"] if "error" in r]
    status = "ok" if not skipped and not errors else "partial"
    return {"status": status, "not_measured": skipped, "errors": len(errors),
            "least_memory_available_gib": memory}


#: seconds the timing of one ready worker is given (its steps, writing its result, ending it)
TIMING_RESERVE_S = 15.0


def cost_scheduled(ctx: Context, jobs: List[tuple], result_dir: Path,
                   correctness: Optional[threading.Thread]) -> tuple:
    """The GPU schedule. At most ``--parallel`` processes are busy on the GPU at once: a cost worker from its start
    until it has compiled, warmed up, drawn its cached batches and emptied its CUDA cache (``<job>.ready``; then it
    idles with its weights only), and each correctness process while it runs (``ctx.busy``). So several compile at
    once without their memory peaks adding up beyond a few. When every worker is ready and the correctness checks
    are over, the ready workers are timed one after the other, nothing else running (``<job>.go``). Workers are not
    started once the time left would not cover the timing of those already started; workers still warming up when
    that point comes are ended."""
    from benchmarks.gpu.worker import job_name

    sync = ctx.work / "sync"
    sync.mkdir(parents=True, exist_ok=True)
    pending, warming, ready, skipped = list(jobs), {}, {}, []
    env = worker_env(ctx, ctx.s.parallel)
    low = memory_available_gib()

    def reserve(n: int) -> float:
        return TIMING_RESERVE_S * n + 20.0

    while True:
        for name, (c, t, proc) in list(warming.items()):
            marker = sync / f"{name}.ready"
            if marker.exists():
                ready[name] = warming.pop(name)
                ctx.log(f"ready {name}: " + marker.read_text().replace("\n", " "))
            elif proc.poll() is not None:
                warming.pop(name)
                kill_group(proc)
                result = read_result(result_dir, name)
                if result is not None:
                    record_cost(ctx, {"trainer": t, "configuration": c, **result})
                else:
                    skipped.append(f"{c}:{t}")
                    ctx.log(f"cost {c} {t}: ended without a result; its log ends:\n{tail(proc.log_path, 1500)}")
        low = min(filter(None, [low, memory_available_gib()]), default=None)
        started = len(ready) + len(warming)
        busy = ctx.busy if correctness is not None and correctness.is_alive() else 0
        while pending and len(warming) + busy < ctx.s.parallel and ctx.left() > reserve(started + 1) + 60:
            c, t = pending.pop(0)
            name = job_name("cost", c, t)
            warming[name] = (c, t, start(ctx, name, worker_command(ctx, result_dir, [f"{c}:{t}"], sync_dir=sync),
                                         env))
            started += 1
        checks_running = correctness is not None and correctness.is_alive()
        if not warming and not checks_running and (not pending or ctx.left() <= reserve(len(ready)) + 60):
            break
        if ctx.left() <= reserve(len(ready)):
            ctx.log(f"time to time the {len(ready)} ready workers: ending {sorted(warming)}, not starting "
                    f"{len(pending)} more")
            break
        time.sleep(0.5)
    for name, (c, t, proc) in warming.items():
        kill_group(proc)
        skipped.append(f"{c}:{t}")
    skipped += [f"{c}:{t}" for c, t in pending]
    ctx.log(f"cost: {len(ready)} workers ready; least memory available while they compiled: {low} GiB")
    for name, (c, t, proc) in sorted(ready.items(), key=lambda item: jobs.index(item[1][:2])):
        overlapped = correctness is not None and correctness.is_alive()
        if proc.poll() is None and ctx.left() > 5:
            (sync / f"{name}.go").write_text("")
            until = time.monotonic() + ctx.timeout(180)
            while not (result_dir / f"{name}.json").exists() and proc.poll() is None and time.monotonic() < until:
                time.sleep(0.1)
        kill_group(proc)  # its result is written: end it and its augmentation workers now
        proc.wait()
        result = read_result(result_dir, name)
        if result is None:
            skipped.append(f"{c}:{t}")
            ctx.log(f"cost {c} {t}: no result; its log ends:\n{tail(proc.log_path, 1500)}")
        else:
            record_cost(ctx, {"trainer": t, "configuration": c, **result,
                              **({"timed_while_checks_ran": True} if overlapped else {})})
    return skipped, [low]


def read_log_epochs(text: str) -> List[int]:
    return [int(m) for m in re.findall(r"Epoch (\d+)\s*$", text, flags=re.M)]


def train_command(ctx: Context, trainer: str, configuration: str, *extra) -> List[str]:
    return command("nnUNetv2_train", DATASET_ID, configuration, 0, "-tr", trainer, "-p", ctx.s.plans, "-device",
                   ctx.s.device, *extra)


def result_folder(ctx: Context, trainer: str, configuration: str) -> Path:
    return Path(ctx.env["nnUNet_results"]) / dataset_name() / f"{trainer}__{ctx.s.plans}__{configuration}" / "fold_0"


def train_env(ctx: Context, concurrent: int = 1) -> dict:
    env = {**worker_env(ctx, concurrent), "nnUNet_semi_seed": "0"}
    return env


def kill_at_epoch(ctx: Context, name: str, cmd: List[str], env: dict, epoch: int, timeout: float) -> str:
    """Start a training and SIGKILL it (with its augmentation workers) when it logs the start of ``epoch``."""
    ctx.logs.mkdir(parents=True, exist_ok=True)
    ctx.log(f"start {name}: {shown(cmd)} (killed at 'Epoch {epoch}')")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO,
                            start_new_session=True)
    ctx.children.append(proc)
    timer = threading.Timer(ctx.timeout(timeout), kill_group, [proc])
    timer.start()
    killed, lines = False, []
    with open(ctx.logs / f"{name}.log", "w") as log:
        for line in proc.stdout:
            log.write(line)
            lines.append(line)
            if line.rstrip().endswith(f"Epoch {epoch}"):
                kill_group(proc)
                killed = True
                break
    timer.cancel()
    proc.wait()
    kill_group(proc)
    if not killed:
        raise StageError(f"{name} ended (exit {proc.returncode}) before logging 'Epoch {epoch}':\n"
                         f"{''.join(lines)[-3000:]}")
    return "".join(lines)


def dice_of_folder(pred: Path, reference: Path, labels: Sequence[int] = LABELS) -> dict:
    """Per-case Dice (percent) of every label and their mean, and the mean over cases."""
    import numpy as np
    import SimpleITK as sitk

    cases = {}
    for ref in sorted(reference.glob("*.nii.gz")):
        p = pred / ref.name
        if not p.exists():
            cases[ref.name] = None
            continue
        a = sitk.GetArrayFromImage(sitk.ReadImage(str(p)))
        b = sitk.GetArrayFromImage(sitk.ReadImage(str(ref)))
        scores = []
        for label in labels:
            x, y = a == label, b == label
            denominator = x.sum() + y.sum()
            scores.append(100.0 if denominator == 0 else 200.0 * np.logical_and(x, y).sum() / denominator)
        cases[ref.name] = float(np.mean(scores))
    done = [v for v in cases.values() if v is not None]
    return {"cases": cases, "predicted": len(done), "expected": len(cases),
            "mean_dice": float(np.mean(done)) if done else None}


def predict(ctx: Context, name: str, trainer: str, configuration: str, env: dict, timeout: float) -> dict:
    raw = Path(ctx.env["nnUNet_raw"]) / dataset_name()
    out = ctx.work / f"predict_{name}"
    extra = ["--disable_tta"] if ctx.s.tiny else []
    n = str(max(1, min(ctx.s.processes, 8)))
    run(ctx, f"predict_{name}", command("nnUNetv2_predict", "-i", raw / "imagesTs", "-o", out, "-d", DATASET_ID,
                                        "-c", configuration, "-f", 0, "-tr", trainer, "-p", ctx.s.plans, "-device",
                                        ctx.s.device, "-npp", n, "-nps", n, *extra), env, timeout)
    return dice_of_folder(out, raw / "labelsTs")


def check(ctx: Context, name: str, passed: bool, details: dict) -> None:
    with ctx.lock:
        ctx.report["checks"][name] = {"passed": bool(passed), **details}
    ctx.log(f"check {name}: {'PASS' if passed else 'FAIL'} {json.dumps(details, default=str)[:600]}")
    ctx.stage("correctness")


def resume_and_predict(ctx: Context, concurrent: int) -> None:
    import torch

    trainer, configuration = f"nnUNetTrainerCPS_{ctx.s.cps_budget}", "2d"
    env = train_env(ctx, concurrent)
    cmd = train_command(ctx, trainer, configuration)
    folder = result_folder(ctx, trainer, configuration)
    kill_at_epoch(ctx, "cps_train_killed", cmd, env, 1, 900)
    latest = torch.load(folder / "checkpoint_latest.pth", map_location="cpu", weights_only=False)
    saved_epoch = int(latest["current_epoch"])
    saved_losses = [float(v) for v in latest["logging"]["train_losses"]]
    text = run(ctx, "cps_train_resumed", cmd + ["--c"], env, 900)
    epochs = read_log_epochs(text)
    final = torch.load(folder / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    losses = [float(v) for v in final["logging"]["train_losses"]]
    details = {"trainer": trainer, "configuration": configuration, "saved_epoch": saved_epoch,
               "epochs_logged_after_resume": epochs, "final_epoch": int(final["current_epoch"]),
               "train_losses_saved": saved_losses, "train_losses_final": losses,
               "network_keys": len(final["network_weights"]),
               "compiled_prefix_in_keys": any("_orig_mod" in k for k in final["network_weights"])}
    passed = (saved_epoch == 1 and bool(epochs) and epochs[0] == saved_epoch and 0 not in epochs
              and details["final_epoch"] == 2 and len(losses) == 2 and losses[:saved_epoch] == saved_losses
              and not details["compiled_prefix_in_keys"])
    check(ctx, "resume (--c) continues from the saved epoch", passed, details)
    dice = predict(ctx, "cps", trainer, configuration, env, 600)
    passed = dice["predicted"] == dice["expected"] == ctx.s.counts["num_test"] and dice["mean_dice"] is not None
    check(ctx, "nnUNetv2_predict of the CPS checkpoint", passed, {"trainer": trainer, **dice})


def correctness(ctx: Context, concurrent: int = 1, counted: int = 0) -> dict:
    """The UniMatch check in its own process (unless the sequential cost worker ran it already), beside the CPS
    resume + predict chain. ``counted``: how many of the two the caller counted in ``ctx.busy`` (the GPU schedule);
    each is uncounted when it ends."""
    proc = None
    result_dir = ctx.unimatch_dir
    uncount = [1] * counted
    if result_dir is None:
        result_dir = ctx.work / "unimatch"
        # its own results folder: the cost workers of UniMatch may train in the shared one at the same time
        env = {**worker_env(ctx, concurrent), "KIT_CPU_COMPILE_BACKEND": "aot_eager",
               "nnUNet_results": str(ctx.work / "results_unimatch")}
        proc = start(ctx, "unimatch_check", worker_command(ctx, result_dir,
                                                           unimatch=ctx.s.unimatch_configurations), env)
    errors = []
    try:
        resume_and_predict(ctx, concurrent)
    except Exception as e:  # noqa: BLE001 (recorded; the UniMatch check still reports)
        errors.append(e.args[0] if isinstance(e, StageError) else traceback.format_exc()[-3000:])
        ctx.log(f"resume / predict FAILED: {errors[-1]}")
    finally:
        if uncount:
            ctx.set_busy(-uncount.pop())
    if proc is not None:
        try:
            proc.wait(timeout=ctx.timeout(900))
        except subprocess.TimeoutExpired:
            errors.append("the UniMatch check did not finish within the budget")
        finally:
            kill_group(proc)
    if uncount:
        ctx.set_busy(-uncount.pop())
    from benchmarks.gpu.worker import job_name

    for c in ctx.s.unimatch_configurations:
        result = read_result(result_dir, job_name("unimatch", c))
        if result is None or "error" in result:
            errors.append(f"UniMatch check {c}: " + (result or {}).get("traceback", "no result"))
            continue
        ctx.report.setdefault("unimatch", {})[c] = result
        check(ctx, f"UniMatch under torch.compile ({c})", all(result["checks"].values()),
              {k: v for k, v in result.items() if k not in ("checks",)} | {"checks": result["checks"]})
    if errors:
        raise StageError("\n".join(errors))
    return {}


def paired(ctx: Context) -> dict:
    s = ctx.s
    if s.paired == "off" or (s.paired == "auto" and ctx.left() < s.paired_min_s):
        reason = "off" if s.paired == "off" else f"{ctx.left():.0f} s left < {s.paired_min_s:.0f} s needed"
        ctx.log(f"paired training skipped: {reason}")
        return {"status": "skipped", "reason": reason}
    configuration = "2d"
    trainers = [f"{t}_{s.paired_budget}" for t in PAIRED_TRAINERS]
    env = train_env(ctx, len(trainers))
    procs = [start(ctx, f"paired_train_{t}", train_command(ctx, t, configuration), env) for t in trainers]
    failures = []
    for t, proc in zip(trainers, procs):
        try:
            rc = proc.wait(timeout=ctx.timeout(3600))
        except subprocess.TimeoutExpired:
            rc = "timeout"
        kill_group(proc)
        if rc != 0:
            failures.append(f"{t}: exit {rc}; its log ends:\n{tail(proc.log_path)}")
    for proc in procs:
        kill_group(proc)
    rows, threads = {}, []

    def predict_one(t):
        try:
            rows[t] = predict(ctx, f"paired_{t}", t, configuration, env, 600)
        except StageError as e:
            failures.append(str(e))

    for t in trainers:  # the three predictions at once
        if not any(f.startswith(f"{t}:") for f in failures):
            threads.append(threading.Thread(target=predict_one, args=(t,)))
            threads[-1].start()
    for thread in threads:
        thread.join()
    rows = {t: rows[t] for t in trainers if t in rows}
    ctx.report["paired"] = {"configuration": configuration, "budget": s.paired_budget, "seed": 0, "rows": rows}
    if failures:
        raise StageError("\n".join(failures))
    return {}


# ---------------------------------------------------------------------------------------------------- report
def _f(value, digits=2, suffix="") -> str:
    return "—" if value is None else f"{value:.{digits}f}{suffix}"


def cost_table(rows: List[dict]) -> str:
    header = ["configuration", "trainer", "compiled", "batch (lab + unl)", "it/s", "ratio to nnU-Net (s/it)",
              "loading share", "it/s, cached batches", "ratio, cached", "peak memory (GiB)", "memory ratio",
              "warm-up s (incl. compile)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    base = {r["configuration"]: r for r in rows if r.get("trainer") == BASELINE and "error" not in r}
    order = {t: i for i, t in enumerate(TRAINERS)}
    rows = sorted(rows, key=lambda r: (str(r.get("configuration")), order.get(r.get("trainer"), len(order)),
                                       str(r.get("trainer"))))
    for r in rows:
        if "error" in r:
            lines.append(f"| {r.get('configuration')} | `{r.get('trainer')}` | error: {r['error'][:80]} |"
                         + " |" * (len(header) - 3))
            continue
        b = base.get(r["configuration"])
        memory = r.get("peak_gpu_memory_gib", r.get("peak_rss_gib"))
        base_memory = None if b is None else b.get("peak_gpu_memory_gib", b.get("peak_rss_gib"))
        lines.append("| " + " | ".join([
            r["configuration"], f"`{r['trainer']}`", "yes" if r["compiled"] else "no",
            f"{r['batch_labeled']} + {r['batch_unlabeled']}", _f(r["it_per_s"]),
            _f(None if b is None else r["live"]["s_per_it"] / b["live"]["s_per_it"], suffix="x"),
            f"{100 * r['live']['load_s_per_it'] / r['live']['s_per_it']:.0f}%", _f(r["it_per_s_cached"]),
            _f(None if b is None else r["cached"]["s_per_it"] / b["cached"]["s_per_it"], suffix="x"),
            _f(memory), _f(None if not base_memory else memory / base_memory, suffix="x"),
            _f(r["warmup_s"], 1) + (" ᵒ" if r.get("timed_while_checks_ran") else "")]) + " |")
    if any(r.get("timed_while_checks_ran") for r in rows):
        lines.append("\nᵒ timed while the correctness checks still ran (they outlasted the budget's wait): slower "
                     "than alone.")
    return "\n".join(lines)


def render_markdown(report: dict) -> str:
    env = report.get("environment", {})
    s = report["settings"]
    out = [f"# GPU check ({report['mode']})", "",
           f"Started {report['started']}, {report.get('elapsed_s', 0):.0f} s. "
           + ", ".join(f"{k}: {env[k]}" for k in ("gpu", "gpu_memory_gib", "cpus", "memory_gib", "python", "torch",
                                                 "cuda", "nnunetv2", "commit") if k in env) + ".", ""]
    data = report.get("data")
    if data:
        out += [f"Data: `{data['dataset']}` from the demo generator, {data['num_labeled']} labeled + "
                f"{data['num_val']} validation + {data['num_test']} test + {data['num_unlabeled']} unlabeled volumes "
                f"of {' x '.join(map(str, data['shape']))} voxels; plans `{data['plans']}`:", "",
                "| configuration | patch | batch | features per stage | spacing |", "|---|---|---|---|---|"]
        out += [f"| {c} | {v['patch_size']} | {v['batch_size']} | {v['features_per_stage']} | {v['spacing']} |"
                for c, v in data["configurations"].items()]
        out.append("")
    out += ["## Cost", "",
            f"Warm-up steps: {s['warmup']} (compilation included); then {s['iterations']} timed step(s) with "
            f"nnU-Net's loaders (it/s; loading share = time waiting for a batch) and {s['iterations']} on "
            f"{s['cached_batches']} cached batch(es) (the step alone). Ratios: seconds per step against `{BASELINE}` "
            f"(nnU-Net's own trainer) of the same configuration. Peak memory: "
            + ("`torch.cuda.max_memory_allocated` over the timed steps." if s["device"] == "cuda" else
               "the worker process's peak resident size (CPU" + ("; one process measures every row, so it only "
                                                                 "grows)." if s["parallel"] <= 1 else ")."))
            + (" `compiled`: the network runs under `torch.compile` (nnU-Net's decision; UniMatch refuses it, "
               "`_kitCompile` is UniMatch with nnU-Net's decision)." if s["device"] == "cuda" else ""),
            "", cost_table(report.get("cost", [])) if report.get("cost") else "not measured", ""]
    out += ["## Correctness", "", "| check | result |", "|---|---|"]
    for name, c in report.get("checks", {}).items():
        out.append(f"| {name} | {'PASS' if c['passed'] else 'FAIL'} |")
    for c, u in report.get("unimatch", {}).items():
        out += ["", f"UniMatch ({c}): nnU-Net would compile here: {u['nnunet_would_compile']}; the stock trainer "
                f"runs compiled: {u['stock_compiled']} (log: {u['stock_log_line'] or 'no line'}); the kit's "
                f"compiled copy: perturbed vs clean weak rows differ by {u['perturbation_rel_diff_compiled']:.3f} "
                f"(eager: {u['perturbation_rel_diff_eager']:.3f}, relative mean absolute difference), compiled vs "
                f"eager clean rows {u['clean_rows_compiled_vs_eager_rel_diff']:.2e}; rows {u['rows_compiled']} "
                f"(expected {u['rows_expected_perturbed']}), {u['rows_compiled_unperturbed']} with the perturbation "
                f"off, {u['rows_compiled_eval']} in eval mode; L_fp over {u['train_steps']} train steps "
                f"{[round(v, 4) for v in u['fp_losses']]} (confident fraction "
                f"{[round(v, 3) for v in u.get('confident_fraction', [])]}); TorchDynamo graphs: "
                f"{u['dynamo_unique_graphs']}; first "
                f"compiled call {u['first_compiled_call_s']:.1f} s."]
    resume = report.get("checks", {}).get("resume (--c) continues from the saved epoch")
    if resume:
        out += ["", f"Resume: `{resume['trainer']}` killed at the start of epoch 1, checkpoint_latest at epoch "
                f"{resume['saved_epoch']}; `--c` logged epochs {resume['epochs_logged_after_resume']}, final epoch "
                f"{resume['final_epoch']}, train losses {[round(v, 4) for v in resume['train_losses_final']]} "
                f"(saved: {[round(v, 4) for v in resume['train_losses_saved']]})."]
    pred = report.get("checks", {}).get("nnUNetv2_predict of the CPS checkpoint")
    if pred:
        out += ["", f"Predict: {pred['predicted']} of {pred['expected']} test cases written, mean Dice "
                f"{_f(pred['mean_dice'])} (a few iterations: the pipeline, not the method)."]
    paired_ = report.get("paired")
    if paired_:
        rows = paired_["rows"]
        base = next((v for k, v in rows.items() if k.startswith("nnUNetTrainerLabeledOnly")), None)
        out += ["", "## Paired training", "",
                f"{paired_['configuration']}, budget `{paired_['budget']}`, seed {paired_['seed']}, same data; "
                f"test Dice (mean over the test cases of the mean over organ and core), one seed:", "",
                "| trainer | test Dice | gain over labeled-only |", "|---|---|---|"]
        for t, v in rows.items():
            gain = None if base is None or v["mean_dice"] is None else v["mean_dice"] - base["mean_dice"]
            out.append(f"| `{t}` | {_f(v['mean_dice'])} | {_f(gain)} |")
    out += ["", "## Stages", "", "| stage | status | seconds | note |", "|---|---|---|---|"]
    for name, st in report.get("stages", {}).items():
        note = st.get("reason") or (st.get("error", "").splitlines() or [""])[0][:120] or \
            (f"not measured: {st['not_measured']}" if st.get("not_measured") else "")
        out.append(f"| {name} | {st.get('status')} | {st.get('seconds', '—')} | {note} |")
    return "\n".join(out) + "\n"


def pack_logs(ctx: Context) -> None:
    """Every subprocess log and nnU-Net's training logs (their last MiB each) into ``job_logs.tar.gz``."""
    files = sorted(ctx.logs.glob("*.log")) + sorted(Path(ctx.env["nnUNet_results"]).rglob("training_log_*.txt"))
    with tarfile.open(ctx.out / "job_logs.tar.gz", "w:gz") as tar:
        for f in files:
            data = f.read_bytes()[-1024 ** 2:]
            info = tarfile.TarInfo(str(f.relative_to(ctx.work)))
            info.size = len(data)
            info.mtime = int(f.stat().st_mtime)
            tar.addfile(info, io.BytesIO(data))


# ---------------------------------------------------------------------------------------------------- main
def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu", action="store_true", help="run on the CPU (nnU-Net does not compile there)")
    parser.add_argument("--tiny", action="store_true",
                        help="small volumes, small plans, a couple of iterations, no paired training")
    parser.add_argument("--out", default=None, help="output folder (default: $OUT, else benchmarks/gpu/out)")
    parser.add_argument("--work", default=None, help="work folder (default: <tmp>/nnunet-semi-gpu-check[-tiny])")
    parser.add_argument("--keep-work", action="store_true", help="keep the work folder afterwards")
    parser.add_argument("--budget-s", type=float, default=None, help="time budget of all stages (0: none)")
    parser.add_argument("--trainers", nargs="+", default=None)
    parser.add_argument("--configurations", nargs="+", default=None)
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--iterations", type=int, default=None)
    parser.add_argument("--parallel", type=int, default=None,
                        help="processes busy on the GPU at once: cost workers compiling and warming up, "
                             "correctness checks (GPU default 3; 1: one process measures every row in turn)")
    parser.add_argument("--data-workers", type=int, default=None, help="nnUNet_n_proc_DA for the trainings")
    parser.add_argument("--paired", choices=("auto", "on", "off"), default=None)
    parser.add_argument("--paired-budget", default=None, help="budget suffix of the paired trainers (1epochs)")
    parser.add_argument("--overlap", choices=("auto", "on", "off"), default="auto",
                        help="run the correctness checks while the first cost group compiles (auto: on a GPU with "
                             "--parallel > 1)")
    parser.add_argument("--skip", nargs="*", default=[], choices=("cost", "correctness", "paired"))
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    s = settings_for(args.cpu, args.tiny)
    for key in ("trainers", "configurations", "warmup", "iterations", "parallel", "data_workers", "paired",
                "paired_budget"):
        if getattr(args, key) is not None:
            setattr(s, key, getattr(args, key))
    if args.budget_s is not None:
        s.budget_s = args.budget_s or None
    if args.configurations:
        s.unimatch_configurations = [c for c in s.unimatch_configurations if c in args.configurations] or \
            list(args.configurations)[:1]
    if BASELINE not in s.trainers:
        s.trainers = [BASELINE, *s.trainers]
    out = Path(args.out or os.environ.get("OUT") or KIT / "out").resolve()
    work = Path(args.work or Path(tempfile.gettempdir()) / ("nnunet-semi-gpu-check" + ("-tiny" if s.tiny else "")))
    work = work.resolve()
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    ctx = Context(s, out, work)
    from nnunet_semi.apps.ext_trainer import ext_trainer_value

    for var, sub in (("nnUNet_raw", "raw"), ("nnUNet_preprocessed", "preprocessed"), ("nnUNet_results", "results")):
        (work / sub).mkdir()
        ctx.env[var] = str(work / sub)
        os.environ[var] = str(work / sub)  # nnU-Net's paths in this process (small plans, Dice reading)
    ctx.env["nnUNet_extTrainer"] = os.pathsep.join([ext_trainer_value(os.environ.get("nnUNet_extTrainer")),
                                                    str(KIT / "ext")])
    ctx.env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    ctx.env["PYTHONUNBUFFERED"] = "1"
    ctx.env["nnUNet_def_n_proc"] = str(min(s.processes, 8))  # nnU-Net's export pools (validation, prediction)
    ctx.log(f"GPU check, mode {ctx.report['mode']}, out {out}, work {work}, budget "
            f"{'none' if s.budget_s is None else f'{s.budget_s:.0f} s'}")
    ctx.write()
    try:
        ok = run_stage(ctx, "environment", environment) is not None
        ok = ok and run_stage(ctx, "prepare", prepare) is not None
        if ok:
            overlap = (args.overlap == "on" or (args.overlap == "auto" and s.device == "cuda" and s.parallel > 1)) \
                and "correctness" not in args.skip
            thread = None
            if overlap:  # the correctness checks run while the cost workers compile; timing waits for them
                ctx.set_busy(2)  # counted against --parallel until each of the two ends
                thread = threading.Thread(target=run_stage, args=(ctx, "correctness", correctness, s.parallel, 2),
                                          daemon=True)
                thread.start()
            if "cost" not in args.skip:
                run_stage(ctx, "cost", cost, thread)
            if thread is not None:
                thread.join(timeout=ctx.timeout(900))
            elif "correctness" not in args.skip:
                run_stage(ctx, "correctness", correctness)
            if "paired" not in args.skip:
                run_stage(ctx, "paired", paired)
    finally:
        for proc in ctx.children:
            kill_group(proc)
        ctx.report["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        ctx.write()
        try:
            pack_logs(ctx)
        except Exception as e:  # noqa: BLE001 (the results are written already)
            ctx.log(f"could not pack the logs: {e}")
        if not args.keep_work:
            shutil.rmtree(work, ignore_errors=True)
    stages = ctx.report["stages"]
    broken = [n for n, st in stages.items() if st.get("status") in ("failed", "running")]
    failed = [n for n, c in ctx.report["checks"].items() if not c["passed"]]
    partial = [n for n, st in stages.items() if st.get("status") == "partial"]
    ctx.log(f"done in {ctx.elapsed():.0f} s: stages {json.dumps({n: st.get('status') for n, st in stages.items()})}"
            f"; checks failed: {failed or 'none'}; results in {out}")
    return 1 if broken else 2 if failed or partial else 0


if __name__ == "__main__":
    sys.exit(main())
