"""CCM pre-training pieces (Sec. 2.1 of the CCM paper): complementary block masks, InfoNCE (eq. 2, single process
and gathered over 2 gloo ranks), the reconstruction loss (eq. 1) and the projection head, each against an
independent recomputation."""
import math

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from nnunet_semi.losses import InfoNCELoss, info_nce, masked_pair_reconstruction_loss
from nnunet_semi.networks import ProjectionHead
from pretraining.masking import complementary_block_masks, default_block_size
from tests.helpers import free_port


# ----------------------------------------------------------------------------------------------- block masks

def _block_values(mask: np.ndarray, block_size):
    """Loop over the block grid (edge blocks partial) of one spatial mask; yields the set of values in each block."""
    ranges = [[(s, min(s + b, size)) for s in range(0, size, b)] for size, b in zip(mask.shape, block_size)]
    for corner in np.ndindex(*[len(r) for r in ranges]):
        sl = tuple(slice(*ranges[ax][k]) for ax, k in enumerate(corner))
        yield np.unique(mask[sl])


@pytest.mark.parametrize("shape,block", [((4, 2, 37, 50), (16, 16)), ((3, 1, 9, 20, 17), (4, 8, 5)),
                                         ((2, 1, 32, 32), (16, 16)), ((2, 1, 5, 6, 7), (1, 2, 3))])
def test_masks_are_complementary_blockwise_and_half(shape, block):
    m_a, m_b = complementary_block_masks(shape, block, generator=torch.Generator().manual_seed(1))
    assert m_a.shape == m_b.shape == (shape[0], 1, *shape[2:]) and m_a.dtype == torch.float32
    assert torch.equal(m_a + m_b, torch.ones_like(m_a))
    n_blocks = math.prod(math.ceil(s / b) for s, b in zip(shape[2:], block))
    for img in m_a[:, 0].numpy():
        values = list(_block_values(img, block))
        assert len(values) == n_blocks and all(len(v) == 1 for v in values)  # every block constant
        assert sum(v[0] == 0 for v in values) == n_blocks // 2
    flat = m_a.flatten(1)
    assert all(not torch.equal(flat[i], flat[j]) for i in range(len(flat)) for j in range(i))


def test_masks_reproducible_with_generator_and_device_arg():
    shape, block = (2, 1, 8, 8, 8), (2, 2, 2)
    a1, _ = complementary_block_masks(shape, block, generator=torch.Generator().manual_seed(7))
    a2, _ = complementary_block_masks(shape, block, generator=torch.Generator().manual_seed(7), device="cpu")
    a3, _ = complementary_block_masks(shape, block, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a1, a2) and not torch.equal(a1, a3)


def test_bad_block_sizes_raise():
    with pytest.raises(ValueError, match="one entry per spatial axis"):
        complementary_block_masks((1, 1, 8, 8), (4, 4, 4))
    with pytest.raises(ValueError, match=">= 1"):
        complementary_block_masks((1, 1, 8, 8), (4, 0))
    with pytest.raises(ValueError, match="B, C"):
        complementary_block_masks((1, 8), (4,))


def test_default_block_size():
    assert default_block_size((256, 224)) == (16, 16)
    assert default_block_size((20, 256, 256)) == (10, 16, 16)
    assert default_block_size((3, 2, 1)) == (2, 1, 1)
    for patch in [(2, 3, 31, 33), (5, 64, 17)]:
        assert all(math.ceil(p / b) >= 2 for p, b in zip(patch, default_block_size(patch)))


# ----------------------------------------------------------------------------------------------- InfoNCE

def _info_nce_loops(z_a: np.ndarray, z_b: np.ndarray, tau: float) -> float:
    """Eq. 2 recomputed with plain loops: 2N anchors, cosine similarities, denominator over all j != anchor."""
    feats = list(z_a) + list(z_b)
    n = len(z_a)
    cos = lambda u, v: float(np.dot(u, v) / (np.sqrt(np.dot(u, u)) * np.sqrt(np.dot(v, v))))
    total = 0.0
    for k in range(2 * n):
        pos = (k + n) % (2 * n)
        denom = sum(math.exp(cos(feats[k], feats[j]) / tau) for j in range(2 * n) if j != k)
        total += -math.log(math.exp(cos(feats[k], feats[pos]) / tau) / denom)
    return total / (2 * n)


@pytest.mark.parametrize("n,d,tau", [(1, 3, 0.07), (2, 5, 0.07), (5, 8, 0.5), (8, 16, 1.0), (3, 1000, 0.2)])
def test_info_nce_equals_loop_recomputation(n, d, tau):
    rng = np.random.default_rng(n * 100 + d)
    a, b = rng.normal(size=(n, d)), rng.normal(size=(n, d))
    got = info_nce(torch.from_numpy(a), torch.from_numpy(b), temperature=tau).item()
    assert got == pytest.approx(_info_nce_loops(a, b, tau), rel=1e-10, abs=1e-12)
    assert InfoNCELoss(tau)(torch.from_numpy(a), torch.from_numpy(b)).item() == pytest.approx(got, rel=1e-12)
    if n == 1:
        assert got == pytest.approx(0.0, abs=1e-12)  # the denominator holds only the positive


def test_info_nce_is_scale_invariant():
    z_a, z_b = torch.randn(4, 6, dtype=torch.float64), torch.randn(4, 6, dtype=torch.float64)
    scale = torch.tensor([[0.1], [3.0], [17.0], [1e-3]], dtype=torch.float64)
    assert info_nce(z_a * scale, z_b * 5.0).item() == pytest.approx(info_nce(z_a, z_b).item(), rel=1e-10)


def test_info_nce_aligned_positives_orthogonal_negatives():
    # z_a = z_b = e_i: sim(pos) = 1, the 2(N-1) negatives have sim 0 -> loss = -log(e^{1/t} / (e^{1/t} + 2(N-1)))
    n, tau = 3, 0.5
    eye = torch.eye(n, dtype=torch.float64)
    expected = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + 2 * (n - 1)))
    assert info_nce(eye, 2 * eye, temperature=tau).item() == pytest.approx(expected, rel=1e-12)


def test_info_nce_gradient_reaches_both_inputs_and_validation():
    z_a = torch.randn(4, 8, requires_grad=True)
    z_b = torch.randn(4, 8, requires_grad=True)
    info_nce(z_a, z_b).backward()
    assert z_a.grad.abs().sum() > 0 and z_b.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="differ in shape"):
        info_nce(torch.zeros(2, 3), torch.zeros(3, 3))
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        info_nce(torch.zeros(2, 3, 1), torch.zeros(2, 3, 1))
    with pytest.raises(ValueError, match="N >= 1"):
        info_nce(torch.zeros(0, 3), torch.zeros(0, 3))
    with pytest.raises(ValueError, match="temperature"):
        info_nce(torch.ones(2, 3), torch.ones(2, 3), temperature=0.0)
    with pytest.raises(ValueError, match="temperature"):
        InfoNCELoss(temperature=-1)


# --- gathered over 2 gloo ranks

WORLD, N_LOCAL, DIM, TAU = 2, 3, 5, 0.2


def _global_batch():
    gen = torch.Generator().manual_seed(123)
    return (torch.randn(WORLD * N_LOCAL, DIM, generator=gen, dtype=torch.float64),
            torch.randn(WORLD * N_LOCAL, DIM, generator=gen, dtype=torch.float64))


def _ddp_worker(rank: int, port: int, out_dir: str):
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        g_a, g_b = _global_batch()
        rows = slice(rank * N_LOCAL, (rank + 1) * N_LOCAL)
        z_a = g_a[rows].clone().requires_grad_(True)
        z_b = g_b[rows].clone().requires_grad_(True)
        loss = info_nce(z_a, z_b, temperature=TAU, gather_distributed=True)
        loss.backward()
        torch.save({"loss": loss.detach(), "grad_a": z_a.grad, "grad_b": z_b.grad}, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()



def test_info_nce_gathered_over_two_ranks_matches_global_batch(tmp_path):
    mp.spawn(_ddp_worker, args=(free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]

    g_a, g_b = (t.clone().requires_grad_(True) for t in _global_batch())
    global_loss = info_nce(g_a, g_b, temperature=TAU)
    global_loss.backward()

    mean_over_ranks = sum(r["loss"] for r in results) / WORLD
    assert abs(mean_over_ranks.item() - global_loss.item()) < 1e-6
    for rank, res in enumerate(results):  # the gather took effect: not the loss of the local rows alone
        rows = slice(rank * N_LOCAL, (rank + 1) * N_LOCAL)
        local_only = info_nce(g_a[rows].detach(), g_b[rows].detach(), temperature=TAU)
        assert res["loss"].item() != pytest.approx(local_only.item(), rel=1e-3)
    # The gather's backward sums every rank's loss into each slot, so rank r's input gradient is
    # d(sum_r' L_r')/dz_r = d(WORLD * L_global)/dz_r: WORLD times its rows of the single-process gradient.
    # DDP's averaging over ranks then recovers the single-process parameter gradient exactly.
    for rank, res in enumerate(results):
        rows = slice(rank * N_LOCAL, (rank + 1) * N_LOCAL)
        torch.testing.assert_close(res["grad_a"], WORLD * g_a.grad[rows], rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(res["grad_b"], WORLD * g_b.grad[rows], rtol=1e-9, atol=1e-12)


# ----------------------------------------------------------------------------------------------- reconstruction

@pytest.mark.parametrize("shape", [(3, 2, 7, 9), (2, 1, 4, 5, 6)])
def test_reconstruction_loss_equals_numpy_eq1(shape):
    rng = np.random.default_rng(len(shape))
    x, ra, rb = (rng.normal(size=shape) for _ in range(3))
    n, per_image_elems = shape[0], math.prod(shape[1:])
    # eq. 1: 1/(2N) sum_i (||X_i - Xa_i||^2 + ||X_i - Xb_i||^2)
    literal = sum(np.sum((x[i] - ra[i]) ** 2) + np.sum((x[i] - rb[i]) ** 2) for i in range(n)) / (2 * n)
    args = [torch.from_numpy(t) for t in (x, ra, rb)]
    assert masked_pair_reconstruction_loss(*args, reduction="sum_per_image").item() == pytest.approx(literal,
                                                                                                     rel=1e-12)
    assert masked_pair_reconstruction_loss(*args).item() == pytest.approx(literal / per_image_elems, rel=1e-12)
    assert masked_pair_reconstruction_loss(*args).item() == pytest.approx(
        0.5 * (np.mean((x - ra) ** 2) + np.mean((x - rb) ** 2)), rel=1e-12)


def test_reconstruction_loss_validation():
    x = torch.zeros(2, 1, 4, 4)
    with pytest.raises(ValueError, match="reduction"):
        masked_pair_reconstruction_loss(x, x, x, reduction="sum")
    with pytest.raises(ValueError, match="match the image shape"):
        masked_pair_reconstruction_loss(x, x, torch.zeros(2, 1, 4, 5))


# ----------------------------------------------------------------------------------------------- projection head

@pytest.mark.parametrize("spatial", [(5, 6), (3, 4, 5)])
def test_projection_head_shapes_and_true_mean_pooling(spatial):
    torch.manual_seed(0)
    head = ProjectionHead(8, hidden_dim=16, out_dim=12)
    assert head(torch.randn(3, 8, *spatial)).shape == (3, 12)
    assert ProjectionHead(8).mlp[-1].out_features == 1000 and ProjectionHead(8).mlp[0].out_features == 8
    values = torch.randn(2, 8)
    constant_map = values.view(2, 8, *[1] * len(spatial)).expand(2, 8, *spatial)
    torch.testing.assert_close(head(constant_map), head(values.view(2, 8, *[1] * len(spatial))))
    x = torch.randn(2, 8, *spatial)
    torch.testing.assert_close(head(x), head.mlp(x.reshape(2, 8, -1).mean(-1)))
    with pytest.raises(ValueError, match="feature map"):
        head(torch.randn(2, 7, *spatial))
    with pytest.raises(ValueError, match="in_channels"):
        ProjectionHead(0)
