"""URPC, MC-Net and DTC losses and network pieces against independent recomputations (NumPy, loops, hand values),
in 2D and 3D."""
import itertools
import math

import numpy as np
import pytest
import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet

from nnunet_semi.losses.dtc import (class_signed_distance_maps, dual_task_consistency, inner_boundary,
                                    sdf_to_probability, signed_distance_map)
from nnunet_semi.losses.sharpening import mutual_consistency, sharpen
from nnunet_semi.losses.urpc import uncertainty_rectified_pyramid_consistency, upsample_pyramid
from nnunet_semi.networks.feature_head import DecoderFeatureHead, sdf_head
from nnunet_semi.networks.two_decoder import TwoDecoderNetwork, use_interpolation_upsampling


def _softmax(x, axis=1):
    e = np.exp(x - x.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


# ------------------------------------------------------------------------------------------------------------ URPC
def _urpc_numpy(logits):
    """MedIA 2022 URPC, loop over scales, images and voxels."""
    probs = [_softmax(lg) for lg in logits]
    S, B, C = len(probs), probs[0].shape[0], probs[0].shape[1]
    rect_total, d_total, n_d = 0.0, 0.0, 0
    for b in range(B):
        flat = [p[b].reshape(C, -1) for p in probs]
        pc = sum(flat) / S
        for s in range(S):
            num = den = 0.0
            for v in range(pc.shape[1]):
                d = sum(flat[s][j, v] * math.log(flat[s][j, v] / pc[j, v]) for j in range(C))
                w = math.exp(-d)
                num += w * sum((flat[s][j, v] - pc[j, v]) ** 2 for j in range(C))
                den += w
                d_total += d
                n_d += 1
            rect_total += num / den
    return rect_total / (S * B), d_total / n_d


@pytest.mark.parametrize("shape", [(2, 3, 5, 4), (2, 2, 3, 4, 3)])
def test_urpc_equals_loop_recomputation(shape):
    rng = np.random.default_rng(1)
    logits = [rng.normal(size=shape) * 2 for _ in range(4)]
    out = uncertainty_rectified_pyramid_consistency([torch.from_numpy(lg) for lg in logits])
    rect, unc = _urpc_numpy(logits)
    assert out["rectified"].item() == pytest.approx(rect, rel=1e-5)
    assert out["uncertainty"].item() == pytest.approx(unc, rel=1e-5)
    assert out["loss"].item() == pytest.approx(rect + unc, rel=1e-5)


def test_urpc_hand_values():
    # two scales, one voxel, two classes: p_1 = (0.8, 0.2), p_2 = (0.4, 0.6) -> p_c = (0.6, 0.4)
    lg = lambda p: torch.tensor([math.log(p), math.log(1 - p)]).view(1, 2, 1, 1)
    out = uncertainty_rectified_pyramid_consistency([lg(0.8), lg(0.4)])
    d1 = 0.8 * math.log(0.8 / 0.6) + 0.2 * math.log(0.2 / 0.4)
    d2 = 0.4 * math.log(0.4 / 0.6) + 0.6 * math.log(0.6 / 0.4)
    # one voxel: the weight cancels, ||p_s - p_c||^2 = 2 * 0.2^2 for both scales
    assert out["rectified"].item() == pytest.approx(0.08, rel=1e-5)
    assert out["uncertainty"].item() == pytest.approx((d1 + d2) / 2, rel=1e-5)
    same = torch.randn(2, 3, 4, 4)
    zero = uncertainty_rectified_pyramid_consistency([same, same.clone(), same.clone()])
    assert zero["loss"].item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("spatial", [(8, 6), (4, 8, 6)])
def test_upsample_pyramid_shapes_and_gradient(spatial):
    full = torch.randn(2, 3, *spatial, requires_grad=True)
    half = torch.randn(2, 3, *[s // 2 for s in spatial], requires_grad=True)
    pyramid = upsample_pyramid([full, half])
    assert pyramid[0] is full and pyramid[1].shape == full.shape
    const = torch.full((1, 2, *[s // 2 for s in spatial]), 3.0)
    assert torch.allclose(upsample_pyramid([torch.zeros(1, 2, *spatial), const])[1], torch.tensor(3.0))
    nearest = upsample_pyramid([full, half], mode="nearest")[1]
    assert torch.equal(nearest[(0, 0) + (0,) * len(spatial)], half[(0, 0) + (0,) * len(spatial)])
    uncertainty_rectified_pyramid_consistency(pyramid)["loss"].backward()
    assert full.grad.abs().sum() > 0 and half.grad.abs().sum() > 0


def test_urpc_rejects_bad_input():
    with pytest.raises(ValueError, match=">= 2 scales"):
        uncertainty_rectified_pyramid_consistency([torch.zeros(1, 2, 4, 4)])
    with pytest.raises(ValueError, match="upsample_pyramid"):
        uncertainty_rectified_pyramid_consistency([torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 2, 2)])


# ---------------------------------------------------------------------------------------------------------- MC-Net
def test_sharpen_hand_values_and_binary_consistency():
    p = torch.tensor([[0.6, 0.5, 0.1, 1.0, 0.0]]).view(1, 1, 5)
    s = sharpen(p, 0.1)
    expected = [0.6 ** 10 / (0.6 ** 10 + 0.4 ** 10), 0.5, 0.1 ** 10 / (0.1 ** 10 + 0.9 ** 10), 1.0, 0.0]
    assert s.flatten().tolist() == pytest.approx(expected, rel=1e-5, abs=1e-12)
    assert expected[0] == pytest.approx(0.98295, abs=1e-5)
    binary = torch.softmax(torch.randn(2, 2, 6, 6), 1)
    sb = sharpen(binary, 0.1)
    assert torch.allclose(sb.sum(1), torch.ones(2, 6, 6), atol=1e-5)  # two classes: still a distribution
    assert torch.allclose(sharpen(binary, 0.1, renormalise=True), sb, atol=1e-5)
    with pytest.raises(ValueError, match="temperature"):
        sharpen(binary, 0.0)


@pytest.mark.parametrize("shape", [(2, 3, 5, 4), (2, 4, 3, 4, 3)])
@pytest.mark.parametrize("renormalise", [False, True])
def test_mutual_consistency_equals_numpy(shape, renormalise):
    rng = np.random.default_rng(2)
    pa, pb = _softmax(rng.normal(size=shape) * 2), _softmax(rng.normal(size=shape) * 2)

    def spl(p):
        s = p ** 10 / (p ** 10 + (1 - p) ** 10)
        return s / s.sum(1, keepdims=True) if renormalise else s

    l_a, l_b = mutual_consistency(torch.from_numpy(pa), torch.from_numpy(pb), 0.1, renormalise=renormalise)
    assert l_a.item() == pytest.approx(((pa - spl(pb)) ** 2).mean(), rel=1e-5)
    assert l_b.item() == pytest.approx(((pb - spl(pa)) ** 2).mean(), rel=1e-5)
    if renormalise:
        assert torch.allclose(sharpen(torch.from_numpy(pa), 0.1, True).sum(1), torch.ones(1, dtype=torch.float32))


def test_mutual_consistency_gradient_switch():
    pa = torch.softmax(torch.randn(1, 3, 4, 4), 1).requires_grad_()
    pb = torch.softmax(torch.randn(1, 3, 4, 4), 1).requires_grad_()
    mutual_consistency(pa, pb)[0].backward()
    assert pb.grad is None and pa.grad.abs().sum() > 0
    pa.grad = None
    mutual_consistency(pa, pb, detach_pseudo_labels=False)[0].backward()
    assert pb.grad is not None and pb.grad.abs().sum() > 0


# ------------------------------------------------------------------------------------------------------------- DTC
def test_sdf_hand_checked_row():
    mask = np.array([[0, 0, 1, 1, 1, 0, 0]], dtype=bool)
    # outside distances 2,1,.,.,.,1,2 (/2); inside 1,2,1 (/2); inner boundary at the two ends of the object -> 0
    assert signed_distance_map(mask)[0].tolist() == pytest.approx([1.0, 0.5, 0.0, -1.0, 0.0, 0.5, 1.0])


def test_sdf_hand_checked_cube():
    mask = np.zeros((5, 5, 5), dtype=bool)
    mask[1:4, 1:4, 1:4] = True
    sdf = signed_distance_map(mask)
    assert sdf[2, 2, 2] == pytest.approx(-1.0)  # the centre: 2 voxels from the background, the interior maximum
    assert np.all(sdf[mask & ~(np.indices(mask.shape) == 2).all(0)] == 0)  # the other 26 voxels are boundary
    sqrt3 = math.sqrt(3)
    assert sdf[0, 2, 2] == pytest.approx(1 / sqrt3) and sdf[0, 0, 2] == pytest.approx(math.sqrt(2) / sqrt3)
    assert sdf[0, 0, 0] == pytest.approx(1.0) and sdf.min() == -1.0 and sdf.max() == 1.0


def _sdf_brute_force(mask):
    """Normalised SDF by brute force: distances over all voxel pairs, boundary from face neighbours."""
    coords = list(itertools.product(*[range(n) for n in mask.shape]))
    fg = [c for c in coords if mask[c]]
    bg = [c for c in coords if not mask[c]]
    inside, outside = np.zeros(mask.shape), np.zeros(mask.shape)
    for c in fg:
        inside[c] = min(math.dist(c, o) for o in bg)
    for c in bg:
        outside[c] = min(math.dist(c, o) for o in fg)
    sdf = (outside - outside.min()) / (outside.max() - outside.min()) \
        - (inside - inside.min()) / (inside.max() - inside.min())
    for c in fg:
        for axis in range(mask.ndim):
            for step in (-1, 1):
                n = list(c)
                n[axis] += step
                if 0 <= n[axis] < mask.shape[axis] and not mask[tuple(n)]:
                    sdf[c] = 0.0
    return sdf


@pytest.mark.parametrize("shape", [(9, 8), (5, 6, 4)])
def test_sdf_equals_brute_force(shape):
    rng = np.random.default_rng(3)
    mask = rng.random(shape) < 0.4
    assert np.allclose(signed_distance_map(mask), _sdf_brute_force(mask), atol=1e-6)
    assert inner_boundary(np.ones(shape, dtype=bool)).sum() == 0  # the array border is not a boundary


def test_class_sdf_multi_class_and_empty():
    labels = torch.zeros(2, 1, 6, 7, dtype=torch.float32)
    labels[0, 0, 1:4, 2:5] = 1
    labels[0, 0, 2, 3] = 2
    sdf = class_signed_distance_maps(labels, [1, 2])
    assert sdf.shape == (2, 2, 6, 7) and sdf.dtype == torch.float32
    assert np.allclose(sdf[0, 0].numpy(), signed_distance_map(labels[0, 0].numpy() == 1))
    assert np.allclose(sdf[0, 1].numpy(), signed_distance_map(labels[0, 0].numpy() == 2))
    assert torch.equal(sdf[1], torch.ones(2, 6, 7))  # no foreground: outside everywhere
    assert torch.equal(class_signed_distance_maps(torch.ones(1, 1, 3, 3), [1]), -torch.ones(1, 1, 3, 3))


@pytest.mark.parametrize("shape", [(2, 1, 5, 4), (2, 2, 3, 4, 3)])
def test_transform_and_dual_task_consistency(shape):
    z = torch.tensor([0.0, 0.001, -0.001, 0.01])
    expected = [0.5, 1 / (1 + math.exp(1.5)), 1 / (1 + math.exp(-1.5)), 1 / (1 + math.exp(15))]
    assert sdf_to_probability(z).tolist() == pytest.approx(expected, rel=1e-5)
    rng = np.random.default_rng(4)
    probs, sdf = rng.random(shape), np.tanh(rng.normal(size=shape) * 0.002)
    value = dual_task_consistency(torch.from_numpy(probs), torch.from_numpy(sdf))
    assert value.item() == pytest.approx(((probs - 1 / (1 + np.exp(1500 * sdf))) ** 2).mean(), rel=1e-5)
    with pytest.raises(ValueError, match="differ in shape"):
        dual_task_consistency(torch.zeros(1, 1, 4, 4), torch.zeros(1, 2, 4, 4))


# -------------------------------------------------------------------------------------------------------- networks
def _unet(conv=torch.nn.Conv2d, norm=torch.nn.InstanceNorm2d, deep_supervision=True):
    return PlainConvUNet(1, 3, (4, 8, 16), conv, 3, (1, 2, 2), (1, 1, 1), 3, (1, 1), False, norm,
                         {"eps": 1e-5, "affine": True}, None, None, torch.nn.LeakyReLU, {"inplace": True},
                         deep_supervision=deep_supervision)


@pytest.mark.parametrize("dim", [2, 3])
def test_decoder_feature_head(dim):
    conv, norm = (torch.nn.Conv2d, torch.nn.InstanceNorm2d) if dim == 2 else (torch.nn.Conv3d,
                                                                            torch.nn.InstanceNorm3d)
    torch.manual_seed(0)
    net = _unet(conv, norm)
    wrapped = DecoderFeatureHead(net, sdf_head(conv, 4, 2))
    x = torch.randn(2, 1, *(8,) * dim)
    segmentation, sdf = wrapped(x)
    assert [s.shape[-1] for s in segmentation] == [8, 4] and sdf.shape == (2, 2) + (8,) * dim
    assert sdf.abs().max() < 1  # tanh
    # the head reads the full-resolution decoder features: recompute them from the decoder's stages by hand
    skips = net.encoder(x)
    feats = skips[-1]
    for s in range(len(net.decoder.stages)):
        feats = net.decoder.stages[s](torch.cat((net.decoder.transpconvs[s](feats), skips[-(s + 2)]), 1))
    assert torch.allclose(sdf, wrapped.head(feats), atol=1e-6)
    wrapped.eval()
    wrapped.set_deep_supervision(False)
    with torch.no_grad():
        out = wrapped(x)
    assert isinstance(out, torch.Tensor) and torch.allclose(out, segmentation[0], atol=1e-6)
    assert {k.split(".")[0] for k in wrapped.state_dict()} == {"net", "head"}


def test_two_decoder_inference_decoder():
    torch.manual_seed(0)
    first, second = _unet(), _unet()
    net = TwoDecoderNetwork(first.encoder, first.decoder, use_interpolation_upsampling(second.decoder),
                            inference_decoder=1)
    x = torch.randn(2, 1, 8, 8)
    out_1, out_2 = net(x)
    net.eval()
    with torch.no_grad():
        out = net(x)
    assert isinstance(out, list) and torch.allclose(out[0], out_1[0], atol=1e-6)
    assert not torch.allclose(out[0], out_2[0])
    net.inference_decoder = 2
    with torch.no_grad():
        assert torch.allclose(net(x)[0], out_2[0], atol=1e-6)
    with pytest.raises(ValueError, match="inference_decoder"):
        TwoDecoderNetwork(first.encoder, first.decoder, second.decoder, inference_decoder=3)
