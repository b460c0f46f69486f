"""The per-epoch curves of a training, as text: what the readings quote (``python -m benchmarks.curves FOLD_DIR
[--every K]``). Reads the ``logging`` entry of the fold's latest checkpoint (``checkpoint_latest.pth``, else
``checkpoint_final.pth``): nnU-Net's validation pseudo Dice per class, learning rate, train loss, and every
nnunet-semi curve the trainer logged (progress.png's fourth panel). One row per ``--every``-th epoch and the last."""
import argparse
import sys
from pathlib import Path
from typing import List

import torch

#: nnU-Net's own logging keys that are not one-number-per-epoch curves worth a column
_SKIP = {"mean_fg_dice", "ema_fg_dice", "dice_per_class_or_region", "val_losses", "epoch_start_timestamps",
         "epoch_end_timestamps", "nnunet_semi"}


def load_logging(fold_dir: Path) -> dict:
    for name in ("checkpoint_latest.pth", "checkpoint_final.pth"):
        path = Path(fold_dir) / name
        if path.is_file():
            return torch.load(path, map_location="cpu", weights_only=False)["logging"]
    raise FileNotFoundError(f"{fold_dir}: no checkpoint_latest.pth or checkpoint_final.pth. Fix: pass the fold folder "
                            f"of a training (…/<trainer>__<plans>__<configuration>/fold_0).")


def curve_table(logging: dict, every: int = 5) -> str:
    """A Markdown table: epoch, the pseudo Dice per class, then the other curves, every ``every``-th epoch and the
    last one."""
    dice = logging["dice_per_class_or_region"]
    n = len(dice)
    keys = [k for k, v in logging.items() if k not in _SKIP and isinstance(v, list) and len(v) == n]
    epochs = sorted({e for e in range(0, n, max(1, every))} | {n - 1}) if n else []
    classes = len(dice[0]) if n else 0
    header = ["epoch"] + [f"pseudo Dice {c + 1}" for c in range(classes)] + keys
    rows: List[str] = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for e in epochs:
        cells = [str(e)] + [f"{float(d):.3f}" for d in dice[e]] + [f"{float(logging[k][e]):.4g}" for k in keys]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("fold_dir", type=Path)
    parser.add_argument("--every", type=int, default=5, help="one row per this many epochs (and the last)")
    args = parser.parse_args(argv)
    print(curve_table(load_logging(args.fold_dir), args.every))
    return 0


if __name__ == "__main__":
    sys.exit(main())
