"""IDEAL pieces (Basak et al., ICASSP 2023, arXiv:2210.15075): the dense local contrastive loss (eq. 2) and the global
loss (eq. 1) against NumPy loop recomputations (single process and gathered over 2 gloo ranks), the view
correspondence under crops and flips against a brute-force match of voxel sets, and the two-decoder network (Fig. 2b):
up-sampling module types, shapes in 2D and 3D, the fused eval output, and encoder-only loading."""
import math

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunet_semi.augmentation.crop_flip import (CropFlip, apply_crop_flip, crop_flip_correspondence,
                                                default_crop_size, random_crop_flip)
from nnunet_semi.losses.dense_contrastive import dense_local_contrastive_loss, global_contrastive_loss
from nnunet_semi.networks.dual import fuse_softmax_logits
from nnunet_semi.pretrained.loading import load_pretrained_networks
from nnunet_semi.networks.two_decoder import InterpolationUpsampling, build_two_decoder_network
from tests.helpers import free_port


# ------------------------------------------------------------------------------- loss: NumPy loop recomputation

def _loop_loss(q, k, index, tau):
    """Eq. 2 by loops: per image, mean over query locations with a positive of
    -log(e^{q.k+/tau} / (e^{q.k+/tau} + sum over all key locations of the other images e^{q.k-/tau})), cosine
    similarity; then the mean over images."""
    q = q.reshape(q.shape[0], q.shape[1], -1)
    k = k.reshape(k.shape[0], k.shape[1], -1)
    unit = lambda v: v / np.linalg.norm(v)  # noqa: E731
    per_image = []
    for b in range(q.shape[0]):
        terms = []
        for i in range(q.shape[2]):
            if index[b, i] < 0:
                continue
            qi = unit(q[b, :, i])
            pos = math.exp(qi @ unit(k[b, :, index[b, i]]) / tau)
            neg = sum(math.exp(qi @ unit(k[c, :, j]) / tau) for c in range(k.shape[0]) if c != b
                      for j in range(k.shape[2]))
            terms.append(-math.log(pos / (pos + neg)))
        per_image.append(sum(terms) / len(terms))
    return sum(per_image) / len(per_image)


@pytest.mark.parametrize("grid_q,grid_k", [((3, 4), (3, 4)), ((2, 3), (4, 2)), ((2, 2, 3), (3, 2, 2))])
def test_dense_loss_equals_loop_recomputation(grid_q, grid_k):
    gen = torch.Generator().manual_seed(0)
    b, c, tau = 3, 5, 0.3
    q = torch.randn(b, c, *grid_q, generator=gen, dtype=torch.float64)
    k = torch.randn(b, c, *grid_k, generator=gen, dtype=torch.float64)
    lq, lk = math.prod(grid_q), math.prod(grid_k)
    index = torch.randint(0, lk, (b, lq), generator=gen)
    index[torch.rand(b, lq, generator=gen) < 0.4] = -1  # locations outside the overlap
    index[:, 0] = torch.randint(0, lk, (b,), generator=gen)  # every image keeps at least one positive
    loss = dense_local_contrastive_loss(q, k, index, temperature=tau)
    assert loss.item() == pytest.approx(_loop_loss(q.numpy(), k.numpy(), index.numpy(), tau), rel=1e-10)


def test_global_loss_is_eq_1_on_pooled_features():
    gen = torch.Generator().manual_seed(1)
    q, k = torch.randn(4, 6, 3, 5, generator=gen, dtype=torch.float64), torch.randn(4, 6, 2, 2, generator=gen,
                                                                                       dtype=torch.float64)
    tau = 0.5
    gq, gk = q.numpy().mean((2, 3)), k.numpy().mean((2, 3))
    gq, gk = gq / np.linalg.norm(gq, axis=1, keepdims=True), gk / np.linalg.norm(gk, axis=1, keepdims=True)
    expected = np.mean([-math.log(math.exp(gq[i] @ gk[i] / tau) / sum(math.exp(gq[i] @ gk[j] / tau)
                                                                         for j in range(4))) for i in range(4)])
    assert global_contrastive_loss(q, k, tau).item() == pytest.approx(expected, rel=1e-10)


def test_dense_loss_properties_and_errors():
    q = torch.randn(2, 4, 3, 3)
    perfect = dense_local_contrastive_loss(q, q.clone(), torch.arange(9).repeat(2, 1), temperature=0.01)
    shuffled = dense_local_contrastive_loss(q, q.flip(-1), torch.arange(9).repeat(2, 1), temperature=0.01)
    assert perfect < shuffled
    assert dense_local_contrastive_loss(q[:1], q[:1], torch.zeros(1, 9, dtype=torch.long)).item() == 0.0  # no negatives
    half = dense_local_contrastive_loss(q.half(), q.half(), torch.arange(9).repeat(2, 1))
    assert half.dtype == torch.float32
    with pytest.raises(ValueError, match="at least one"):
        dense_local_contrastive_loss(q, q, torch.full((2, 9), -1))
    with pytest.raises(ValueError, match=r"\(B, L_q\)"):
        dense_local_contrastive_loss(q, q, torch.zeros(2, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="key locations"):
        dense_local_contrastive_loss(q, q, torch.full((2, 9), 9))
    with pytest.raises(ValueError, match="temperature"):
        dense_local_contrastive_loss(q, q, torch.zeros(2, 9, dtype=torch.long), temperature=0)
    with pytest.raises(ValueError, match="equal B and C"):
        dense_local_contrastive_loss(q, q[:, :3], torch.zeros(2, 9, dtype=torch.long))


# ------------------------------------------------------------------------ correspondence under crops and flips

def _coordinate_image(patch):
    """(1, ndim, *patch): channel a holds the voxel's coordinate along axis a (identifies every voxel)."""
    grids = np.meshgrid(*[np.arange(p) for p in patch], indexing="ij")
    return torch.from_numpy(np.stack(grids)[None].astype(np.float64))


def _cell_voxel_sets(view_coords, stride):
    """Brute force: for each feature cell of a view (row-major), the set of patch voxels it covers."""
    ndim = len(stride)
    cells = [s // st for s, st in zip(view_coords.shape[1:], stride)]
    out = []
    for cell in np.ndindex(*cells):
        region = (slice(None),) + tuple(slice(c * st, (c + 1) * st) for c, st in zip(cell, stride))
        block = view_coords[region].reshape(ndim, -1).T
        out.append(frozenset(map(tuple, block.astype(int).tolist())))
    return out


@pytest.mark.parametrize("patch,stride,crop_q,crop_k", [((56, 40), (8, 8), (40, 32), (40, 32)),
                                                        ((24, 16), (4, 2), (16, 10), (12, 16)),
                                                        ((8, 12, 16), (2, 4, 4), (6, 8, 12), (8, 8, 8))])
def test_correspondence_matches_voxel_sets_under_crops_and_flips(patch, stride, crop_q, crop_k):
    torch.manual_seed(0)
    batch = 6
    x = _coordinate_image(patch).expand(batch, -1, *patch)
    view_q = random_crop_flip(batch, patch, crop_q, stride)
    view_k = random_crop_flip(batch, patch, crop_k, stride)
    view_q.flip[0], view_k.flip[0] = True, False  # both flip states present in every test
    view_q.flip[1], view_k.flip[1] = False, True
    index = crop_flip_correspondence(view_q, view_k, stride)
    x_q, x_k = apply_crop_flip(x, view_q), apply_crop_flip(x, view_k)
    assert x_q.shape[2:] == crop_q and x_k.shape[2:] == crop_k
    matched = 0
    for b in range(batch):
        sets_q, sets_k = _cell_voxel_sets(x_q[b].numpy(), stride), _cell_voxel_sets(x_k[b].numpy(), stride)
        for i, cell in enumerate(sets_q):
            expected = [j for j, other in enumerate(sets_k) if other == cell]
            assert all(not (cell & other) for other in sets_k if other != cell)  # cells never partially overlap
            assert index[b, i].item() == (expected[0] if expected else -1), (b, i)
            matched += bool(expected)
    assert matched > 0
    # the features that correspond are those of the same voxels: pooled coordinates agree exactly
    pool = F.avg_pool2d if len(patch) == 2 else F.avg_pool3d
    f_q, f_k = pool(x_q, stride).flatten(2), pool(x_k, stride).flatten(2)
    for b in range(batch):
        valid = index[b] >= 0
        torch.testing.assert_close(f_q[b][:, valid], f_k[b][:, index[b][valid]], rtol=0, atol=0)


def test_random_views_are_on_the_stride_grid_and_always_overlap():
    torch.manual_seed(3)
    patch, stride = (56, 40), (8, 8)
    crop = default_crop_size(patch, stride)
    assert crop == (40, 32)
    for _ in range(20):
        view_q, view_k = (random_crop_flip(16, patch, crop, stride) for _ in range(2))
        for view in (view_q, view_k):
            assert (view.offset % torch.tensor(stride) == 0).all()
            assert ((view.offset >= 0) & (view.offset + torch.tensor(crop) <= torch.tensor(patch))).all()
        assert (crop_flip_correspondence(view_q, view_k, stride) >= 0).any(1).all()
    assert default_crop_size((40, 56, 40), (8, 8, 8), fraction=0.1) == (24, 32, 24)  # at least half + 1 cell
    assert default_crop_size((8, 16), (8, 8)) == (8, 16)
    flips = random_crop_flip(200, patch, crop, stride, flip_axes=[1]).flip
    assert not flips[:, 0].any() and flips[:, 1].any()
    with pytest.raises(ValueError, match="multiple of the stride"):
        random_crop_flip(2, patch, (36, 32), stride)
    with pytest.raises(ValueError, match="multiples of the stride"):
        crop_flip_correspondence(CropFlip(torch.tensor([[4, 0]]), torch.zeros(1, 2, dtype=torch.bool), (40, 32)),
                                 CropFlip(torch.zeros(1, 2, dtype=torch.long), torch.zeros(1, 2, dtype=torch.bool),
                                          (40, 32)), stride)


# ------------------------------------------------------------------------------- gathered over 2 gloo ranks

WORLD, N_LOCAL, DIM, GRID, TAU = 2, 2, 4, (2, 3), 0.2


def _global_batch():
    gen = torch.Generator().manual_seed(7)
    q = torch.randn(WORLD * N_LOCAL, DIM, *GRID, generator=gen, dtype=torch.float64)
    k = torch.randn(WORLD * N_LOCAL, DIM, *GRID, generator=gen, dtype=torch.float64)
    index = torch.randint(-1, 6, (WORLD * N_LOCAL, 6), generator=gen)
    index[:, 0] = 2
    return q, k, index


def _ddp_worker(rank: int, port: int, out_dir: str):
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        g_q, g_k, g_index = _global_batch()
        rows = slice(rank * N_LOCAL, (rank + 1) * N_LOCAL)
        q, k = g_q[rows].clone().requires_grad_(True), g_k[rows].clone().requires_grad_(True)
        loss = dense_local_contrastive_loss(q, k, g_index[rows], temperature=TAU, gather_distributed=True)
        loss.backward()
        torch.save({"loss": loss.detach(), "grad_q": q.grad, "grad_k": k.grad}, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()



def test_dense_loss_gathered_over_two_ranks_matches_global_batch(tmp_path):
    mp.spawn(_ddp_worker, args=(free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    g_q, g_k, g_index = _global_batch()
    g_q.requires_grad_(True)
    g_k.requires_grad_(True)
    global_loss = dense_local_contrastive_loss(g_q, g_k, g_index, temperature=TAU)
    global_loss.backward()
    assert sum(r["loss"] for r in results).item() / WORLD == pytest.approx(global_loss.item(), rel=1e-12)
    for rank, res in enumerate(results):
        rows = slice(rank * N_LOCAL, (rank + 1) * N_LOCAL)
        local_only = dense_local_contrastive_loss(g_q[rows].detach(), g_k[rows].detach(), g_index[rows], TAU)
        assert res["loss"].item() != pytest.approx(local_only.item(), rel=1e-3)  # the other rank's negatives count
        # the gather's backward sums all ranks' losses: WORLD x the single-process gradient (DDP averages it back)
        torch.testing.assert_close(res["grad_q"], WORLD * g_q.grad[rows], rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(res["grad_k"], WORLD * g_k.grad[rows], rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------------------------------- two-decoder network

def _plans(ndim: int) -> PlansManager:
    """Minimal nnU-Net plans with one small PlainConvUNet configuration ('cfg') of ``ndim`` dimensions."""
    conv, norm = ("torch.nn.modules.conv.Conv2d", "torch.nn.modules.instancenorm.InstanceNorm2d") if ndim == 2 else \
        ("torch.nn.modules.conv.Conv3d", "torch.nn.modules.instancenorm.InstanceNorm3d")
    strides = [[1] * ndim, [2] * ndim, [2] * ndim] if ndim == 2 else [[1, 1, 1], [1, 2, 2], [2, 2, 2]]
    kernels = [[3] * ndim] * 3 if ndim == 2 else [[1, 3, 3], [3, 3, 3], [3, 3, 3]]
    arch = {"network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
            "arch_kwargs": {"n_stages": 3, "features_per_stage": [4, 8, 16], "conv_op": conv, "kernel_sizes": kernels,
                            "strides": strides, "n_conv_per_stage": [1, 1, 1], "n_conv_per_stage_decoder": [1, 1],
                            "conv_bias": True, "norm_op": norm, "norm_op_kwargs": {"eps": 1e-5, "affine": True},
                            "dropout_op": None, "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
                            "nonlin_kwargs": {"inplace": True}},
            "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]}
    patch = [16, 12] if ndim == 2 else [8, 16, 12]
    return PlansManager({"dataset_name": "Dataset999_Test", "plans_name": "p", "configurations": {
        "cfg": {"data_identifier": "x", "preprocessor_name": "DefaultPreprocessor", "batch_size": 2,
                "patch_size": patch, "spacing": [1.0] * ndim, "architecture": arch}}})


def _two_decoder(ndim: int, deep_supervision: bool = True):
    plans = _plans(ndim)
    cm = plans.get_configuration("cfg")
    return build_two_decoder_network(plans, cm, 1, 3, deep_supervision), cm.patch_size


@pytest.mark.parametrize("ndim", [2, 3])
def test_two_decoders_differ_in_upsampling_and_give_the_planned_shapes(ndim):
    torch.manual_seed(0)
    net, patch = _two_decoder(ndim)
    transposed = nn.ConvTranspose2d if ndim == 2 else nn.ConvTranspose3d
    assert [type(m) for m in net.decoder_1.transpconvs] == [transposed] * 2
    assert [type(m) for m in net.decoder_2.transpconvs] == [InterpolationUpsampling] * 2
    assert not any(isinstance(m, transposed) for m in net.decoder_2.modules())
    assert {m.mode for m in net.decoder_2.transpconvs} == {"bilinear" if ndim == 2 else "trilinear"}
    for s, (up_1, up_2) in enumerate(zip(net.decoder_1.transpconvs, net.decoder_2.transpconvs)):
        # scale = the transposed convolution's stride, kernel = that of the decoder stage fed (anisotropic in 3D)
        assert up_2.scale_factor == tuple(float(v) for v in up_1.stride)
        assert up_2.conv.kernel_size == net.decoder_2.stages[s].convs[0].conv.kernel_size
        assert (up_2.conv.in_channels, up_2.conv.out_channels) == (up_1.in_channels, up_1.out_channels)
    if ndim == 3:
        assert net.decoder_2.transpconvs[1].scale_factor == (1.0, 2.0, 2.0)
        assert net.decoder_2.transpconvs[1].conv.kernel_size == (1, 3, 3)
    # one shared encoder, no stray copy of the second planned network's encoder
    encoder_params = {id(p) for p in net.encoder.parameters()}
    decoder_params = [{id(p) for n, p in d.named_parameters() if not n.startswith("encoder.")} for d in net.decoders]
    assert {id(p) for p in net.parameters()} == encoder_params | decoder_params[0] | decoder_params[1]
    assert net.decoder_1.encoder is net.encoder and net.decoder_2.encoder is net.encoder
    # independently initialised decoders
    assert not torch.equal(net.decoder_1.stages[0].convs[0].conv.weight, net.decoder_2.stages[0].convs[0].conv.weight)

    x = torch.randn(2, 1, *patch)
    out_1, out_2 = net(x)
    expected, size = [], list(patch)
    for stride in ([1] * ndim, [2] * ndim) if ndim == 2 else ([1, 1, 1], [1, 2, 2]):
        size = [s // st for s, st in zip(size, stride)]
        expected.append((2, 3, *size))
    assert [tuple(o.shape) for o in out_1] == [tuple(o.shape) for o in out_2] == expected
    assert not torch.allclose(out_1[0], out_2[0])
    out_1[0].sum().backward()  # decoder 2 is not in this graph; the shared encoder is
    assert net.encoder.stages[0][0].convs[0].conv.weight.grad is not None
    assert all(p.grad is None for n, p in net.decoder_2.named_parameters() if not n.startswith("encoder."))


@pytest.mark.parametrize("ndim", [2, 3])
def test_eval_returns_the_fused_logits(ndim):
    torch.manual_seed(1)
    net, patch = _two_decoder(ndim)
    x = torch.randn(2, 1, *patch)
    net.eval()
    with torch.no_grad():
        fused_ds = net(x)
        net.set_deep_supervision(False)
        fused = net(x)
        skips = net.encoder(x)
        d1, d2 = net.decoder_1(skips), net.decoder_2(skips)
    assert isinstance(fused_ds, list) and len(fused_ds) == 2 and torch.allclose(fused_ds[0], fused)
    assert isinstance(fused, torch.Tensor) and fused.shape == (2, 3, *patch)
    torch.testing.assert_close(torch.softmax(fused, 1), 0.5 * (torch.softmax(d1, 1) + torch.softmax(d2, 1)))
    torch.testing.assert_close(fused, fuse_softmax_logits([d1, d2]))
    # the predictor builds without deep supervision and loads the trained weights strictly
    predictor_net, _ = _two_decoder(ndim, deep_supervision=False)
    predictor_net.load_state_dict(net.state_dict())


def test_encoder_only_loading_leaves_the_decoders_alone(tmp_path):
    torch.manual_seed(2)
    net, _ = _two_decoder(2)
    source, _ = _two_decoder(2)
    pretrained = {k: v for k, v in source.state_dict().items() if k.startswith("encoder.")}
    torch.save({"network_weights": pretrained}, tmp_path / "encoder.pth")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    loaded = load_pretrained_networks(net, str(tmp_path / "encoder.pth"), skip=("decoder_1.", "decoder_2."))
    assert sorted(loaded) == sorted(pretrained)
    after = net.state_dict()
    for key, value in after.items():
        encoder_key = key.split(".", 1)[1] if key.startswith(("decoder_1.encoder.", "decoder_2.encoder.")) else key
        if encoder_key.startswith("encoder."):  # the encoder and its aliases inside the decoders
            assert torch.equal(value, pretrained[encoder_key]), key
        else:
            assert torch.equal(value, before[key]), key
    assert not torch.equal(before["encoder.stages.0.0.convs.0.conv.weight"],
                           after["encoder.stages.0.0.convs.0.conv.weight"])


# ------------------------------------------------------------------------------------------ pretraining pieces

@pytest.mark.parametrize("ndim", [2, 3])
def test_projection_head_is_a_1x1_convolution_giving_dense_features(ndim):
    from pretraining.ideal import IDEALModel

    net, patch = _two_decoder(ndim)
    model = IDEALModel(net.encoder, projection_dim=7)
    assert isinstance(model.head, nn.Conv2d if ndim == 2 else nn.Conv3d) and model.head.kernel_size == (1,) * ndim
    assert [n for n, _ in model.named_children()] == ["encoder", "head"]  # no pooling, no MLP
    stride = np.prod([[1] * ndim, [2] * ndim, [2] * ndim] if ndim == 2 else [[1, 1, 1], [1, 2, 2], [2, 2, 2]], 0)
    assert model(torch.randn(2, 1, *patch)).shape == (2, 7, *(p // s for p, s in zip(patch, stride)))


def test_ideal_is_registered_with_the_paper_defaults():
    import inspect

    from nnunet_semi.training import TRAINERS
    from pretraining.cli import PRETRAINERS
    from pretraining.ideal import IDEALPretrainer

    assert PRETRAINERS["ideal"] is IDEALPretrainer
    params = inspect.signature(IDEALPretrainer.__init__).parameters
    assert params["learning_rate"].default == 1e-5  # Sec. 3.1: Adam, 1e-5
    assert params["global_weight"].default == 0.0  # eq. 2 alone
    assert {"nnUNetTrainerIDEAL", "nnUNetTrainerIDEAL_4epochs_10its"} <= set(TRAINERS)
