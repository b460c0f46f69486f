"""progress.png with the semi-supervised curves: nnU-Net's own three panels, plus one panel below them."""
import math
import os
from typing import Dict

import matplotlib.pyplot as plt
from nnunetv2.training.logging.nnunet_logger import LocalLogger

#: nnU-Net's progress.png is one figure of 3 x 1 panels; ours adds a fourth row of the same height
NNUNET_PANELS = 3


class SemiLocalLogger(LocalLogger):
    """nnU-Net's ``LocalLogger`` with extra per-epoch curves ``{key: legend label}``.

    The curves are logged exactly like nnU-Net's (one value per epoch, checkpointed with the rest of the logging
    state) and drawn in a fourth panel of nnU-Net's own ``progress.png`` figure: while nnU-Net's
    ``plot_progress_png`` runs, its ``plt.subplots(3, 1, figsize=...)`` call gets a figure of four rows (the fourth
    one drawn here) and its first three axes, so nnU-Net renders its panels and saves the figure once.
    """

    def __init__(self, curves: Dict[str, str], verbose: bool = False):
        super().__init__(verbose)
        self.curves = dict(curves)
        for key in self.curves:
            self.my_fantastic_logging[key] = []

    def load_checkpoint(self, checkpoint: dict):
        super().load_checkpoint(checkpoint)
        # a checkpoint written without our curves (e.g. by another trainer) gets NaN-padded lists
        n_epochs = len(checkpoint.get("train_losses", []))
        for key in self.curves:
            self.my_fantastic_logging.setdefault(key, [math.nan] * n_epochs)

    def draw_semi_panel(self, ax) -> None:
        """The extra curves, one line each, over the epochs every curve has reached (as nnU-Net's panels)."""
        n = min(len(v) for v in self.my_fantastic_logging.values())
        for key, label in self.curves.items():
            ax.plot(range(n), self.my_fantastic_logging[key][:n], ls="-", label=label, linewidth=4)
        ax.set_xlabel("epoch")
        ax.set_ylabel("semi-supervised terms")
        ax.legend(loc=(0, 1), ncol=len(self.curves))

    def plot_progress_png(self, output_folder):
        if not self.curves:
            return super().plot_progress_png(output_folder)
        subplots = plt.subplots
        hooked = []

        def with_semi_panel(nrows=1, ncols=1, **kwargs):
            if hooked or (nrows, ncols) != (NNUNET_PANELS, 1):
                return subplots(nrows, ncols, **kwargs)
            width, height = kwargs.pop("figsize", plt.rcParams["figure.figsize"])
            fig, axes = subplots(NNUNET_PANELS + 1, 1, figsize=(width, height * (NNUNET_PANELS + 1) / NNUNET_PANELS),
                                 **kwargs)
            self.draw_semi_panel(axes[-1])
            hooked.append(fig)
            return fig, axes[:NNUNET_PANELS]

        plt.subplots = with_semi_panel
        try:
            super().plot_progress_png(output_folder)
        finally:
            plt.subplots = subplots
        if not hooked:  # nnU-Net drew its figure another way: append the panel to its PNG (slower, same content)
            self._append_semi_panel(os.path.join(output_folder, "progress.png"))

    def _append_semi_panel(self, path: str) -> None:
        base = plt.imread(path)
        height, width = base.shape[:2]
        panel = height // NNUNET_PANELS
        total = height + panel
        fig = plt.figure(figsize=(width / 100, total / 100), dpi=100)
        ax_img = fig.add_axes((0, panel / total, 1, height / total))
        ax_img.imshow(base)
        ax_img.axis("off")
        self.draw_semi_panel(fig.add_axes((0.08, 0.02, 0.84, panel / total - 0.04)))
        fig.savefig(path)
        plt.close(fig)
