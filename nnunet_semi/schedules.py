"""Schedules: how a weight or a threshold changes over training (plain floats in, float out; ``t / t_max`` or the
training progress in [0, 1] on the time axis). The trainers read them through
:meth:`~nnunet_semi.training.semi_base.nnUNetTrainerSemiSupervised.training_progress`.

* :func:`sigmoid_rampup`: ``exp(-5 (1 - t)^2)``, the consistency ramp-up of the mean-teacher / CPS family;
* :func:`uamt_threshold`: UA-MT's uncertainty threshold (Yu et al., MICCAI 2019, Sec. 2.2);
* :func:`contrastive_weight`, :func:`confidence_threshold`: lambda_c and T of the dual-stream method
  (Karimijafarbigloo et al., "Leveraging unlabeled data for 3D medical image segmentation through self-supervised
  contrastive learning", arXiv:2311.12617, Sec. 3.1, eq. 4; see :mod:`nnunet_semi.losses.dual_stream`).
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
