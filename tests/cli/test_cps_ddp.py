"""nnUNetTrainerCPS, nnUNetTrainerFixMatch (and its self-adaptive thresholds) and nnUNetTrainerUniMatch under DDP: 2 ranks, gloo, CPU (nnU-Net's own DDP launcher needs CUDA + nccl, so the trainer
is built programmatically and wrapped in DistributedDataParallel without device ids, as NNUNET_NOTES.md says)."""
import os

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from batchgenerators.utilities.file_and_folder_operations import join, load_json
from torch.nn.parallel import DistributedDataParallel as DDP

from nnunet_semi.training.logging import semi_checkpoint_state
from tests.conftest import SMALL_PLANS, train_env
from tests.helpers import free_port

WORLD = 2
STEPS = 3
#: trainer -> a curve of its own (logged as the mean over ranks)
TRAINERS_UNDER_TEST = {"nnUNetTrainerCPS": "cps_losses", "nnUNetTrainerFixMatch": "unsup_losses",
                       "nnUNetTrainerUniMatch": "fp_losses", "nnUNetTrainerFixMatch_SAT": "sat_global_threshold"}
#: (trainer, unlabeled batch per rank: None = 1:1 with the labeled one); 1 = the batch-of-1 CutMix partner path
CASES = [(name, None) for name in TRAINERS_UNDER_TEST] + [("nnUNetTrainerFixMatch", 1)]
CUTMIX_SKIPPED = "CutMix: an unlabeled batch of 1 has no partner on the first step"



def _worker(rank: int, env: dict, dataset: str, port: int, out_dir: str, name: str, unlabeled: int) -> None:
    os.environ.update(env)
    torch.set_num_threads(1)
    from nnunet_semi.training import TRAINERS

    pre = join(env["nnUNet_preprocessed"], dataset)
    plans = load_json(join(pre, SMALL_PLANS + ".json"))
    plans["continue_training"] = False
    # build before the process group exists: nnU-Net's __init__ switches to CUDA when it sees DDP
    trainer = TRAINERS[name](plans, "2d", 0, load_json(join(pre, "dataset.json")), device=torch.device("cpu"))
    trainer.output_folder = trainer.output_folder + f"_rank{rank}"  # separate logs per rank
    os.makedirs(trainer.output_folder, exist_ok=True)
    trainer.log_file = join(trainer.output_folder, "log.txt")
    dist.init_process_group("gloo", rank=rank, world_size=WORLD, init_method=f"tcp://127.0.0.1:{port}")
    torch.manual_seed(rank)  # different initialisations per rank: DDP must broadcast rank 0's weights
    trainer.initialize()  # is_ddp is still False here: no CUDA DDP wrapper
    trainer.is_ddp, trainer.local_rank = True, rank
    trainer._set_batch_size_and_oversample()  # per-rank batch sizes
    if unlabeled is not None:
        trainer.unlabeled_batch_size = unlabeled  # read when on_train_start builds the unlabeled loader
    trainer.network = DDP(trainer.network)
    trainer.loss = trainer._build_loss()  # Dice with all-gather across ranks
    trainer.on_train_start()
    trainer.on_train_epoch_start()
    outputs = [trainer.train_step(next(trainer.dataloader_train)) for _ in range(STEPS)]
    trainer.on_train_epoch_end(outputs)

    flat = torch.cat([p.detach().flatten() for p in trainer.network.parameters()])
    gathered = [torch.empty_like(flat) for _ in range(WORLD)]
    dist.all_gather(gathered, flat)
    trainer.save_checkpoint(join(out_dir, "ddp_checkpoint.pth"))  # collective: gathers every rank's RNG state
    log = open(trainer.log_file).read() if os.path.exists(trainer.log_file) else ""  # only rank 0 writes its log
    result = {
        "batch_size": trainer.batch_size, "unlabeled_batch_size": trainer.unlabeled_batch_size,
        "params_equal_across_ranks": all(torch.equal(gathered[0], g) for g in gathered),
        "losses": [float(o["loss"]) for o in outputs],
        "curve": trainer.logger.get_value(TRAINERS_UNDER_TEST[name], step=-1),
        "cutmix_skipped_logged": log.count(CUTMIX_SKIPPED),
        "sat_thresholds": None if getattr(trainer, "self_adaptive_threshold", None) is None
        else trainer.self_adaptive_threshold.thresholds(),
    }
    torch.save(result, join(out_dir, f"rank{rank}.pt"))
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.parametrize("name, unlabeled", CASES)
def test_two_ranks_gloo(hippocampus_nnunet, tmp_path, name, unlabeled):
    """Per-rank batches, weights identical on both ranks after the steps (one DDP reducer per step: FixMatch's
    no-gradient weak pass and UniMatch's feature-perturbation hook included), the method's curve averaged over
    ranks, one RNG state per rank in the checkpoint. With 1 unlabeled patch per rank: each rank keeps its own CutMix
    partner (the previous step's patch) and the checkpoint holds both; the skipped first-step CutMix is logged
    once."""
    env = train_env(hippocampus_nnunet["env"])
    plans = load_json(join(env["nnUNet_preprocessed"], hippocampus_nnunet["dataset"], SMALL_PLANS + ".json"))
    global_batch = plans["configurations"]["2d"]["batch_size"]
    mp.spawn(_worker, args=(env, hippocampus_nnunet["dataset"], free_port(), str(tmp_path), name, unlabeled),
             nprocs=WORLD, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    assert sum(r["batch_size"] for r in results) == global_batch
    for r in results:
        assert r["unlabeled_batch_size"] == (r["batch_size"] if unlabeled is None else unlabeled)  # 1:1 per rank
        assert r["params_equal_across_ranks"]
        assert all(np.isfinite(r["losses"]))
    if name == "nnUNetTrainerFixMatch_SAT":  # the batch sums are all-reduced: the same thresholds on every rank
        thresholds = [r["sat_thresholds"] for r in results]  # (each rank's own unlabeled patches would differ)
        assert torch.equal(thresholds[0], thresholds[1]) and not torch.allclose(thresholds[0], torch.full_like(
            thresholds[0], thresholds[0][0]))
    # the logged curve is the mean over ranks, identical on both
    assert results[0]["curve"] == results[1]["curve"] and np.isfinite(results[0]["curve"])
    checkpoint = torch.load(tmp_path / "ddp_checkpoint.pth", map_location="cpu", weights_only=False)
    rng = semi_checkpoint_state(checkpoint)["rng_states"]  # inside checkpoint["logging"]
    assert len(rng) == WORLD and not torch.equal(rng[0]["torch"], rng[1]["torch"])
    partners = semi_checkpoint_state(checkpoint)["method_state"].get("cutmix_partner")
    if unlabeled == 1:
        assert len(partners) == WORLD and not torch.equal(partners[0]["image"], partners[1]["image"])
        assert all(p["image"].shape[0] == 1 and p["labels"].shape == p["image"].shape[:1] + p["image"].shape[2:]
                   for p in partners)
        assert [r["cutmix_skipped_logged"] for r in results] == [1, 0]  # once, by rank 0
    else:
        assert partners in (None, [None] * WORLD)
