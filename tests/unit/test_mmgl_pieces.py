"""MMGL pieces (Zhao et al., ICIP 2022, arXiv:2207.01883): multi-view slices against the volume, the
multi-scale global (Sec. 3.1) and local (Sec. 3.2) losses against NumPy loop recomputations, the augmentation's
geometry on image and labels, the multi-scale heads on a planned U-Net, and stage 3's deep-supervision weights."""
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet
from torch import nn

from nnunet_semi.data.multiview import VIEWS, MultiViewDataset, reslice
from nnunet_semi.losses.mmgl import (local_supervised_contrastive_loss, multi_scale_global_loss,
                                     multi_scale_local_loss, subsample_with_labels)
from nnunet_semi.training.mmgl import DICE_PORTFOLIOS, MMGL_VARIANTS, nnUNetTrainerMMGL
from pretraining.augment import augment_2d
from pretraining.cli import build_parser
from pretraining.mmgl import MultiScaleGlobalModel, MultiScaleLocalModel, scale_stages


# ------------------------------------------------------------------------------- multi-view slices

def test_views_of_an_isotropic_volume_are_its_slices():
    volume = np.random.default_rng(0).normal(size=(2, 5, 6, 7)).astype(np.float32)
    ax = reslice(volume, "transaxial", (1, 1, 1), (1, 1))
    co = reslice(volume, "coronal", (1, 1, 1), (1, 1))
    sa = reslice(volume, "sagittal", (1, 1, 1), (1, 1))
    assert ax.shape == (2, 5, 6, 7) and co.shape == (2, 6, 5, 7) and sa.shape == (2, 7, 5, 6)
    for z in range(5):
        np.testing.assert_array_equal(ax[:, z], volume[:, z, :, :])
    for y in range(6):
        np.testing.assert_array_equal(co[:, y], volume[:, :, y, :])
    for x in range(7):
        np.testing.assert_array_equal(sa[:, x], volume[:, :, :, x])


def test_views_of_an_anisotropic_volume_are_resampled_to_the_in_plane_spacing():
    """Z spacing 3 mm, in-plane 1 mm: coronal / sagittal slices get 3x as many rows along Z. On a linear ramp
    ``v = 10 z + y + 0.1 x`` linear interpolation (corners aligned) is exact, so every resampled pixel equals the ramp
    at its physical position; labels (nearest) keep their values."""
    z, y, x = np.meshgrid(np.arange(4), np.arange(5), np.arange(6), indexing="ij")
    volume = (10.0 * z + y + 0.1 * x)[None].astype(np.float64)
    co = reslice(volume, "coronal", (3.0, 1.0, 1.0), (1.0, 1.0))
    sa = reslice(volume, "sagittal", (3.0, 1.0, 1.0), (1.0, 1.0))
    assert co.shape == (1, 5, 12, 6) and sa.shape == (1, 6, 12, 5)
    z_new = np.linspace(0, 3, 12)  # corners aligned: first and last rows are the first and last slices
    for yi in range(5):
        np.testing.assert_allclose(co[0, yi], 10 * z_new[:, None] + yi + 0.1 * np.arange(6)[None], atol=1e-4)
    for xi in range(6):
        np.testing.assert_allclose(sa[0, xi], 10 * z_new[:, None] + np.arange(5)[None] + 0.1 * xi, atol=1e-4)
    seg = (z % 2)[None].astype(np.int8)
    seg_co = reslice(seg, "coronal", (3.0, 1.0, 1.0), (1.0, 1.0), is_seg=True)
    assert seg_co.dtype == np.int8 and set(np.unique(seg_co)) == {0, 1}
    np.testing.assert_array_equal(seg_co[0, 0, :, 0], np.repeat([0, 1, 0, 1], 3))  # 3 rows per 3 mm slice


class _InMemory:
    identifiers = ["a", "b"]

    def __init__(self):
        rng = np.random.default_rng(1)
        self.cases = {i: (rng.normal(size=(1, 3, 4, 5)).astype(np.float32), rng.integers(0, 3, (1, 3, 4, 5)))
                      for i in self.identifiers}

    def load_case(self, identifier):
        data, seg = self.cases[identifier]
        return data, seg, None, {"spacing": [2.0, 0.5, 0.5], "class_locations": {1: np.zeros((1, 4))}}


def test_multi_view_dataset_serves_every_view_of_every_case():
    source = _InMemory()
    dataset = MultiViewDataset(source, (0.5, 0.5))
    assert sorted(dataset.identifiers) == sorted(f"{v}|{c}" for v in VIEWS for c in ("a", "b"))
    data, seg, _, props = dataset.load_case("transaxial|a")
    np.testing.assert_array_equal(data, source.cases["a"][0])  # the main view is nnU-Net's own 2D slicing
    np.testing.assert_array_equal(seg, source.cases["a"][1])
    assert 1 in props["class_locations"]
    data, seg, _, props = dataset.load_case("sagittal|b")
    assert data.shape == (1, 5, 12, 4) and seg.shape == (1, 5, 12, 4) and props["class_locations"] == {}
    np.testing.assert_array_equal(seg[:, :, ::4], np.moveaxis(source.cases["b"][1], 3, 1))  # 4 rows per 2 mm
    with pytest.raises(ValueError, match="views must be"):
        MultiViewDataset(source, (0.5, 0.5), views=("axial",))


# ------------------------------------------------------------------------------- global loss (Sec. 3.1)

def _loop_nt_xent(a, b, tau):
    """SimCLR NT-Xent by loops: anchors = all 2N, denominator over every other feature, mean."""
    z = np.concatenate([a, b])
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    n2 = len(z)
    total = 0.0
    for i in range(n2):
        j = (i + n2 // 2) % n2
        den = sum(math.exp(z[i] @ z[k] / tau) for k in range(n2) if k != i)
        total += -math.log(math.exp(z[i] @ z[j] / tau) / den)
    return total / n2


def test_multi_scale_global_loss_equals_loop_recomputation():
    gen = torch.Generator().manual_seed(0)
    dims, weights, tau = (6, 9, 4), (0.2, 0.2, 0.6), 0.07
    z_1 = [torch.randn(5, d, generator=gen, dtype=torch.float64) for d in dims]
    z_2 = [torch.randn(5, d, generator=gen, dtype=torch.float64) for d in dims]
    total, per_scale = multi_scale_global_loss(z_1, z_2, weights, tau)
    expected = [_loop_nt_xent(a.numpy(), b.numpy(), tau) for a, b in zip(z_1, z_2)]
    assert [v.item() for v in per_scale] == pytest.approx(expected, rel=1e-9)
    assert total.item() == pytest.approx(sum(w * e for w, e in zip(weights, expected)), rel=1e-9)
    with pytest.raises(ValueError, match="one weight per scale"):
        multi_scale_global_loss(z_1, z_2, (0.5, 0.5), tau)


# ------------------------------------------------------------------------------- local loss (Sec. 3.2)

def _loop_local(features, labels, tau):
    """L_l^d by loops, as printed: per image, -1/|Omega| sum_i 1/|P(i)| log(sum_P e^{f_i.f_p/tau} / sum_N ...),
    cosine similarities, Omega = labelled points with >= 1 positive and >= 1 negative; mean over images."""
    b = features.shape[0]
    f = features.reshape(b, features.shape[1], -1)
    y = labels.reshape(b, -1)
    per_image = []
    for k in range(b):
        unit = f[k] / np.linalg.norm(f[k], axis=0, keepdims=True)
        terms = []
        for i in range(y.shape[1]):
            if y[k, i] < 0:
                continue
            pos = [p for p in range(y.shape[1]) if p != i and y[k, p] == y[k, i]]
            neg = [n for n in range(y.shape[1]) if y[k, n] >= 0 and y[k, n] != y[k, i]]
            if not pos or not neg:
                continue
            num = sum(math.exp(unit[:, i] @ unit[:, p] / tau) for p in pos)
            den = sum(math.exp(unit[:, i] @ unit[:, n] / tau) for n in neg)
            terms.append(math.log(num / den) / len(pos))
        per_image.append(-sum(terms) / len(terms) if terms else 0.0)
    return sum(per_image) / b


@pytest.mark.parametrize("spatial", [(3, 4), (2, 3, 2)])
def test_local_loss_equals_loop_recomputation(spatial):
    gen = torch.Generator().manual_seed(1)
    features = torch.randn(4, 5, *spatial, generator=gen, dtype=torch.float64)
    labels = torch.randint(-1, 3, (4, *spatial), generator=gen)
    labels[2] = 1  # one label only: no negatives, the image contributes 0
    loss = local_supervised_contrastive_loss(features, labels, 0.07)
    assert loss.item() == pytest.approx(_loop_local(features.numpy(), labels.numpy(), 0.07), rel=1e-9)
    loss_with_channel = local_supervised_contrastive_loss(features, labels[:, None], 0.07)
    assert loss_with_channel.item() == loss.item()


def test_local_loss_gradient_is_finite_and_rewards_label_clusters():
    labels = torch.tensor([[0, 0, 1, 1, 2, 2]]).view(1, 2, 3)
    clustered = torch.nn.functional.one_hot(labels, 3).permute(0, 3, 1, 2).double()  # features = labels
    features = torch.randn(1, 3, 2, 3, dtype=torch.float64, requires_grad=True)
    loss = local_supervised_contrastive_loss(features, labels, 0.07)
    loss.backward()
    assert torch.isfinite(features.grad).all()
    assert local_supervised_contrastive_loss(clustered, labels, 0.07) < loss


def test_multi_scale_local_loss_weights_and_subsampling():
    gen = torch.Generator().manual_seed(2)
    seg = torch.randint(0, 3, (2, 1, 16, 12), generator=gen)
    feats = [torch.randn(2, 4, 16 // s, 12 // s, generator=gen, dtype=torch.float64) for s in (4, 2, 1)]
    pairs = [subsample_with_labels(f, seg, 4) for f in feats]
    assert [tuple(f.shape[2:]) for f, _ in pairs] == [(1, 1), (2, 2), (4, 3)]
    f_full, y_full = pairs[2]
    torch.testing.assert_close(f_full, feats[2][:, :, ::4, ::4])
    assert torch.equal(y_full, seg[:, :, ::4, ::4])  # full resolution: the labels themselves, strided
    total, per_scale = multi_scale_local_loss([f for f, _ in pairs], [y for _, y in pairs], (0.2, 0.2, 0.6), 0.07)
    assert total.item() == pytest.approx(sum(w * v.item() for w, v in zip((0.2, 0.2, 0.6), per_scale)))
    assert per_scale[2].item() == pytest.approx(_loop_local(f_full.numpy(), y_full[:, 0].numpy(), 0.07), rel=1e-9)


# ------------------------------------------------------------------------------- augmentation and models

def test_augmentation_moves_labels_with_the_image():
    torch.manual_seed(0)
    seg = torch.zeros(3, 1, 32, 32, dtype=torch.int16)
    seg[:, :, 8:24, 10:20] = 1
    data = seg.float() * 5.0  # an image whose bright region is the label
    out, out_seg = augment_2d(data, seg)
    assert out.shape == data.shape and out_seg.shape == seg.shape and out_seg.dtype == seg.dtype
    assert set(out_seg.unique().tolist()) <= {-1, 0, 1}
    for b in range(3):  # the label region stays the bright region (up to noise and border pixels)
        inside, outside = out[b, 0][out_seg[b, 0] == 1], out[b, 0][out_seg[b, 0] == 0]
        assert inside.mean() > outside.mean() + 2
    with pytest.raises(ValueError, match="-c 2d"):
        augment_2d(torch.zeros(1, 1, 4, 4, 4))


def _unet(deep_supervision=False):
    return PlainConvUNet(1, 4, (4, 8, 16, 32), nn.Conv2d, 3, (1, 2, 2, 2), (1, 1, 1, 1), 3, (1, 1, 1), True,
                         nn.InstanceNorm2d, {"eps": 1e-5, "affine": True}, None, None, nn.LeakyReLU, {"inplace": True},
                         deep_supervision=deep_supervision)


def test_multi_scale_heads_on_a_planned_unet():
    net = _unet()
    x = torch.randn(2, 1, 32, 24)
    z = MultiScaleGlobalModel(net.encoder, [1, 2, 3], 128)(x)
    assert [tuple(t.shape) for t in z] == [(2, 128)] * 3
    local = MultiScaleLocalModel(net, [0, 1, 2], 128)
    feats = local(x)
    assert [tuple(f.shape) for f in feats] == [(2, 128, 8, 6), (2, 128, 16, 12), (2, 128, 32, 24)]
    assert not any(m._forward_hooks for m in net.decoder.stages)  # hooks removed after the forward
    feats[2].sum().backward()
    assert net.encoder.stages[0][0].convs[0].conv.weight.grad is not None


def test_scale_weights_in_network_order_deepest_encoder_and_full_resolution_decoder_last():
    """The paper's lambda^e / lambda^d = (0.2, 0.2, 0.6) follow its block index: the deepest (lowest-resolution)
    encoder stage and the full-resolution decoder stage get 0.6; the words in the help say the same."""
    net = _unet()  # 4 encoder stages, 3 decoder stages
    x = torch.randn(1, 1, 32, 24)
    encoder_sizes = [tuple(s.shape[2:]) for s in net.encoder(x)]
    assert encoder_sizes == [(32, 24), (16, 12), (8, 6), (4, 3)]
    assert scale_stages((0.2, 0.2, 0.6), 4, "encoder") == {1: 0.2, 2: 0.2, 3: 0.6}  # stage 3: 4 x 3, the deepest
    local = MultiScaleLocalModel(net, list(scale_stages((0.2, 0.2, 0.6), 3, "decoder")), 8)
    assert [tuple(f.shape[2:]) for f in local(x)] == [(8, 6), (16, 12), (32, 24)]  # 0.6 on the full resolution
    assert scale_stages((1.0, 3.0), 3, "decoder") == {1: 1.0, 2: 3.0}
    with pytest.raises(ValueError, match="--scale-weights"):
        scale_stages((0.2, 0.2, 0.2, 0.4), 3, "decoder")
    encoder_help = " ".join(build_parser("mmgl_global").format_help().split())
    decoder_help = " ".join(build_parser("mmgl_local").format_help().split())
    assert "highest resolution first, the deepest encoder stage last (paper: 0.2 0.2 0.6)" in encoder_help
    assert "lowest resolution first, the full resolution decoder stage last (paper: 0.2 0.2 0.6)" in decoder_help


# ------------------------------------------------------------------------------- stage 3: deep-supervision weights

def test_deep_supervision_weights_follow_the_portfolios():
    weights = nnUNetTrainerMMGL.deep_supervision_weights
    default = weights(SimpleNamespace(dice_weights=nnUNetTrainerMMGL.dice_weights, is_ddp=False), 4)
    np.testing.assert_allclose(default, [0.4, 0.3, 0.3, 0.0])  # 3:3:4, full resolution first
    for key, portfolio in DICE_PORTFOLIOS.items():
        cls = MMGL_VARIANTS[f"nnUNetTrainerMMGL_DS{key}"]
        got = weights(SimpleNamespace(dice_weights=cls.dice_weights, is_ddp=False), 3)
        np.testing.assert_allclose(got, np.array(portfolio[::-1]) / 10)
    no_ds = MMGL_VARIANTS["nnUNetTrainerMMGL_noDS"]
    np.testing.assert_allclose(weights(SimpleNamespace(dice_weights=no_ds.dice_weights, is_ddp=False), 3), [1, 0, 0])
    ddp = weights(SimpleNamespace(dice_weights=no_ds.dice_weights, is_ddp=True), 3)
    assert ddp[0] == 1 and list(ddp[1:]) == [1e-6, 1e-6]
    with pytest.raises(ValueError, match="dice_weights"):
        weights(SimpleNamespace(dice_weights=(1, 1, 1, 1), is_ddp=False), 3)


def test_ablation_variants_pick_their_pretraining():
    expected = {"nnUNetTrainerMMGL": ("MMGLLocal", "", (".seg_layers.",)),
                "nnUNetTrainerMMGL_noMV": ("MMGLLocal", "_noMV", (".seg_layers.",)),
                "nnUNetTrainerMMGL_noMG": ("MMGLLocal", "_noMG", (".seg_layers.",)),
                "nnUNetTrainerMMGL_noLocal": ("MMGLGlobal", "", ("decoder.",)),
                "nnUNetTrainerMMGL_noMV_noLocal": ("MMGLGlobal", "_noMV", ("decoder.",)),
                "nnUNetTrainerMMGL_noPretrain": (None, "", ("decoder.",))}
    for name, (method, variant, skip) in expected.items():
        cls = {**MMGL_VARIANTS, "nnUNetTrainerMMGL": nnUNetTrainerMMGL}[name]
        obj = object.__new__(cls)
        assert (obj.pretraining_method, obj.pretraining_variant, obj.pretrained_skip) == (method, variant, skip), name
    assert object.__new__(MMGL_VARIANTS["nnUNetTrainerMMGL_noMG"]).pretraining_command == "mmgl_local --no-global"
    assert "nnUNetTrainerMMGL_noMV_2epochs_5its" in MMGL_VARIANTS


def test_globally_pooled_instance_norm_features_collapse_and_head_batch_norm_spreads_them():
    """Why ``head_batch_norm`` exists: after nnU-Net's InstanceNorm stages the pooled features of different images are
    nearly parallel, so NT-Xent starts at chance level log(2B - 1); a BatchNorm1d in the head spreads them."""
    torch.manual_seed(0)
    x = torch.nn.functional.avg_pool2d(torch.randn(8, 1, 64, 48), 9, 1, 4) * 3  # 8 different smooth images
    net = _unet()
    pooled = torch.nn.functional.normalize(net.encoder(x)[3].flatten(2).mean(-1), dim=1)
    assert (pooled @ pooled.T).min() > 0.99
    plain = MultiScaleGlobalModel(net.encoder, [3], 128)
    with_bn = MultiScaleGlobalModel(net.encoder, [3], 128, batch_norm=True)
    assert [type(m).__name__ for m in with_bn.heads[0].mlp] == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert [type(m).__name__ for m in plain.heads[0].mlp] == ["Linear", "ReLU", "Linear"]  # CCM's keys unchanged
    a, b = plain(x)[0], plain(x.flip(-1))[0]
    chance = math.log(2 * 8 - 1)
    assert multi_scale_global_loss([a], [b], (1.0,))[0].item() == pytest.approx(chance, abs=0.01)
    z = torch.nn.functional.normalize(with_bn(x)[0], dim=1)
    assert (z @ z.T).min() < 0.9
