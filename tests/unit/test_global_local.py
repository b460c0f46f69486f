"""Global + local contrastive pretraining pieces (Chaitanya et al. 2020, the "PI." of Chaitanya et al. 2023):
region vectors and the local region loss against loop recomputations, the choice of the local decoder stage, and
the model's two stages on 2D and 3D planned U-Nets (encoder frozen in the local stage)."""
import math

import numpy as np
import pytest
import torch

from nnunet_semi.losses.global_local import local_region_contrastive_loss, region_vectors
from pretraining.global_local import GlobalLocalModel, default_local_stage


@pytest.mark.parametrize("ndim", [2, 3])
def test_region_vectors_are_the_flattened_blocks(ndim):
    spatial = (7, 6) if ndim == 2 else (4, 7, 6)
    f = torch.randn(2, 3, *spatial, dtype=torch.float64)
    k = 3 if ndim == 2 else (2, 3, 3)
    r = region_vectors(f, k)
    ks = [k] * ndim if isinstance(k, int) else list(k)
    grid = [s // v for s, v in zip(spatial, ks)]
    assert r.shape == (2, int(np.prod(grid)), 3 * int(np.prod(ks)))
    for b in range(2):
        for index, cell in enumerate(np.ndindex(*grid)):
            block = f[(b, slice(None)) + tuple(slice(c * v, (c + 1) * v) for c, v in zip(cell, ks))]
            assert torch.equal(r[b, index], block.reshape(-1))


def _nt_xent_loop(a, b, tau):
    """NT-Xent over the 2R vectors of one image, every vector an anchor, its pair in the other view positive."""
    vectors = [v / np.linalg.norm(v) for v in np.concatenate([a, b])]
    n = len(a)
    losses = []
    for i, v in enumerate(vectors):
        positive = (i + n) % (2 * n)
        den = sum(math.exp(float(v @ w) / tau) for j, w in enumerate(vectors) if j != i)
        losses.append(-math.log(math.exp(float(v @ vectors[positive]) / tau) / den))
    return sum(losses) / len(losses)


@pytest.mark.parametrize("ndim", [2, 3])
def test_local_region_loss_equals_loop_recomputation(ndim):
    g = torch.Generator().manual_seed(0)
    spatial = (6, 9) if ndim == 2 else (3, 6, 6)
    f_a = torch.randn(3, 4, *spatial, generator=g, dtype=torch.float64)
    f_b = f_a + 0.3 * torch.randn(f_a.shape, generator=g, dtype=torch.float64)
    loss = local_region_contrastive_loss(f_a, f_b, 3, temperature=0.1)
    r_a, r_b = region_vectors(f_a, 3).numpy(), region_vectors(f_b, 3).numpy()
    expected = np.mean([_nt_xent_loop(r_a[i], r_b[i], 0.1) for i in range(3)])
    assert loss.item() == pytest.approx(expected, rel=1e-10)
    # matching views give a lower loss than unrelated ones
    assert loss.item() < local_region_contrastive_loss(f_a, torch.randn(f_a.shape, generator=g,
                                                                        dtype=torch.float64)).item()
    with pytest.raises(ValueError, match="at least 2"):
        local_region_contrastive_loss(f_a[..., :3, :3], f_b[..., :3, :3], 3)


def test_default_local_stage_is_the_quarter_resolution():
    assert default_local_stage([[1, 1], [2, 2], [2, 2], [2, 2], [2, 2], [2, 2]]) == 2  # 2020 paper: l = 3 of 5
    assert default_local_stage([[1, 1], [2, 2], [2, 2], [2, 2]]) == 0
    assert default_local_stage([[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]]) == 0  # 3D: strides (2, 4, 4)
    assert default_local_stage([[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2]]) == 1
    assert default_local_stage([[1, 1], [8, 8], [2, 2]]) == 1  # only the full-resolution stage is at <= 4


@pytest.mark.parametrize("ndim", [2, 3])
def test_model_stages_and_frozen_encoder(ndim):
    from dynamic_network_architectures.architectures.unet import PlainConvUNet

    from nnunet_semi.networks.contrastive_head import NormedLocalProjectionHead
    from nnunet_semi.networks.heads import ProjectionHead

    conv, norm = (torch.nn.Conv2d, torch.nn.InstanceNorm2d) if ndim == 2 else (torch.nn.Conv3d,
                                                                               torch.nn.InstanceNorm3d)
    unet = PlainConvUNet(1, 3, (4, 8, 16), conv, 3, (1, 2, 2), (1, 1, 1), 3, (1, 1), True, norm, {"affine": True},
                         nonlin=torch.nn.LeakyReLU)
    model = GlobalLocalModel(unet, ProjectionHead(16, out_dim=8),
                             NormedLocalProjectionHead(conv, norm, {"affine": True}, 8, 8), local_stage=0)
    x = torch.randn(2, 1, *([16, 12] if ndim == 2 else [8, 16, 12]))
    z = model(x, "global")
    assert z.shape == (2, 8)
    z.sum().backward()
    assert unet.encoder.stages[0][0].convs[0].conv.weight.grad is not None
    assert all(p.grad is None for p in model.local_head.parameters())
    model.zero_grad(set_to_none=True)
    f = model(x, "local")
    assert f.shape == (2, 8, *[s // 2 for s in x.shape[2:]])  # decoder stage 0 = half resolution here
    f.sum().backward()
    assert all(p.grad is None for p in unet.encoder.parameters())  # frozen
    assert unet.decoder.stages[0].convs[0].conv.weight.grad is not None
    assert all(p.grad is None for p in unet.decoder.stages[1].parameters())  # after l: not pretrained
    assert set(k.split(".")[0] for k in unet.state_dict()) == {"encoder", "decoder"}


def test_registered_by_name():
    from nnunet_semi.training import TRAINERS
    from pretraining.cli import PRETRAINERS
    from pretraining.global_local import GlobalLocalPretrainer

    assert PRETRAINERS["globallocal"] is GlobalLocalPretrainer and GlobalLocalPretrainer.method_name == "GlobalLocal"
    names = {"nnUNetTrainerPLContrast", "nnUNetTrainerPLContrast_intra", "nnUNetTrainerPLContrast_plInSeg",
             "nnUNetTrainerPLContrastPI"}
    assert all(n in TRAINERS and f"{n}_2epochs_5its" in TRAINERS for n in names)
    assert TRAINERS["nnUNetTrainerPLContrastPI"].pretraining_method == "GlobalLocal"
