"""``nnUNetv2_train ... -pretrained_weights PATH`` with the trainers of this package.

nnU-Net's ``maybe_load_checkpoint`` hands the file to ``load_pretrained_weights(trainer.network, PATH)``, which
requires every key of the network in the checkpoint: a labeled-only nnU-Net checkpoint (``encoder.*``,
``decoder.*``) fails with an AssertionError inside nnU-Net for every wrapper network here (``net_a.*``/``net_b.*`` of
CPS, ``student.*``/``teacher.*`` of the mean-teacher family, ``decoder_1.*`` of the two-decoder networks, projection
heads). :func:`install` wraps nnU-Net's ``maybe_load_checkpoint`` (the function ``nnUNetv2_train`` calls, looked up
at call time) so that, for a trainer with a ``load_pretrained_weights_file(path)`` method (every nnunet-semi trainer),
the trainer loads the file itself; everything else (nnU-Net's own trainers, ``--c``, ``--val``) runs nnU-Net's
function unchanged. What each trainer does with the file: ``nnUNetTrainerSemiSupervised.load_pretrained_weights_file``
and ``PretrainedInitialisation.load_pretrained_weights_file``.

Why this is the one global that is still replaced (issue 18 removed the others): in nnunetv2 2.8
``run_training`` / ``run_ddp`` call ``maybe_load_checkpoint(trainer, c, val, pretrained_weights)``, which calls
``trainer.initialize()`` and then the module-level function ``load_pretrained_weights(trainer.network, PATH)``. That
function receives the network object, not the trainer, and asserts that every key of the network's state dict
(segmentation heads excepted) is in the file with the same shape, then calls ``load_state_dict`` on the unwrapped
module. No trainer hook runs between ``initialize()`` and that call, and the file name reaches only that function;
the trainer never sees it. The alternatives all fail or are worse: (a) a network whose ``state_dict()`` pretends to
be one plain U-Net would break nnU-Net's checkpoints and predictor, which load the same network strictly; (b)
reading ``-pretrained_weights`` from ``sys.argv`` in the trainer still leaves nnU-Net's assertion to fail right
after; (c) nnU-Net's trainer class offers no ``load_pretrained_weights`` method to override. The wrap is installed
once when ``nnunet_semi.training`` is imported (what ``nnUNet_extTrainer`` does for ``nnUNetv2_train``), is
idempotent, leaves nnU-Net's function untouched for every other trainer and for ``--c`` / ``--val``, and is tested
by ``tests/unit/test_pretrained_weights_hook.py`` and ``tests/cli/test_nnunet_toolbox.py``.
"""
from nnunetv2.run import run_training

_MARK = "_nnunet_semi_wrapped"


def install() -> None:
    """Wrap ``nnunetv2.run.run_training.maybe_load_checkpoint`` once (idempotent)."""
    original = run_training.maybe_load_checkpoint
    if getattr(original, _MARK, False):
        return

    def maybe_load_checkpoint(nnunet_trainer, continue_training: bool, validation_only: bool,
                              pretrained_weights_file: str = None):
        load = getattr(nnunet_trainer, "load_pretrained_weights_file", None)
        if pretrained_weights_file is None or continue_training or validation_only or load is None:
            return original(nnunet_trainer, continue_training, validation_only, pretrained_weights_file)
        load(pretrained_weights_file)

    setattr(maybe_load_checkpoint, _MARK, True)
    maybe_load_checkpoint.__doc__ = original.__doc__
    run_training.maybe_load_checkpoint = maybe_load_checkpoint
