"""Consistency and entropy losses of the mean-teacher family and of entropy minimisation (tensors in, tensor out).

* Mean Teacher (Tarvainen & Valpola, NeurIPS 2017, Sec. 2, consistency cost J = E ||f(x, theta', eta') -
  f(x, theta, eta)||^2): :func:`softmax_mse` between the student's and the teacher's softmax outputs;
* UA-MT (Yu et al., MICCAI 2019, Sec. 2.2, eq. 2-4): T stochastic teacher passes, their mean softmax mu_c, the
  predictive entropy u = -sum_c mu_c log mu_c (:func:`predictive_entropy`), the threshold H =
  (3/4 + 1/4 e^{-5 (1 - t/t_max)^2}) ln C (:func:`nnunet_semi.schedules.uamt_threshold`) and the masked consistency
  L_c = sum_v I(u_v < H) ||f'_v - f_v||^2 / sum_v I(u_v < H) (:func:`uncertainty_masked_mse`; as in the reference
  code the squared difference is averaged over the C classes too);
* entropy minimisation (Grandvalet & Bengio 2005; listed by Chaitanya et al. 2023): :func:`mean_entropy`;
* :func:`teacher_consistency`: the Mean Teacher cost by name, the paper's softmax MSE or (not the paper's) soft Dice
  against the teacher's argmax.
"""
import math

import torch

from nnunet_semi.losses.weak_strong import masked_soft_dice


EPS = 1e-6


def _check_probs(p: torch.Tensor, name: str) -> None:
    if p.ndim < 3:
        raise ValueError(f"{name}: expected (B, C, *spatial), got shape {tuple(p.shape)}")


def softmax_mse(student_logits: torch.Tensor, teacher_probs: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """``(softmax(student_logits) - teacher_probs)^2`` per element; ``'mean'`` averages over all elements (batch,
    classes, voxels), ``'none'`` returns the map ``(B, C, *spatial)``. The teacher side carries no gradient."""
    _check_probs(student_logits, "softmax_mse")
    if student_logits.shape != teacher_probs.shape:
        raise ValueError(f"student {tuple(student_logits.shape)} and teacher {tuple(teacher_probs.shape)} shapes "
                         f"differ")
    diff = (torch.softmax(student_logits.float(), 1) - teacher_probs.detach().float()) ** 2
    return diff.mean() if reduction == "mean" else diff


def teacher_consistency(student_logits: torch.Tensor, teacher_probs: torch.Tensor, kind: str = "mse"
                        ) -> torch.Tensor:
    """``'mse'``: :func:`softmax_mse` (Sec. 2 of the Mean Teacher paper); ``'dice'``: soft Dice of
    softmax(student_logits) against argmax(teacher_probs) over the whole batch, every voxel and class counted
    (:func:`~nnunet_semi.losses.weak_strong.masked_soft_dice` with an all-ones mask; the teacher side carries no
    gradient)."""
    if kind == "mse":
        return softmax_mse(student_logits, teacher_probs)
    if kind == "dice":
        labels = teacher_probs.detach().argmax(1)
        return masked_soft_dice(student_logits, labels, torch.ones_like(labels, dtype=torch.bool))
    raise ValueError(f"unknown Mean Teacher consistency {kind!r}; expected 'mse' or 'dice'")


def entropy_map(probs: torch.Tensor) -> torch.Tensor:
    """``-sum_c p_c log(p_c + 1e-6)`` per voxel, ``(B, *spatial)``."""
    _check_probs(probs, "entropy_map")
    return -(probs * torch.log(probs + EPS)).sum(1)


def predictive_entropy(mc_probs: torch.Tensor) -> torch.Tensor:
    """UA-MT eq. 2-3: ``mc_probs`` ``(T, B, C, *spatial)`` are the softmax outputs of T stochastic passes;
    returns the entropy of their mean, ``(B, *spatial)``."""
    if mc_probs.ndim < 4:
        raise ValueError(f"expected (T, B, C, *spatial) Monte-Carlo probabilities, got {tuple(mc_probs.shape)}")
    return entropy_map(mc_probs.mean(0))


def uncertainty_masked_mse(student_logits: torch.Tensor, teacher_probs: torch.Tensor, uncertainty: torch.Tensor,
                           threshold: float):
    """UA-MT eq. 4: the :func:`softmax_mse` map on the voxels whose ``uncertainty`` ``(B, *spatial)`` is below
    ``threshold``, ``sum(mask * mse) / (C * sum(mask) + 1e-16)``. Returns ``(loss, mask)``; no certain voxel gives
    a zero loss that is still attached to the graph."""
    diff = softmax_mse(student_logits, teacher_probs, reduction="none")
    if uncertainty.shape != diff.shape[:1] + diff.shape[2:]:
        raise ValueError(f"uncertainty {tuple(uncertainty.shape)} does not match the outputs {tuple(diff.shape)}")
    mask = (uncertainty < threshold).to(diff.dtype)
    loss = (diff * mask[:, None]).sum() / (diff.shape[1] * mask.sum() + 1e-16)
    return loss, mask


def mean_entropy(logits: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """Mean voxel entropy of ``softmax(logits)``; ``normalize`` divides by ln C (range [0, 1], as the SSL4MIS
    entropy-minimisation code does), so the weight means the same for any number of classes."""
    h = entropy_map(torch.softmax(logits.float(), 1)).mean()
    return h / math.log(logits.shape[1]) if normalize else h
