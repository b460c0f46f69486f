"""DualNetwork: training returns both outputs, eval returns the softmax-mean ensemble as logits."""
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
