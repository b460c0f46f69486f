"""A student network and its exponential-moving-average (EMA) teacher behind one ``nn.Module``.

Tarvainen & Valpola, "Mean teachers are better role models", NeurIPS 2017, Sec. 2 (eq. 2 there)::

    theta'_t = a theta'_{t-1} + (1 - a) theta_t        (teacher weights theta', student weights theta)

used by Mean Teacher, UA-MT and BCP here. Putting both networks in one module lets nnU-Net's machinery carry them:

* ``network_weights`` in the checkpoint holds ``student.*`` and ``teacher.*`` (exact ``--c`` resume; the predictor
  builds the same wrapper and loads it strictly);
* the teacher's parameters have ``requires_grad=False``: autograd never reaches them, DDP does not register them
  for gradient synchronisation, and :func:`student_only_parameters` keeps them out of the optimizer. Every rank
  applies the same EMA update to the same (synchronised) student weights, so the teachers stay identical;
* training mode: ``forward(x)`` is the student's forward (outputs as nnU-Net's loss expects them);
  :meth:`MeanTeacherNetwork.teacher_forward` runs the teacher without gradient;
* eval mode (validation, ``nnUNetv2_predict``): the network the paper evaluates, ``evaluate='student'`` or
  ``'teacher'`` (fixed when the wrapper is built, i.e. by the trainer class).
"""
import copy
from typing import Iterable, Iterator

import torch
from torch import nn

EVALUATED = ("student", "teacher")


def ema_decay(step: int, decay: float, warmup: bool = True) -> float:
    """The EMA coefficient ``a`` for the update after optimizer step ``step`` (0-based: the number of steps done
    before it). ``warmup``: ``min(1 - 1 / (step + 1), decay)`` as in the Mean Teacher reference code, so that the
    teacher starts as a copy of the student and averages over all steps so far until ``1 / (1 - decay)`` steps;
    otherwise the constant ``decay`` (BCP)."""
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"EMA decay must be in [0, 1], got {decay}")
    return min(1.0 - 1.0 / (step + 1), decay) if warmup else decay


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, alpha: float) -> None:
    """``teacher <- alpha * teacher + (1 - alpha) * student`` for every parameter and floating-point buffer (e.g.
    batch-norm statistics); integer buffers are copied. The two modules must have the same structure."""
    # named_parameters / named_buffers list a tensor once even where the module holds it under two names (the
    # decoders of dynamic_network_architectures keep an alias of the encoder: a state_dict lists it twice and would
    # update it twice)
    t_state = dict(teacher.named_parameters())
    t_state.update(teacher.named_buffers())
    s_state = dict(student.named_parameters())
    s_state.update(student.named_buffers())
    if t_state.keys() != s_state.keys():
        raise ValueError("teacher and student have different parameters: they must be the same architecture")
    for key, t in t_state.items():
        s = s_state[key].detach()
        if t.is_floating_point():
            t.mul_(alpha).add_(s, alpha=1.0 - alpha)
        else:
            t.copy_(s)


def channel_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """Drop whole feature channels with probability ``p`` and scale the rest by ``1 / (1 - p)`` (``nn.Dropout2d`` /
    ``nn.Dropout3d`` for any dimensionality; always active: this is the Monte-Carlo dropout of UA-MT)."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    if p == 0.0:
        return x
    keep = torch.empty(x.shape[:2] + (1,) * (x.ndim - 2), device=x.device, dtype=x.dtype).bernoulli_(1.0 - p)
    return x * keep / (1.0 - p)


class MeanTeacherNetwork(nn.Module):
    """``student`` and ``teacher`` (a copy of the student at construction), see the module docstring."""

    def __init__(self, student: nn.Module, evaluate: str = "student"):
        super().__init__()
        if evaluate not in EVALUATED:
            raise ValueError(f"evaluate must be one of {EVALUATED}, got {evaluate!r}")
        self.student = student
        self.teacher = copy.deepcopy(student)
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.evaluate = evaluate

    def planned_networks(self):
        """Student and teacher (the teacher starts as a copy of the student)."""
        return {"student": self.student, "teacher": self.teacher}

    def set_deep_supervision(self, enabled: bool) -> None:
        for net in (self.student, self.teacher):
            net.decoder.deep_supervision = enabled

    def forward(self, x: torch.Tensor):
        if self.training or self.evaluate == "student":
            return self.student(x)
        return self.teacher(x)

    @torch.no_grad()
    def teacher_forward(self, x: torch.Tensor, bottleneck_dropout: float = 0.0):
        """The teacher's output(s) for ``x`` without gradient. ``bottleneck_dropout > 0`` applies
        :func:`channel_dropout` to the deepest encoder features (the bottleneck) for this call only."""
        if bottleneck_dropout <= 0.0:
            return self.teacher(x)
        handle = self.teacher.encoder.stages[-1].register_forward_hook(
            lambda module, inputs, output: channel_dropout(output, bottleneck_dropout))
        try:
            return self.teacher(x)
        finally:
            handle.remove()

    @torch.no_grad()
    def update_teacher(self, alpha: float) -> None:
        ema_update(self.teacher, self.student, alpha)

    @torch.no_grad()
    def copy_student_to_teacher(self) -> None:
        ema_update(self.teacher, self.student, 0.0)


def student_only_parameters(params: Iterable[nn.Parameter], network: MeanTeacherNetwork) -> Iterator[nn.Parameter]:
    """``params`` without the teacher's parameters."""
    teacher_ids = {id(p) for p in network.teacher.parameters()}
    return (p for p in params if id(p) not in teacher_ids)


def gaussian_input_noise(x: torch.Tensor, std: float = 0.1, clip: float = 0.2) -> torch.Tensor:
    """``clamp(N(0, std^2), -clip, clip)`` noise of ``x``'s shape (the teacher-input noise of the SSL4MIS mean
    teacher / UA-MT code)."""
    return torch.clamp(torch.randn_like(x) * std, -clip, clip)
