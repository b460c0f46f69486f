"""The EMA-teacher base trainer: a student, its exponential-moving-average teacher, and a ramped consistency weight.

Shared by Mean Teacher, UA-MT and BCP (each adds only its losses). The pieces:

* the network is a :class:`~nnunet_semi.networks.teacher.MeanTeacherNetwork` of the planned architecture
  (``student.*`` and ``teacher.*`` in ``network_weights``: exact ``--c`` resume, and ``nnUNetv2_predict`` loads it
  and runs the network named by the class attribute ``evaluated_network``);
* the optimizer (nnU-Net's SGD + poly schedule) holds the student's parameters only; the teacher has
  ``requires_grad=False`` (no gradient, no DDP synchronisation) and is updated after every optimizer step
  (:meth:`after_optimizer_step`) with ``theta' <- a theta' + (1 - a) theta`` (Tarvainen & Valpola 2017, eq. 2 /
  Sec. 3), ``a = min(1 - 1 / (t + 1), ema_decay)`` with ``ema_warmup`` (reference code), else ``ema_decay``;
* the consistency weight ``consistency_weight * exp(-5 (1 - t / (rampup_fraction * t_max))^2)`` (sigmoid ramp-up
  of Laine & Aila 2017 / SSL4MIS) with ``t`` the optimizer step, so schedules resume exactly from the epoch counter.
"""
import torch

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager

from nnunet_semi.networks.dual import unwrap
from nnunet_semi.networks.teacher import MeanTeacherNetwork, ema_decay, student_only_parameters
from nnunet_semi.training.semi_base import nnUNetTrainerSemiSupervised


class nnUNetTrainerEMATeacherBase(nnUNetTrainerSemiSupervised):
    """Base class (no unlabeled loss of its own); subclasses implement ``compute_losses``."""

    #: the network that validation and nnUNetv2_predict run: "student" or "teacher"
    evaluated_network = "student"

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.ema_decay = 0.99  # Tarvainen & Valpola 2017 / SSL4MIS / BCP
        self.ema_warmup = True  # a = min(1 - 1/(t+1), ema_decay) (Mean Teacher reference code)
        self.consistency_weight = 0.1  # SSL4MIS default
        self.consistency_rampup_fraction = 0.4  # sigmoid ramp-up over this fraction of all optimizer steps

    @classmethod
    def build_network_architecture(cls, plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                                   num_input_channels: int, num_output_channels: int,
                                   enable_deep_supervision: bool = True) -> MeanTeacherNetwork:
        """The planned network as the student, and its copy as the teacher."""
        student = nnUNetTrainer.build_network_architecture(plans_manager, configuration_manager, num_input_channels,
                                                           num_output_channels, enable_deep_supervision)
        return MeanTeacherNetwork(student, evaluate=cls.evaluated_network)

    @property
    def mean_teacher(self) -> MeanTeacherNetwork:
        return unwrap(self.network)

    def configure_optimizers(self):
        optimizer, lr_scheduler = super().configure_optimizers()
        for group in optimizer.param_groups:  # nnU-Net's optimizer, minus the teacher (updated by EMA only)
            group["params"] = list(student_only_parameters(group["params"], self.mean_teacher))
        return optimizer, lr_scheduler

    def grad_clip_groups(self):
        return [list(self.mean_teacher.student.parameters())]

    def ema_active(self) -> bool:
        """Whether the teacher follows the student at this step (BCP: not during its pre-training stage)."""
        return True

    def after_optimizer_step(self) -> None:
        super().after_optimizer_step()
        if self.ema_active():
            self.mean_teacher.update_teacher(ema_decay(self.global_step, self.ema_decay, self.ema_warmup))

    def current_consistency_weight(self) -> float:
        return self.step_rampup(self.consistency_weight, self.consistency_rampup_fraction)
