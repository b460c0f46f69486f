"""Pretrained checkpoints are loaded only from the pretraining methods a trainer declares
(``checkpoint['pretraining']['method']``); ``nnUNet_semi_pretrained_any=1`` allows deliberate cross-loading, and the
README's cross-loading routes (SimCLR -> ``_noLocal``, CCM ablations -> CCMCPS) are declared."""
import pytest
import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet
from torch import nn

from nnunet_semi.pretrained.loading import ANY_METHOD_ENV, PretrainedWeightsError, load_pretrained_networks
from nnunet_semi.training import TRAINERS
from nnunet_semi.training.pretrained_init import PRETRAINED_ENV, PretrainedInitialisation
from pretraining.ccm import CCMPretrainer
from pretraining.cli import PRETRAINERS


def _unet(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return PlainConvUNet(1, 3, (4, 8, 16), nn.Conv2d, 3, (1, 2, 2), (1, 1, 1), 3, (1, 1), True, nn.InstanceNorm2d,
                         {"eps": 1e-5, "affine": True}, None, None, nn.LeakyReLU, {"inplace": True})


def _checkpoint(path, method) -> dict:
    weights = _unet(1).state_dict()
    checkpoint = {"network_weights": weights}
    if method is not None:
        checkpoint["pretraining"] = {"method": method, "dataset": "Dataset901_X"}
    torch.save(checkpoint, path)
    return weights


class _Base:
    """Stands in for nnU-Net's trainer: ``initialize`` builds the network, the log is a list."""

    def initialize(self):
        self.network = _unet(0)
        self.log = []

    def print_to_log_file(self, *args):
        self.log.append(" ".join(map(str, args)))


def _trainer_like(trainer_name: str):
    """A stand-in that declares exactly what the registered trainer ``trainer_name`` declares."""
    real = object.__new__(TRAINERS[trainer_name])  # class attributes / properties only, no nnU-Net __init__
    return type("Fake", (PretrainedInitialisation, _Base), {
        "pretraining_method": real.pretraining_method, "pretrained_skip": (".seg_layers.",),
        "extra_accepted_pretraining_methods": tuple(real.accepted_pretraining_methods)})()


def test_every_pretrained_trainer_declares_the_methods_it_accepts():
    accepted = {name: set(object.__new__(TRAINERS[name]).accepted_pretraining_methods) for name in (
        "nnUNetTrainerCCMCPS", "nnUNetTrainerIDEAL", "nnUNetTrainerPLContrastPI", "nnUNetTrainerMMGL",
        "nnUNetTrainerMMGL_noMV", "nnUNetTrainerMMGL_noMG", "nnUNetTrainerMMGL_noLocal",
        "nnUNetTrainerMMGL_noMV_noLocal", "nnUNetTrainerCCMCPS_4epochs_10its")}
    assert accepted == {"nnUNetTrainerCCMCPS": {"CCM"}, "nnUNetTrainerIDEAL": {"IDEAL"},
                        "nnUNetTrainerPLContrastPI": {"GlobalLocal"}, "nnUNetTrainerMMGL": {"MMGLLocal"},
                        "nnUNetTrainerMMGL_noMV": {"MMGLLocal"}, "nnUNetTrainerMMGL_noMG": {"MMGLLocal"},
                        "nnUNetTrainerMMGL_noLocal": {"MMGLGlobal", "SimCLR"},
                        "nnUNetTrainerMMGL_noMV_noLocal": {"MMGLGlobal", "SimCLR"},
                        "nnUNetTrainerCCMCPS_4epochs_10its": {"CCM"}}
    recorded = {cls.method_name for cls in PRETRAINERS.values()}  # what nnunet_semi_pretrain writes
    assert set().union(*accepted.values()) <= recorded
    assert CCMPretrainer.method_name == "CCM"  # --no-con / --no-rec only change the folder (variant_suffix)


def test_a_checkpoint_of_another_method_is_refused_with_one_error_and_nothing_loaded(tmp_path, monkeypatch):
    path = tmp_path / "simclr.pth"
    _checkpoint(path, "SimCLR")
    monkeypatch.setenv(PRETRAINED_ENV, str(path))
    monkeypatch.delenv(ANY_METHOD_ENV, raising=False)
    trainer = _trainer_like("nnUNetTrainerIDEAL")
    fresh = {k: v.clone() for k, v in _unet(0).state_dict().items()}
    with pytest.raises(PretrainedWeightsError) as error:
        trainer.initialize()
    message = str(error.value)
    assert str(path) in message and "written by SimCLR pretraining" in message and "starts from IDEAL" in message
    assert "nnunet_semi_pretrain -m ideal" in message and f"{ANY_METHOD_ENV}=1" in message
    assert "\n" not in message
    for key, value in trainer.network.state_dict().items():  # nothing half-written
        assert torch.equal(value, fresh[key]), key


def test_a_checkpoint_without_a_recorded_method_is_refused(tmp_path):
    path = tmp_path / "plain.pth"
    _checkpoint(path, None)
    with pytest.raises(PretrainedWeightsError, match="records no pretraining method.*-m mmgl_local"):
        load_pretrained_networks(_unet(0), str(path), accepted_methods=("MMGLLocal",), user="mmgl")
    assert load_pretrained_networks(_unet(0), str(path))  # no declared methods (e.g. a raw loader): keys only


def test_override_loads_any_method_and_keys_are_still_checked(tmp_path, monkeypatch):
    path = tmp_path / "simclr.pth"
    weights = _checkpoint(path, "SimCLR")
    monkeypatch.setenv(PRETRAINED_ENV, str(path))
    monkeypatch.setenv(ANY_METHOD_ENV, "1")
    trainer = _trainer_like("nnUNetTrainerIDEAL")
    trainer.initialize()
    state = trainer.network.state_dict()
    transferred = [k for k in state if ".seg_layers." not in k]
    assert len(transferred) == 68 and all(torch.equal(state[k], weights[k]) for k in transferred)
    assert f"Initialised 68 tensors from {path}" in trainer.log[0]
    weights["encoder.stages.1.0.convs.0.conv.weight"] = torch.zeros(2, 2, 3, 3)
    torch.save({"network_weights": weights, "pretraining": {"method": "SimCLR"}}, path)
    with pytest.raises(PretrainedWeightsError, match=r"\(2, 2, 3, 3\)"):
        _trainer_like("nnUNetTrainerIDEAL").initialize()


@pytest.mark.parametrize("trainer_name, method", [("nnUNetTrainerMMGL_noLocal", "SimCLR"),
                                                  ("nnUNetTrainerMMGL_noLocal", "MMGLGlobal"),
                                                  ("nnUNetTrainerCCMCPS", "CCM")])
def test_documented_cross_loading_routes_load_without_the_override(tmp_path, monkeypatch, trainer_name, method):
    path = tmp_path / f"{method}.pth"
    weights = _checkpoint(path, method)
    monkeypatch.setenv(PRETRAINED_ENV, str(path))
    monkeypatch.delenv(ANY_METHOD_ENV, raising=False)
    trainer = _trainer_like(trainer_name)
    trainer.initialize()
    assert torch.equal(trainer.network.state_dict()["encoder.stages.0.0.convs.0.conv.weight"],
                       weights["encoder.stages.0.0.convs.0.conv.weight"])


def test_the_contract_names_the_command_of_every_pretraining_method_and_the_library_does_not_import_it():
    import subprocess
    import sys

    from nnunet_semi.pretrained.contract import PRETRAIN_OPTIONS

    assert PRETRAIN_OPTIONS == {cls.method_name: option for option, cls in PRETRAINERS.items()}
    code = ("import sys, nnunet_semi.training, nnunet_semi.pretrained.pairing; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'pretraining'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"  # the trainers (library) never import the pretraining command
