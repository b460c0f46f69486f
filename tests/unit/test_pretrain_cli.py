"""``nnunet_semi_pretrain``: each method declares its own options; unset options keep the method's defaults."""
import inspect

import pytest

from pretraining.cli import PRETRAINERS, build_parser


def _kwargs(method: str, *options: str) -> dict:
    args = build_parser(method).parse_args(["-d", "1", "-c", "2d", "-m", method, *options])
    return PRETRAINERS[method].kwargs_from_args(args)


def test_every_method_parses_its_defaults_into_valid_constructor_arguments():
    for method, cls in PRETRAINERS.items():
        kwargs = _kwargs(method)
        accepted = set()
        for klass in cls.__mro__:
            if "__init__" in vars(klass):
                accepted |= set(inspect.signature(klass.__init__).parameters)
        assert set(kwargs) <= accepted, (method, set(kwargs) - accepted)
        assert "projection_dim" not in kwargs and "temperature" not in kwargs  # unset: the method's default


def test_options_reach_the_constructor():
    assert _kwargs("ccm", "--no-con", "--temperature", "0.2") == {
        "temperature": 0.2, "block_size": None, "lambda_con": 1.0, "use_con": False, "use_rec": True,
        "head_batch_norm": False}
    assert _kwargs("ccm", "--head-batch-norm")["head_batch_norm"] is True
    genesis = _kwargs("genesis", "--no-inpaint", "--shuffle-blocks", "5")
    assert genesis["outpaint_probability"] == 1.0 and genesis["num_blocks"] == 5
    assert genesis["paint_probability"] == 0.9 and genesis["nonlinear_probability"] == 0.9
    local = _kwargs("mmgl_local", "--scale-weights", "0.5", "0.5", "--no-global", "--proj-dim", "64")
    assert local["scale_weights"] == [0.5, 0.5] and local["use_global"] is False and local["projection_dim"] == 64
    assert local["multi_view"] is True and local["stride"] == 4
    assert set(_kwargs("simclr")) == {"head_batch_norm"}  # one scale, one view: no multi-scale / view options


def test_options_of_another_method_are_refused():
    with pytest.raises(SystemExit):
        build_parser("ideal").parse_args(["-d", "1", "-c", "2d", "-m", "ideal", "--no-con"])


def test_continue_flag_keeps_the_configuration(monkeypatch):
    """``--c`` (continue) and ``-c`` (configuration) are two options: ``-c 2d --c`` trains 2d, continued. (They once
    shared argparse's dest, so ``--c`` replaced the configuration with True and every continued run failed.)"""
    import pretraining.cli as cli

    calls = []

    class Recorder:
        def run(self, continue_training):
            calls.append(continue_training)
            return "ran"

    def fake_create(method, dataset, configuration, **kwargs):
        calls.append((method, dataset, configuration))
        return Recorder()

    monkeypatch.setattr(cli, "create_pretrainer", fake_create)
    cli.pretrain_entry(["-d", "970", "-c", "2d", "-m", "mmgl_local", "-device", "cpu", "--c"])
    cli.pretrain_entry(["-d", "970", "--c", "-c", "3d_fullres", "-m", "ccm", "-device", "cpu"])
    cli.pretrain_entry(["-d", "970", "-c", "2d", "-m", "ideal", "-device", "cpu"])
    assert calls == [("mmgl_local", "970", "2d"), True, ("ccm", "970", "3d_fullres"), True, ("ideal", "970", "2d"),
                     False]
