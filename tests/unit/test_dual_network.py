"""DualNetwork: training returns both outputs, eval returns the softmax-mean ensemble as logits."""
import pytest
import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet

from nnunet_semi.networks.dual import DualNetwork, fuse_softmax_logits


def _unet(deep_supervision=True):
    return PlainConvUNet(1, 3, (4, 8, 16), torch.nn.Conv2d, 3, (1, 2, 2), (1, 1, 1), 3, (1, 1), False,
                         torch.nn.InstanceNorm2d, {"eps": 1e-5, "affine": True}, None, None, torch.nn.LeakyReLU,
                         {"inplace": True}, deep_supervision=deep_supervision)


def test_fusion_is_log_of_mean_softmax():
    a, b = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)
    fused = fuse_softmax_logits([a, b])
    expected = 0.5 * (torch.softmax(a, 1) + torch.softmax(b, 1))
    assert torch.allclose(torch.softmax(fused, 1), expected, atol=1e-6)
    assert torch.allclose(fused.exp().sum(1), torch.ones(2, 8, 8), atol=1e-5)


def test_dual_forward_train_and_eval():
    torch.manual_seed(0)
    net = DualNetwork(_unet(), _unet())
    x = torch.randn(2, 1, 16, 16)
    out_a, out_b = net(x)
    assert isinstance(out_a, list) and [o.shape[-1] for o in out_a] == [16, 8]  # one output per decoder stage
    assert not torch.equal(out_a[0], out_b[0])  # independent initialisation
    net.eval()
    with torch.no_grad():
        fused_ds = net(x)
        net.set_deep_supervision(False)
        fused = net(x)
        ref = fuse_softmax_logits([net.net_a(x), net.net_b(x)])
    assert isinstance(fused_ds, list) and len(fused_ds) == 2
    assert fused.shape == (2, 3, 16, 16) and torch.allclose(fused, ref)
    assert torch.allclose(fused, fused_ds[0])
    assert set(k.split(".")[0] for k in net.state_dict()) == {"net_a", "net_b"}


def test_split_output_of_a_joint_forward_matches_separate_forwards():
    """``split_output`` (what ``forward_joint`` returns) gives each batch the values a separate forward pass gives it,
    for a single network with deep supervision (list of scales) and for a DualNetwork (tuple of members)."""
    from nnunet_semi.networks.outputs import split_output

    torch.manual_seed(0)
    single, dual = _unet(), DualNetwork(_unet(), _unet())
    labeled, unlabeled, strong = torch.randn(2, 1, 16, 16), torch.randn(3, 1, 16, 16), torch.randn(1, 1, 16, 16)
    with torch.no_grad():
        parts = split_output(single(torch.cat((labeled, unlabeled, strong))), [2, 3, 1])
        assert len(parts) == 3 and all(isinstance(p, list) and len(p) == 2 for p in parts)
        for part, x in zip(parts, (labeled, unlabeled, strong)):
            for got, expected in zip(part, single(x)):  # per scale
                assert got.shape == expected.shape
                torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)  # InstanceNorm: per sample
        (a_l, a_u), (b_l, b_u) = split_output(dual(torch.cat((labeled, unlabeled))), [2, 3])
        for got, expected in ((a_l, dual.members[0](labeled)), (b_u, dual.members[1](unlabeled))):
            torch.testing.assert_close(got[0], expected[0], atol=1e-5, rtol=1e-5)
        assert a_u[1].shape == (3, 3, 8, 8) and b_l[0].shape == (2, 3, 16, 16)
        plain = split_output(torch.arange(6.0).view(6, 1), [4, 2])
        assert [p.flatten().tolist() for p in plain] == [[0.0, 1.0, 2.0, 3.0], [4.0, 5.0]]
        with pytest.raises(ValueError, match="6 samples, the batches \\[4, 1\\] sum to 5"):
            split_output(torch.zeros(6, 1), [4, 1])


@pytest.mark.parametrize("member", ["a", "b"])
def test_predict_member_from_the_environment_predicts_with_that_network_alone(monkeypatch, member):
    """The single-network control: ``nnUNet_semi_predict_member`` makes eval mode return that member's own output
    (the other member's weights change nothing); training mode still returns both."""
    torch.manual_seed(0)
    monkeypatch.setenv("nnUNet_semi_predict_member", member)
    net = DualNetwork(_unet(False), _unet(False))
    x = torch.randn(2, 1, 16, 16)
    chosen, other = (net.net_a, net.net_b) if member == "a" else (net.net_b, net.net_a)
    assert len(net(x)) == 2  # training: both members
    net.eval()
    with torch.no_grad():
        alone = net(x)
        assert torch.equal(alone, chosen(x))
        assert not torch.allclose(alone, fuse_softmax_logits([net.net_a(x), net.net_b(x)]), atol=1e-3)
        for p in other.parameters():
            p.add_(1.0)
        assert torch.equal(net(x), alone)


def test_predict_member_unset_or_bad(monkeypatch):
    from nnunet_semi.networks.dual import predict_member_from_env

    assert predict_member_from_env({}) is None and predict_member_from_env({"nnUNet_semi_predict_member": ""}) is None
    assert predict_member_from_env({"nnUNet_semi_predict_member": "B"}) == 1
    with pytest.raises(ValueError, match=r"nnUNet_semi_predict_member='c' .*Fix: set it to 'a' or 'b'"):
        predict_member_from_env({"nnUNet_semi_predict_member": "c"})
    monkeypatch.setenv("nnUNet_semi_predict_member", "net_a")
    with pytest.raises(ValueError, match="net_a"):
        DualNetwork(_unet(), _unet())
