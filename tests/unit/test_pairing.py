"""CPS from two single-network pretrainings (CCM paper Table 1, "CPS + SimCLR" / "CPS + Models Genesis"): the pair
checkpoint of ``nnunet_semi_pair_pretrained`` holds network a's and b's weights under ``net_a.*`` / ``net_b.*``,
refuses pairs CPS cannot use, and loads into both networks of the paired-CPS trainers; ``--tag`` keeps a second
pretraining beside the first."""
import os
from types import SimpleNamespace

import pytest
import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet
from torch import nn

from nnunet_semi.networks.dual import DualNetwork
from nnunet_semi.pretrained import contract
from nnunet_semi.pretrained.contract import PretrainedWeightsError
from nnunet_semi.pretrained.pairing import pair_checkpoints, pair_entry
from nnunet_semi.training import TRAINERS
from nnunet_semi.training.paired_cps import PairedPretrainedInitialisation
from nnunet_semi.training.pretrained_init import PRETRAINED_ENV
from pretraining.cli import build_parser


def _unet(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return PlainConvUNet(1, 3, (4, 8, 16), nn.Conv2d, 3, (1, 2, 2), (1, 1, 1), 3, (1, 1), True, nn.InstanceNorm2d,
                         {"eps": 1e-5, "affine": True}, None, None, nn.LeakyReLU, {"inplace": True})


def _pretraining(path, seed: int, method: str = "Genesis", encoder_only: bool = False, **record) -> dict:
    weights = {k: v for k, v in _unet(seed).state_dict().items() if not encoder_only or k.startswith("encoder.")}
    provenance = {"method": method, "dataset": "Dataset901_X", "plans": "P", "configuration": "2d", "fold": "0",
                  "seed": seed, **record}
    torch.save({"network_weights": weights, "pretraining": provenance, "history": {"L": [1.0]}}, path)
    return weights


def test_the_pair_holds_each_member_under_its_network_and_records_both(tmp_path):
    a = _pretraining(tmp_path / "a.pth", 1)
    b = _pretraining(tmp_path / "b.pth", 2)
    out = pair_checkpoints(str(tmp_path / "a.pth"), str(tmp_path / "b.pth"), str(tmp_path / "pair" / "p.pth"))
    pair = torch.load(out, weights_only=True)
    weights = pair["network_weights"]
    assert set(weights) == {f"net_a.{k}" for k in a} | {f"net_b.{k}" for k in b}
    assert all(torch.equal(weights[f"net_a.{k}"], a[k]) and torch.equal(weights[f"net_b.{k}"], b[k]) for k in a)
    record = pair["pretraining"]
    assert record["method"] == "Genesis" and (record["dataset"], record["plans"], record["configuration"],
                                              record["fold"]) == ("Dataset901_X", "P", "2d", "0")
    assert [m["seed"] for m in record["members"]] == [1, 2]
    assert record["paired_from"] == [str(tmp_path / "a.pth"), str(tmp_path / "b.pth")]
    # the pair has exactly the keys of CPS's two planned networks
    assert set(weights) == set(DualNetwork(_unet(0), _unet(0)).state_dict())


def test_the_default_output_is_where_the_trainers_look(tmp_path, monkeypatch):
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "results"))  # nnU-Net reads it at call time
    _pretraining(tmp_path / "a.pth", 1, method="SimCLR", encoder_only=True)
    _pretraining(tmp_path / "b.pth", 2, method="SimCLR", encoder_only=True)
    out = pair_checkpoints(str(tmp_path / "a.pth"), str(tmp_path / "b.pth"))
    assert out == contract.checkpoint_path("Dataset901_X", "SimCLR", "P", "2d", "0", "_pair")
    assert out.endswith(os.path.join("Dataset901_X", "SimCLRPretrain_pair__P__2d", "fold_0", "checkpoint_final.pth"))
    assert os.path.isfile(out)


@pytest.mark.parametrize("change, message", [
    (dict(method="SimCLR"), "differ in their pretraining method"),
    (dict(plans="Other"), "differ in their pretraining plans"),
    (dict(fold="1"), "differ in their pretraining fold"),
])
def test_members_of_different_pretrainings_are_refused(tmp_path, change, message):
    _pretraining(tmp_path / "a.pth", 1)
    _pretraining(tmp_path / "b.pth", 2, **change)
    with pytest.raises(PretrainedWeightsError, match=message):
        pair_checkpoints(str(tmp_path / "a.pth"), str(tmp_path / "b.pth"), str(tmp_path / "p.pth"))
    assert not os.path.exists(tmp_path / "p.pth")


def test_pairs_cps_cannot_use_are_refused_with_the_fix(tmp_path):
    _pretraining(tmp_path / "a.pth", 1)
    _pretraining(tmp_path / "same.pth", 1)
    with pytest.raises(PretrainedWeightsError, match="same weights.*--seed.*--tag"):
        pair_checkpoints(str(tmp_path / "a.pth"), str(tmp_path / "same.pth"), str(tmp_path / "p.pth"))
    _pretraining(tmp_path / "enc.pth", 2, encoder_only=True)
    with pytest.raises(PretrainedWeightsError, match="different networks.*decoder"):
        pair_checkpoints(str(tmp_path / "a.pth"), str(tmp_path / "enc.pth"), str(tmp_path / "p.pth"))
    torch.save({"network_weights": DualNetwork(_unet(1), _unet(2)).state_dict(),
                "pretraining": {"method": "CCM"}}, tmp_path / "ccm.pth")
    with pytest.raises(PretrainedWeightsError, match="two networks already"):
        pair_checkpoints(str(tmp_path / "ccm.pth"), str(tmp_path / "a.pth"), str(tmp_path / "p.pth"))
    torch.save({"network_weights": _unet(3).state_dict()}, tmp_path / "plain.pth")
    with pytest.raises(PretrainedWeightsError, match="not a checkpoint of nnunet_semi_pretrain"):
        pair_checkpoints(str(tmp_path / "plain.pth"), str(tmp_path / "a.pth"), str(tmp_path / "p.pth"))
    with pytest.raises(PretrainedWeightsError, match="does not exist"):
        pair_checkpoints(str(tmp_path / "missing.pth"), str(tmp_path / "a.pth"), str(tmp_path / "p.pth"))
    assert not os.path.exists(tmp_path / "p.pth")
    with pytest.raises(SystemExit, match="nnunet_semi_pair_pretrained: .*same weights"):  # the command: one line
        pair_entry([str(tmp_path / "a.pth"), str(tmp_path / "same.pth"), "-o", str(tmp_path / "p.pth")])


class _Base:
    """Stands in for nnU-Net's trainer: ``initialize`` builds CPS's two networks, the log is a list."""

    def initialize(self):
        self.network = DualNetwork(_unet(10), _unet(11))
        self.log = []

    def print_to_log_file(self, *args):
        self.log.append(" ".join(map(str, args)))


def _paired_trainer(name: str):
    """A stand-in that declares exactly what the registered trainer ``name`` declares."""
    real = object.__new__(TRAINERS[name])
    assert isinstance(real, PairedPretrainedInitialisation)
    return type("Fake", (PairedPretrainedInitialisation, _Base), {
        "pretraining_method": real.pretraining_method, "pretrained_skip": real.pretrained_skip,
        "pretraining_command": real.pretraining_command, "configuration_name": "2d", "fold": 0,
        "plans_manager": SimpleNamespace(dataset_name="Dataset901_X", plans_name="P")})()


@pytest.mark.parametrize("name, encoder_only", [("nnUNetTrainerSimCLRCPS", True), ("nnUNetTrainerGenesisCPS", False),
                                                ("nnUNetTrainerSimCLRCPS_paper_40epochs_50its", True)])
def test_paired_cps_starts_each_network_from_its_own_pretraining(tmp_path, monkeypatch, name, encoder_only):
    method = "SimCLR" if encoder_only else "Genesis"
    a = _pretraining(tmp_path / "a.pth", 1, method=method, encoder_only=encoder_only)
    b = _pretraining(tmp_path / "b.pth", 2, method=method, encoder_only=encoder_only)
    pair = pair_checkpoints(str(tmp_path / "a.pth"), str(tmp_path / "b.pth"), str(tmp_path / "pair.pth"))
    monkeypatch.setenv(PRETRAINED_ENV, pair)
    trainer = _paired_trainer(name)
    trainer.initialize()
    state = trainer.network.state_dict()
    fresh = DualNetwork(_unet(10), _unet(11)).state_dict()
    for member, weights in (("net_a", a), ("net_b", b)):
        for key, value in _unet(0).state_dict().items():
            loaded = state[f"{member}.{key}"]
            encoder = key.startswith(("encoder.", "decoder.encoder."))  # the decoder holds the encoder it reads
            if encoder or (not encoder_only and ".seg_layers." not in key):
                assert torch.equal(loaded, weights[key.replace("decoder.encoder.", "encoder.", 1)]), (member, key)
            else:  # SimCLR: the decoder; both: the segmentation heads keep their initialisation
                assert torch.equal(loaded, fresh[f"{member}.{key}"]), (member, key)
    assert not torch.equal(state["net_a.encoder.stages.0.0.convs.0.conv.weight"],
                           state["net_b.encoder.stages.0.0.convs.0.conv.weight"])
    assert issubclass(TRAINERS[name], TRAINERS["nnUNetTrainerCPS"])
    assert issubclass(TRAINERS[name], TRAINERS["nnUNetTrainerCPS_paper"]) == ("_paper" in name)


def test_a_missing_pair_says_how_to_make_it(tmp_path, monkeypatch):
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "results"))
    monkeypatch.delenv(PRETRAINED_ENV, raising=False)
    with pytest.raises(PretrainedWeightsError) as error:
        _paired_trainer("nnUNetTrainerSimCLRCPS").initialize()
    message = str(error.value)
    expected = contract.checkpoint_path("Dataset901_X", "SimCLR", "P", "2d", 0, "_pair")
    assert message.startswith(f"No SimCLR pretraining at {expected}. Fix: pretrain twice")
    assert "-m simclr -f 0 --seed 0 --tag seed0" in message and "--seed 1 --tag seed1" in message
    first = contract.checkpoint_path("Dataset901_X", "SimCLR", "P", "2d", 0, "_seed0")
    assert f"nnunet_semi_pair_pretrained {first} " in message and "\n" not in message


def test_tag_names_a_folder_of_its_own_and_is_validated():
    assert contract.tag_suffix(None) == "" and contract.tag_suffix("seed1") == "_seed1"
    assert contract.folder_name("SimCLR", "P", "2d", contract.tag_suffix("seed1")) == "SimCLRPretrain_seed1__P__2d"
    with pytest.raises(ValueError, match="--tag 'a/b'"):
        contract.tag_suffix("a/b")
    args = build_parser("simclr").parse_args(["-d", "1", "-c", "2d", "-m", "simclr", "--seed", "1", "--tag", "seed1"])
    assert (args.seed, args.tag) == (1, "seed1")
