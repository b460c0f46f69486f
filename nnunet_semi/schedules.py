"""Schedules: how a weight or a threshold changes over training (plain floats in, float out; ``t / t_max`` or the
training progress in [0, 1] on the time axis). The trainers read them through
:meth:`~nnunet_semi.training.semi_base.nnUNetTrainerSemiSupervised.training_progress`.

* :func:`sigmoid_rampup`: ``exp(-5 (1 - t)^2)``, the consistency ramp-up of the mean-teacher / CPS family;
* :func:`uamt_threshold`: UA-MT's uncertainty threshold (Yu et al., MICCAI 2019, Sec. 2.2);
* :func:`contrastive_weight`, :func:`confidence_threshold`: lambda_c and T of the dual-stream method
  (Karimijafarbigloo et al., "Leveraging unlabeled data for 3D medical image segmentation through self-supervised
  contrastive learning", arXiv:2311.12617, Sec. 3.1, eq. 4; see :mod:`nnunet_semi.losses.dual_stream`);
* :class:`LabeledDiceGate`: when the unlabeled term may start (the network's Dice on its labeled batches), with
  :func:`labeled_dice_statistics`, its per-step counts.
"""
import math


def sigmoid_rampup(current: float, rampup_length: float) -> float:
    """``exp(-5 (1 - t)^2)`` with ``t = clip(current / rampup_length, 0, 1)`` (Laine & Aila 2017; the usual
    ramp-up of consistency weights in mean-teacher / CPS code). ``rampup_length <= 0`` means no ramp-up (1.0)."""
    if rampup_length <= 0:
        return 1.0
    t = min(max(current / rampup_length, 0.0), 1.0)
    return float(math.exp(-5.0 * (1.0 - t) ** 2))


def uamt_threshold(progress: float, num_classes: int) -> float:
    """UA-MT's threshold H = (3/4 + 1/4 * sigmoid_rampup(progress, 1)) * ln C (``progress`` = t / t_max)."""
    return (0.75 + 0.25 * sigmoid_rampup(progress, 1.0)) * math.log(num_classes)


def _progress(t: float, t_max: float) -> float:
    if t_max <= 0:
        raise ValueError(f"t_max must be > 0, got {t_max}")
    return min(max(t / t_max, 0.0), 1.0)


def contrastive_weight(t: float, t_max: float, base: float = 0.1, exponent: float = 4.0) -> float:
    """lambda_c of Sec. 3.1 as printed: ``base * exp(exponent * (1 - t / t_max)^2)`` (t / t_max clipped to
    [0, 1]). Defaults are the paper's (0.1, 4): 5.46 at t = 0 falling to 0.1 at t_max; ``exponent=-4`` is the
    rising ramp-up reading (0.0018 -> 0.1)."""
    return float(base * math.exp(exponent * (1.0 - _progress(t, t_max)) ** 2))


def confidence_threshold(t: float, t_max: float, start: float = 0.6, end: float = 0.9) -> float:
    """T of eq. 4 ("adjusted dynamically", no schedule given): linear from ``start`` at t = 0 to ``end`` at
    t_max (t / t_max clipped to [0, 1])."""
    return float(start + (end - start) * _progress(t, t_max))


def labeled_dice_statistics(logits: "torch.Tensor", target: "torch.Tensor", ignore_label=None) -> "torch.Tensor":
    """``(3, C - 1)`` float64 counts ``[tp, fp, fn]`` per foreground class of the argmax of ``logits`` ``(B, C,
    *spatial)`` against the label map ``target`` ``(B, 1, *spatial)`` or ``(B, *spatial)``, voxels labelled
    ``ignore_label`` left out: what :class:`LabeledDiceGate` observes (sums over the batch, so they add over DDP
    ranks and over networks)."""
    import torch

    num_classes = logits.shape[1]
    prediction = logits.detach().argmax(1)
    target = target.reshape(prediction.shape).long()
    keep = torch.ones_like(target, dtype=torch.bool) if ignore_label is None else target != ignore_label
    counts = torch.zeros((3, num_classes - 1), dtype=torch.float64, device=logits.device)
    for c in range(1, num_classes):
        predicted, true = (prediction == c) & keep, (target == c) & keep
        counts[0, c - 1] = (predicted & true).sum()
        counts[1, c - 1] = (predicted & ~true).sum()
        counts[2, c - 1] = (~predicted & true).sum()
    return counts


class LabeledDiceGate:
    """When the unlabeled term may start: once the network segments every foreground class of its own labeled
    training batches with Dice >= ``threshold`` (an exponential moving average per class, ``momentum`` per step,
    starting at 0), the gate opens for good and the unlabeled weight ramps up over ``rampup_steps`` optimizer steps
    from there (:func:`sigmoid_rampup`; 0 = at once). Before it opens the factor is 0: the trainer is labeled-only
    nnU-Net.

    Why (nnunet-semi's setting, not a paper's; measured in ``benchmarks/results/acdc3-cpu``): with few labeled cases
    the network predicts background everywhere for the first epochs, so every pseudo-label of the unlabeled images
    is background (FixMatch: every voxel passes tau = 0.95; CPS: both networks' argmax) and the unlabeled term
    teaches that the structures are absent before the supervised term has taught them (FixMatch's collapsed right
    ventricle, CPS's late left ventricle on ACDC). A fixed warm-up cannot know when a draw learns its structures
    (epoch ~4 on one ACDC draw, ~35 of 40 on another); the network's Dice on the labeled batches it trains on can.

    A batch where a class is neither predicted nor present leaves that class's average unchanged. ``update`` takes
    the summed :func:`labeled_dice_statistics` of the step (all-reduced over DDP ranks by the caller, so the gate is
    the same on every rank)."""

    def __init__(self, num_foreground: int, threshold: float = 0.5, momentum: float = 0.98):
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.threshold, self.momentum = float(threshold), float(momentum)
        self.dice_ema = [0.0] * int(num_foreground)
        self.open_step = None  # the optimizer step at which it opened (None: closed)

    def update(self, statistics, step: int) -> None:
        """One step's ``(3, C - 1)`` counts; opens the gate at ``step`` when every class's average reaches the
        threshold."""
        tp, fp, fn = (statistics[i].tolist() for i in range(3))
        for c in range(len(self.dice_ema)):
            denominator = 2 * tp[c] + fp[c] + fn[c]
            if denominator > 0:
                dice = 2 * tp[c] / denominator
                self.dice_ema[c] = self.momentum * self.dice_ema[c] + (1 - self.momentum) * dice
        if self.open_step is None and min(self.dice_ema) >= self.threshold:
            self.open_step = int(step)

    def factor(self, step: int, rampup_steps: float) -> float:
        """0 while closed; ``sigmoid_rampup(step - open_step, rampup_steps)`` once open."""
        if self.open_step is None:
            return 0.0
        return sigmoid_rampup(step - self.open_step, rampup_steps)

    def state_dict(self) -> dict:
        return {"threshold": self.threshold, "momentum": self.momentum, "dice_ema": list(self.dice_ema),
                "open_step": self.open_step}

    def load_state_dict(self, state: dict) -> None:
        self.threshold, self.momentum = float(state["threshold"]), float(state["momentum"])
        self.dice_ema, self.open_step = [float(v) for v in state["dice_ema"]], state["open_step"]
