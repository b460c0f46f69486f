"""nnU-Net's local logger with the semi-supervised curves: logged and checkpointed like nnU-Net's, drawn in one more
panel of progress.png; its checkpoint also carries the trainer's own state (random streams, method state)."""
import math
import os
from typing import Dict, Optional

import matplotlib.pyplot as plt
import seaborn as sns
from nnunetv2.training.logging.nnunet_logger import LocalLogger

#: nnU-Net's progress.png is one figure of 3 x 1 panels; ours adds a fourth row of the same height
NNUNET_PANELS = 3
#: the key of our state in the logger's checkpoint (``checkpoint['logging']``); checkpoints written before it moved
#: there hold it at the top level (``checkpoint[CHECKPOINT_KEY]``)
CHECKPOINT_KEY = "nnunet_semi"


def semi_checkpoint_state(checkpoint: dict) -> Optional[dict]:
    """The nnunet-semi state (``{'rng_states', 'method_state'}``) of a training checkpoint, wherever it was written
    (inside ``checkpoint['logging']``, or at the top level in older checkpoints); None when it has none."""
    logging = checkpoint.get("logging")
    if isinstance(logging, dict) and CHECKPOINT_KEY in logging:
        return logging[CHECKPOINT_KEY]
    return checkpoint.get(CHECKPOINT_KEY)


class SemiLocalLogger(LocalLogger):
    """nnU-Net's ``LocalLogger`` with extra per-epoch curves ``{key: legend label}``.

    The curves are logged exactly like nnU-Net's (one value per epoch, checkpointed with the rest of the logging
    state) and drawn in a fourth panel below nnU-Net's three in ``progress.png`` (:meth:`plot_progress_png`).
    ``extra_state`` (set by the trainer while it saves) is stored in the logger's checkpoint under
    :data:`CHECKPOINT_KEY` and read back into ``loaded_extra_state``, never into the curves.
    """

    def __init__(self, curves: Dict[str, str], verbose: bool = False):
        super().__init__(verbose)
        self.curves = dict(curves)
        for key in self.curves:
            self.my_fantastic_logging[key] = []
        #: set by the trainer around nnU-Net's save_checkpoint: stored under CHECKPOINT_KEY in the logger's checkpoint
        self.extra_state: Optional[dict] = None
        #: what the last loaded checkpoint held under CHECKPOINT_KEY (None: nothing)
        self.loaded_extra_state: Optional[dict] = None

    def get_checkpoint(self):
        checkpoint = super().get_checkpoint()
        if self.extra_state is None:
            return checkpoint
        return {**checkpoint, CHECKPOINT_KEY: self.extra_state}

    def load_checkpoint(self, checkpoint: dict):
        checkpoint = dict(checkpoint)
        self.loaded_extra_state = checkpoint.pop(CHECKPOINT_KEY, None)  # not a curve: kept out of the logging dict
        super().load_checkpoint(checkpoint)
        # a checkpoint written without our curves (e.g. by another trainer) gets NaN-padded lists
        n_epochs = len(checkpoint.get("train_losses", []))
        for key in self.curves:
            self.my_fantastic_logging.setdefault(key, [math.nan] * n_epochs)

    def draw_semi_panel(self, ax, epochs: int) -> None:
        """The extra curves, one line each, over the first ``epochs`` epochs."""
        for key, label in self.curves.items():
            ax.plot(range(epochs), self.my_fantastic_logging[key][:epochs], ls="-", label=label, linewidth=4)
        ax.set_xlabel("epoch")
        ax.set_ylabel("semi-supervised terms")
        ax.legend(loc=(0, 1), ncol=len(self.curves))

    def plot_progress_png(self, output_folder):
        """nnU-Net's progress.png with a fourth panel: the extra curves.

        Without extra curves this is nnU-Net's own plot. With them, the figure is drawn here, from the logging dict:
        the three panels nnU-Net draws (losses with the pseudo Dice on a second axis, epoch durations, learning rate;
        the same series, labels and look) and ours below, each panel as high as nnU-Net's. Drawn here rather than
        by nnU-Net's ``LocalLogger.plot_progress_png`` because that function builds and saves its figure in one call
        (``plt.subplots(3, 1)`` ... ``savefig``) and leaves no way to add a panel without replacing
        ``plt.subplots`` for the duration of the call (a global patch) or re-reading and re-rendering its PNG every
        epoch; ``tests/unit/test_progress_plot.py`` compares our first three panels with nnU-Net's own figure.
        """
        if not self.curves:
            return super().plot_progress_png(output_folder)
        log = self.my_fantastic_logging
        epochs = min(len(values) for values in log.values())  # every curve has reached these epochs
        x = list(range(epochs))
        sns.set(font_scale=2.5)
        fig, (ax_loss, ax_time, ax_lr, ax_semi) = plt.subplots(NNUNET_PANELS + 1, 1,
                                                               figsize=(30, 54 * (NNUNET_PANELS + 1) / NNUNET_PANELS))
        ax_dice = ax_loss.twinx()
        ax_loss.plot(x, log["train_losses"][:epochs], color="b", ls="-", label="loss_tr", linewidth=4)
        ax_loss.plot(x, log["val_losses"][:epochs], color="r", ls="-", label="loss_val", linewidth=4)
        ax_dice.plot(x, log["mean_fg_dice"][:epochs], color="g", ls="dotted", label="pseudo dice", linewidth=3)
        ax_dice.plot(x, log["ema_fg_dice"][:epochs], color="g", ls="-", label="pseudo dice (mov. avg.)", linewidth=4)
        ax_loss.set(xlabel="epoch", ylabel="loss")
        ax_dice.set_ylabel("pseudo dice")
        ax_loss.legend(loc=(0, 1))
        ax_dice.legend(loc=(0.2, 1))

        durations = [end - start for start, end in zip(log["epoch_start_timestamps"][:epochs],
                                                       log["epoch_end_timestamps"][:epochs])]
        ax_time.plot(x, durations, color="b", ls="-", label="epoch duration", linewidth=4)
        ax_time.set(ylim=(0, ax_time.get_ylim()[1]), xlabel="epoch", ylabel="time [s]")
        ax_time.legend(loc=(0, 1))

        ax_lr.plot(x, log["lrs"][:epochs], color="b", ls="-", label="learning rate", linewidth=4)
        ax_lr.set(xlabel="epoch", ylabel="learning rate")
        ax_lr.legend(loc=(0, 1))

        self.draw_semi_panel(ax_semi, epochs)
        fig.tight_layout()
        fig.savefig(os.path.join(output_folder, "progress.png"))
        plt.close(fig)
