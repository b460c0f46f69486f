"""progress.png with the semi-supervised curves: nnU-Net's own three panels, plus one panel below them."""
import math
import os
from typing import Dict

import matplotlib.pyplot as plt
from nnunetv2.training.logging.nnunet_logger import LocalLogger


class SemiLocalLogger(LocalLogger):
    """nnU-Net's ``LocalLogger`` with extra per-epoch curves ``{key: legend label}``.

    The curves are logged exactly like nnU-Net's (one value per epoch, checkpointed with the rest of the logging
    state) and drawn in a fourth panel appended to nnU-Net's own ``progress.png``.
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

    def plot_progress_png(self, output_folder):
        super().plot_progress_png(output_folder)
        if not self.curves:
            return
        path = os.path.join(output_folder, "progress.png")
        base = plt.imread(path)
        height, width = base.shape[:2]
        panel = height // 3
        total = height + panel
        fig = plt.figure(figsize=(width / 100, total / 100), dpi=100)
        ax_img = fig.add_axes((0, panel / total, 1, height / total))
        ax_img.imshow(base)
        ax_img.axis("off")
        ax = fig.add_axes((0.08, 0.02, 0.84, panel / total - 0.04))
        n = min(len(v) for v in self.my_fantastic_logging.values())
        for key, label in self.curves.items():
            ax.plot(range(n), self.my_fantastic_logging[key][:n], ls="-", label=label, linewidth=4)
        ax.set_xlabel("epoch")
        ax.set_ylabel("semi-supervised terms")
        ax.legend(loc=(0, 1), ncol=len(self.curves))
        fig.savefig(path)
        plt.close(fig)
