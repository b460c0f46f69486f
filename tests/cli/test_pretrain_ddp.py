"""Every pretraining method under DDP: ``torchrun --nproc_per_node 2 -m pretraining.cli ... -device cpu`` (2 gloo
ranks), 2 iterations on the small Hippocampus 2d plans. DDP's reducer is strict (``find_unused_parameters`` only
where a method declares unused parameters): a parameter that never gets a gradient fails in iteration 2."""
import re

import pytest
import torch

from pretraining.cli import PRETRAINERS
from tests.conftest import HIPPO_ID, SMALL_PLANS, nnunet_bin, run, train_env

WORLD = 2
BATCH = 4  # global: 2 per rank
ITERS = 2
# stage 2 of MMGL normally starts from stage 1's checkpoint; --no-global keeps each method's run independent
EXTRA = {"mmgl_local": ["--no-global"], "ccm": ["--proj-dim", "16"], "ideal": ["--proj-dim", "16"],
         "globallocal": ["--proj-dim", "16"], "mmgl_global": ["--proj-dim", "16"], "simclr": ["--proj-dim", "16"]}


@pytest.mark.parametrize("method", sorted(PRETRAINERS))
def test_pretraining_two_gloo_ranks(hippocampus_nnunet, unlabeled_preprocessed, method, tmp_path):
    unlabeled_preprocessed("2d")  # before the ranks start: they would both preprocess the unlabeled images
    env = {**train_env(hippocampus_nnunet["env"]), "nnUNet_results": str(tmp_path), "nnUNet_semi_seed": "0",
           "nnUNet_semi_threads": "1", "OMP_NUM_THREADS": "1"}
    proc = run([nnunet_bin("torchrun"), "--standalone", "--nproc_per_node", WORLD, "-m", "pretraining.cli",
                "-d", HIPPO_ID, "-c", "2d", "-p", SMALL_PLANS, "-m", method, "-device", "cpu", "--epochs", 1,
                "--iters-per-epoch", ITERS, "--batch-size", BATCH, *EXTRA.get(method, [])], env, timeout=900)
    assert f"batch {BATCH} ({BATCH // WORLD} per rank), {ITERS} iterations x 1 epochs" in proc.stdout
    path = re.findall(r"\S+checkpoint_final\.pth", proc.stdout)[-1]
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    assert checkpoint["epoch"] == 1
    assert checkpoint["pretraining"]["method"] == PRETRAINERS[method].method_name
    first_term = next(k for k in checkpoint["history"] if k != "lr")
    assert len(checkpoint["history"][first_term]) == 1 and torch.isfinite(
        torch.tensor(checkpoint["history"][first_term][0])), checkpoint["history"]
