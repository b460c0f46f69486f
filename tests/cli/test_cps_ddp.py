"""nnUNetTrainerCPS, nnUNetTrainerFixMatch and nnUNetTrainerUniMatch under DDP: 2 ranks, gloo, CPU (nnU-Net's own DDP launcher needs CUDA + nccl, so the trainer
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
                       "nnUNetTrainerUniMatch": "fp_losses"}



def _worker(rank: int, env: dict, dataset: str, port: int, out_dir: str, name: str) -> None:
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
    result = {
        "batch_size": trainer.batch_size, "unlabeled_batch_size": trainer.unlabeled_batch_size,
        "params_equal_across_ranks": all(torch.equal(gathered[0], g) for g in gathered),
        "losses": [float(o["loss"]) for o in outputs],
        "curve": trainer.logger.get_value(TRAINERS_UNDER_TEST[name], step=-1),
    }
    torch.save(result, join(out_dir, f"rank{rank}.pt"))
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.parametrize("name", list(TRAINERS_UNDER_TEST))
def test_two_ranks_gloo(hippocampus_nnunet, tmp_path, name):
    """Per-rank batches, weights identical on both ranks after the steps (one DDP reducer per step: FixMatch's
    no-gradient weak pass and UniMatch's feature-perturbation hook included), the method's curve averaged over
    ranks, one RNG state per rank in the checkpoint."""
    env = train_env(hippocampus_nnunet["env"])
    plans = load_json(join(env["nnUNet_preprocessed"], hippocampus_nnunet["dataset"], SMALL_PLANS + ".json"))
    global_batch = plans["configurations"]["2d"]["batch_size"]
    mp.spawn(_worker, args=(env, hippocampus_nnunet["dataset"], free_port(), str(tmp_path), name), nprocs=WORLD,
             join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    assert sum(r["batch_size"] for r in results) == global_batch
    for r in results:
        assert r["unlabeled_batch_size"] == r["batch_size"]  # 1:1 per rank
        assert r["params_equal_across_ranks"]
        assert all(np.isfinite(r["losses"]))
    # the logged curve is the mean over ranks, identical on both
    assert results[0]["curve"] == results[1]["curve"] and np.isfinite(results[0]["curve"])
    checkpoint = torch.load(tmp_path / "ddp_checkpoint.pth", map_location="cpu", weights_only=False)
    rng = semi_checkpoint_state(checkpoint)["rng_states"]  # inside checkpoint["logging"]
    assert len(rng) == WORLD and not torch.equal(rng[0]["torch"], rng[1]["torch"])
