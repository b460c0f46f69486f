"""progress.png of the semi-supervised trainers: nnU-Net's three panels and the extra curves' panel, drawn in one
figure and saved once (SemiLocalLogger), and the logger's checkpoint carrying the trainer's state."""
import os

import matplotlib

matplotlib.use("agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from nnunetv2.training.logging.nnunet_logger import LocalLogger  # noqa: E402

from nnunet_semi.training.logging import SemiLocalLogger  # noqa: E402

EPOCHS = 12
CURVES = {"sup_losses": "supervised loss", "cps_losses": "CPS loss"}


def _logger() -> SemiLocalLogger:
    logger = SemiLocalLogger(CURVES)
    for e in range(EPOCHS):
        for key, value in (("train_losses", -0.1 * e), ("val_losses", -0.05 * e), ("mean_fg_dice", 0.05 * e),
                           ("ema_fg_dice", 0.04 * e), ("dice_per_class_or_region", [0.05 * e]),
                           ("lrs", 0.01 * (1 - e / EPOCHS) ** 0.9), ("epoch_start_timestamps", 100.0 * e),
                           ("epoch_end_timestamps", 100.0 * e + 30), ("sup_losses", 1.0 - 0.05 * e),
                           ("cps_losses", 0.02 * e)):
            logger.log(key, value, e)
    return logger


def _saved_figures(monkeypatch) -> list:
    """Every figure saved while plotting: its axes' positions and line data, taken just before saving."""
    saved, savefig = [], Figure.savefig

    def record(fig, *args, **kwargs):
        saved.append([(ax.get_position().bounds, ax.get_ylabel(),
                       [(list(line.get_ydata()), line.get_label()) for line in ax.get_lines()]) for ax in fig.axes])
        return savefig(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", record)
    return saved


def test_progress_png_has_four_panels_in_one_figure_with_the_curves(tmp_path, monkeypatch):
    saved = _saved_figures(monkeypatch)
    _logger().plot_progress_png(str(tmp_path))
    assert len(saved) == 1  # one figure, saved once (no second render around nnU-Net's PNG)
    axes = saved[0]
    rows = sorted({round(bounds[1], 3) for bounds, _, _ in axes}, reverse=True)  # twinx shares its row
    assert len(rows) == 4
    bottom = [a for a in axes if round(a[0][1], 3) == rows[-1]]
    assert len(bottom) == 1 and bottom[0][1] == "semi-supervised terms"
    lines = dict((label, y) for y, label in bottom[0][2])
    np.testing.assert_allclose(lines["supervised loss"], [1.0 - 0.05 * e for e in range(EPOCHS)])
    np.testing.assert_allclose(lines["CPS loss"], [0.02 * e for e in range(EPOCHS)])
    top = [a for a in axes if round(a[0][1], 3) == rows[0] and a[1] == "loss"][0]
    np.testing.assert_allclose(dict((label, y) for y, label in top[2])["loss_tr"], [-0.1 * e for e in range(EPOCHS)])
    image = plt.imread(os.path.join(tmp_path, "progress.png"))
    height, width = image.shape[:2]
    assert (height, width) == (7200, 3000)  # nnU-Net's 30 x 54 inch figure plus a fourth panel of 18 inches
    assert height / width == pytest.approx(4 / 3 * 54 / 30)
    panel = image[3 * height // 4 + 200:height - 200, 300:width - 100, :3]
    coloured = (panel.max(axis=-1) - panel.min(axis=-1)) > 0.25  # line pixels, not the grey background / grid
    assert coloured.sum() > 5000
    assert plt.subplots.__name__ == "subplots"  # no global is replaced


def test_without_curves_the_png_is_nnunets(tmp_path, monkeypatch):
    saved = _saved_figures(monkeypatch)
    logger = SemiLocalLogger({})
    logger.my_fantastic_logging = _logger().my_fantastic_logging
    for key in CURVES:
        del logger.my_fantastic_logging[key]
    logger.plot_progress_png(str(tmp_path))
    assert len(saved) == 1 and plt.imread(os.path.join(tmp_path, "progress.png")).shape[:2] == (5400, 3000)


def test_the_first_three_panels_are_nnunets(tmp_path, monkeypatch):
    """Our figure is drawn without nnU-Net's plot function (no global patched): its first three panels carry the same
    series, labels and axis titles as the figure nnU-Net's LocalLogger draws from the same logging dict."""
    saved = _saved_figures(monkeypatch)
    logger = _logger()
    (tmp_path / "ours").mkdir()
    logger.plot_progress_png(str(tmp_path / "ours"))
    LocalLogger.plot_progress_png(logger, str(tmp_path))  # nnU-Net's own function on the same dict
    ours, nnunets = saved
    assert len(nnunets) == 4 and len(ours) == 5  # three panels + nnU-Net's twin axis; ours adds one panel

    def content(axes):
        return [(ylabel, [(label, list(np.round(y, 9))) for y, label in lines]) for _, ylabel, lines in axes]

    assert content(ours[:3] + ours[4:]) == content(nnunets[:3] + nnunets[3:])
    assert ours[3][1] == "semi-supervised terms"


def test_logger_checkpoint_carries_the_trainer_state_outside_the_curves():
    from nnunet_semi.training.logging import CHECKPOINT_KEY, semi_checkpoint_state

    logger = _logger()
    assert CHECKPOINT_KEY not in logger.get_checkpoint()
    logger.extra_state = {"rng_states": [1], "method_state": {"a": 2}}
    saved = logger.get_checkpoint()
    assert saved[CHECKPOINT_KEY] == logger.extra_state and CHECKPOINT_KEY not in logger.my_fantastic_logging
    restored = SemiLocalLogger(CURVES)
    restored.load_checkpoint(saved)
    assert restored.loaded_extra_state == {"rng_states": [1], "method_state": {"a": 2}}
    assert CHECKPOINT_KEY not in restored.my_fantastic_logging
    assert restored.my_fantastic_logging["cps_losses"] == logger.my_fantastic_logging["cps_losses"]
    # where the state is read from: the logging entry, or the top level of checkpoints written before the move
    assert semi_checkpoint_state({"logging": saved}) == logger.extra_state
    assert semi_checkpoint_state({"logging": {}, CHECKPOINT_KEY: {"old": 1}}) == {"old": 1}
    assert semi_checkpoint_state({"logging": {}}) is None
