"""``nnUNetv2_train -pretrained_weights`` with our wrapper networks (no data needed): a plain nnU-Net checkpoint
loads into every planned network it fits, heads stay fresh, a misfit is one PretrainedWeightsError; nnU-Net's
``maybe_load_checkpoint`` hands the file to a trainer that loads it itself and is unchanged otherwise."""
import numpy as np
import pytest
import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet
from torch import nn

import nnunet_semi.training  # noqa: F401  (installs the -pretrained_weights hook, as the trainer search does)
from nnunet_semi.networks.dual import DualNetwork
from nnunet_semi.pretrained.loading import PretrainedWeightsError, load_into_planned_networks
from nnunet_semi.networks.teacher import MeanTeacherNetwork
from nnunet_semi.networks.two_decoder import TwoDecoderNetwork, use_interpolation_upsampling


def _unet(seed: int, width: int = 4) -> PlainConvUNet:
    torch.manual_seed(seed)
    return PlainConvUNet(1, 3, (width, 2 * width, 4 * width), nn.Conv2d, 3, (1, 2, 2), 2, 3, 2, conv_bias=True,
                         norm_op=nn.InstanceNorm2d, norm_op_kwargs={"affine": True}, nonlin=nn.LeakyReLU,
                         deep_supervision=True)


def _nnunet_checkpoint(path, seed: int = 0, width: int = 4) -> dict:
    weights = _unet(seed, width).state_dict()
    torch.save({"network_weights": weights, "logging": {"mean_fg_dice": [np.float64(0.5)]}}, path)
    return weights


def _assert_body_loaded(state: dict, weights: dict, prefix: str = "") -> None:
    for key, value in weights.items():
        same = torch.equal(state[prefix + key], value)
        assert same != (".seg_layers." in key), prefix + key  # body from the checkpoint, heads fresh


def test_single_network_checkpoint_loads_into_every_planned_network(tmp_path):
    path = tmp_path / "labeled_only.pth"
    weights = _nnunet_checkpoint(path)

    dual = DualNetwork(_unet(1), _unet(2))
    body = len([k for k in weights if ".seg_layers." not in k])
    assert load_into_planned_networks(dual, str(path)) == ({"net_a": body, "net_b": body}, {})
    _assert_body_loaded(dual.state_dict(), weights, "net_a."), _assert_body_loaded(dual.state_dict(), weights, "net_b.")

    teacher = MeanTeacherNetwork(_unet(3))
    load_into_planned_networks(teacher, str(path))
    _assert_body_loaded(teacher.state_dict(), weights, "student."), _assert_body_loaded(teacher.state_dict(), weights,
                                                                                        "teacher.")

    first, second = _unet(4), _unet(5)
    two = TwoDecoderNetwork(first.encoder, first.decoder, use_interpolation_upsampling(second.decoder))
    loaded, kept = load_into_planned_networks(two, str(path))
    assert list(loaded) == ["encoder + decoder_1"] and not kept
    state = {k.replace("decoder_1.", "decoder."): v for k, v in two.state_dict().items()}
    _assert_body_loaded(state, weights)


def test_checkpoint_of_the_same_wrapper_loads_as_a_whole_and_misfits_are_refused(tmp_path):
    dual = DualNetwork(_unet(1), _unet(2))
    path = tmp_path / "cps.pth"
    torch.save({"network_weights": dual.state_dict()}, path)
    target = DualNetwork(_unet(3), _unet(4))
    body = [k for k in dual.state_dict() if ".seg_layers." not in k]
    assert load_into_planned_networks(target, str(path)) == ({"network": len(body)}, {})
    _assert_body_loaded(target.state_dict(), dual.state_dict())

    wider = tmp_path / "wider.pth"
    _nnunet_checkpoint(wider, width=8)
    with pytest.raises(PretrainedWeightsError, match="no network of this trainer fits.*has shape"):
        load_into_planned_networks(DualNetwork(_unet(1), _unet(2)), str(wider))


def test_maybe_load_checkpoint_hands_the_file_to_our_trainers_only():
    from nnunetv2.run import run_training

    class Ours:
        loaded = None

        def load_pretrained_weights_file(self, path):
            self.loaded = path

    trainer = Ours()
    run_training.maybe_load_checkpoint(trainer, False, False, "weights.pth")
    assert trainer.loaded == "weights.pth"
    with pytest.raises(RuntimeError, match="Cannot both continue a training AND load pretrained weights"):
        run_training.maybe_load_checkpoint(trainer, True, False, "weights.pth")  # nnU-Net's own check, unchanged
