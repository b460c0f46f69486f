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
