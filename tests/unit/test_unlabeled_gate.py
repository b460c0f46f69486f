"""The unlabeled-term gate (``unsup_gate_dice``, :class:`nnunet_semi.schedules.LabeledDiceGate`): its counts against
NumPy, its moving average and opening step against a hand recomputation, and the FixMatch / CPS candidates that use
it (weight 0 while closed, the ramp after opening, the state through a checkpoint)."""
import math

import numpy as np
import pytest
import torch

from nnunet_semi.schedules import LabeledDiceGate, labeled_dice_statistics, sigmoid_rampup
from tests.unit.test_teacher_family import make_trainer  # noqa: F401 (fixture: a real trainer)
from tests.unit.test_weak_strong import _fixed_strong_view, _inputs


def _counts_numpy(logits: np.ndarray, target: np.ndarray, ignore=None) -> np.ndarray:
    prediction, target = logits.argmax(1), target.reshape(logits.shape[0], *logits.shape[2:])
    out = np.zeros((3, logits.shape[1] - 1))
    for c in range(1, logits.shape[1]):
        for p, t in zip(prediction.ravel(), target.ravel()):
            if ignore is not None and t == ignore:
                continue
            out[0, c - 1] += (p == c) and (t == c)
            out[1, c - 1] += (p == c) and (t != c)
            out[2, c - 1] += (p != c) and (t == c)
    return out


@pytest.mark.parametrize("spatial, ignore", [((6, 5), None), ((3, 4, 5), None), ((6, 5), 3)])
def test_labeled_dice_statistics_equal_numpy_counts(spatial, ignore):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, *spatial, generator=g)
    target = torch.randint(0, 3 if ignore is None else 4, (2, 1, *spatial), generator=g).float()
    counts = labeled_dice_statistics(logits, target, ignore)
    assert counts.shape == (3, 2) and counts.dtype == torch.float64
    np.testing.assert_array_equal(counts.numpy(), _counts_numpy(logits.numpy(), target.numpy(), ignore))
    if ignore is not None:  # the ignored voxels are in no count
        kept = int((target != ignore).sum())
        assert all(counts[0, c] + counts[1, c] + counts[2, c] <= kept for c in range(2))


def test_gate_moving_average_opens_once_every_class_reaches_the_threshold_and_stays_open():
    gate = LabeledDiceGate(2, threshold=0.5, momentum=0.5)
    assert gate.factor(0, 10) == 0.0 and gate.open_step is None
    # step 0: class 1 Dice 2*3/(6+1+1) = 0.75, class 2 Dice 2*1/(2+3+1) = 1/3
    gate.update(torch.tensor([[3.0, 1.0], [1.0, 3.0], [1.0, 1.0]]), step=0)
    assert gate.dice_ema == pytest.approx([0.375, 1 / 6])
    # step 1: class 2 absent and not predicted (no update), class 1 Dice 1
    gate.update(torch.tensor([[4.0, 0.0], [0.0, 0.0], [0.0, 0.0]]), step=1)
    assert gate.dice_ema == pytest.approx([0.6875, 1 / 6]) and gate.open_step is None
    # steps 2, 3: class 2 Dice 1 -> 7/12, then 19/24 >= 0.5 at step 2 already (1/12 + 1/2 = 0.5833)
    gate.update(torch.tensor([[2.0, 5.0], [0.0, 0.0], [0.0, 0.0]]), step=2)
    assert gate.dice_ema[1] == pytest.approx(1 / 12 + 0.5) and gate.open_step == 2
    gate.update(torch.tensor([[0.0, 0.0], [9.0, 9.0], [9.0, 9.0]]), step=3)  # Dice 0 everywhere: stays open
    assert gate.open_step == 2 and max(gate.dice_ema) < 0.5
    assert gate.factor(2, 10) == pytest.approx(math.exp(-5))
    assert gate.factor(7, 10) == pytest.approx(math.exp(-5 * 0.25)) == pytest.approx(sigmoid_rampup(5, 10))
    assert gate.factor(12, 10) == gate.factor(100, 10) == 1.0 and gate.factor(3, 0) == 1.0
    restored = LabeledDiceGate(2)
    restored.load_state_dict(gate.state_dict())
    assert restored.state_dict() == gate.state_dict()
    with pytest.raises(ValueError, match="momentum"):
        LabeledDiceGate(2, momentum=1.0)


@pytest.mark.parametrize("trainer_name", ["nnUNetTrainerFixMatch_gate", "nnUNetTrainerCPS_gate"])
def test_gated_trainers_add_no_unlabeled_term_until_the_gate_opens(make_trainer, trainer_name):
    """While closed the total loss is the supervised loss alone (the unlabeled term is computed but weighted 0); the
    gate's curves are logged; with an open gate the weight follows the ramp from the opening step."""
    trainer = make_trainer(trainer_name, 2)
    assert trainer.unsup_gate_dice == 0.5 and {"unsup_gate", "labeled_dice_ema_min"} <= set(trainer.extra_curves)
    x, target, xu = _inputs(trainer)
    if "FixMatch" in trainer_name:
        _fixed_strong_view(trainer, xu)
    total, logged, curves = trainer.compute_losses(x, target, xu)
    sup = curves["sup_losses"]
    unsup = curves["unsup_losses"] if "FixMatch" in trainer_name else curves["cps_losses"]
    assert unsup > 0.05 and curves["unsup_gate"] == 0.0
    expected_total = sup if "FixMatch" in trainer_name else 2 * sup  # CPS back-propagates both networks' sums
    assert total.item() == pytest.approx(expected_total, rel=1e-6)
    # random networks on random labels: the labeled Dice average is far below 0.5
    assert 0.0 < curves["labeled_dice_ema_min"] < 0.1 and trainer.unlabeled_gate.open_step is None
    trainer.unlabeled_gate.open_step = 0  # opened at step 0; global_step is 0 here: the ramp's first value
    total_steps = trainer.num_epochs * trainer.num_iterations_per_epoch
    assert trainer.unsup_gate_factor() == pytest.approx(sigmoid_rampup(0, 0.1 * total_steps))
    trainer.step_in_epoch = 2  # 2 of the ramp's 2 steps done: full weight
    weight = trainer.current_unsup_weight() if "FixMatch" in trainer_name else trainer.current_cps_weight()
    assert weight == 1.0


def test_the_default_trainers_have_no_gate(make_trainer):
    for name in ("nnUNetTrainerFixMatch", "nnUNetTrainerCPS"):
        trainer = make_trainer(name, 2)
        assert trainer.unsup_gate_dice is None and trainer.unsup_gate_factor() == 1.0 and trainer.gate_curves() == {}


def test_the_gate_travels_in_the_checkpoint(make_trainer, tmp_path):
    trainer = make_trainer("nnUNetTrainerFixMatch_gate", 2)
    x, target, xu = _inputs(trainer)
    _fixed_strong_view(trainer, xu)
    trainer.compute_losses(x, target, xu)
    trainer.unlabeled_gate.open_step = 3
    trainer.save_checkpoint(str(tmp_path / "checkpoint.pth"))
    resumed = make_trainer("nnUNetTrainerFixMatch_gate", 2)
    resumed.was_initialized = True  # network, optimizer and loss are built: nnU-Net's load needs no initialize()
    assert resumed.unlabeled_gate is None
    resumed.load_checkpoint(str(tmp_path / "checkpoint.pth"))
    assert resumed.unlabeled_gate.state_dict() == trainer.unlabeled_gate.state_dict()


def test_every_gate_variant_shares_the_mixin_and_its_budget_variants_keep_the_gate():
    """The three ``_gate`` trainers are their method's trainer plus :class:`GatedUnlabeledTerm` (first in the MRO),
    and so are their budget variants (``_2epochs_5its``, ...): same threshold, the gate's curves added to the
    method's own, nnU-Net's constructor signature kept (nnUNetTrainer records its arguments from it)."""
    import inspect

    from nnunet_semi.training.cps import CPS_VARIANTS, nnUNetTrainerCPS
    from nnunet_semi.training.dual_stream import DUAL_STREAM_VARIANTS, nnUNetTrainerDualStreamCL
    from nnunet_semi.training.fixmatch import FIXMATCH_VARIANTS, nnUNetTrainerFixMatch
    from nnunet_semi.training.semi_base import GATE_CURVES, GatedUnlabeledTerm, nnUNetTrainerSemiSupervised

    for family, base in ((CPS_VARIANTS, nnUNetTrainerCPS), (FIXMATCH_VARIANTS, nnUNetTrainerFixMatch),
                         (DUAL_STREAM_VARIANTS, nnUNetTrainerDualStreamCL)):
        gated = {name: cls for name, cls in family.items() if "_gate" in name}
        assert len(gated) >= 2, family.keys()  # the _gate class and at least one budget variant of it
        for name, cls in gated.items():
            assert issubclass(cls, GatedUnlabeledTerm) and issubclass(cls, base), name
            assert cls.__mro__.index(GatedUnlabeledTerm) < cls.__mro__.index(nnUNetTrainerSemiSupervised), name
            assert cls.gate_dice == 0.5
            assert cls.extra_curves == {**base.extra_curves, **GATE_CURVES}, name
            assert list(inspect.signature(cls.__init__).parameters) == [
                "self", "plans", "configuration", "fold", "dataset_json", "device"], name
        ungated = [name for name, cls in family.items() if issubclass(cls, GatedUnlabeledTerm) and "_gate" not in name]
        assert ungated == []
