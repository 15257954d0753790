"""Where training metrics go besides the run dir's `metrics.csv` (`train.loggers` in the recipe).

`metrics.csv` (one row per epoch) and `imbalance.csv` (one row per monitor update) are always
written: other commands and the report read them. `tensorboard` adds event files under
`RUN_DIR/tensorboard/` (`tensorboard --logdir runs/`), with the optional extra
`pip install "miam[tensorboard]"`:

- `loss/train` and `lr` every step; `loss/train_epoch` and `val/<metric>` every epoch;
- `masking/p/<m>`: the mean masking rate of each modality over the epoch;
- `imbalance/<s|k|d|rho_s|rho_d|r>/<m>`: the imbalance monitor at every update (epoch ends, and
  every `masking.monitor_steps` steps), on the global step axis: the curve MIAM users watch.
"""

from __future__ import annotations

import math
from pathlib import Path

from miam_cli.errors import UserError

LOGGERS = ("csv", "tensorboard")
IMBALANCE_KEYS = ("s", "k", "d", "rho_s", "rho_d", "r")


class Loggers:
    """The recipe's extra sinks, fed by the trainer; a no-op for `csv` alone and on ranks other than 0."""

    def __init__(self, names: list[str], run_dir: Path, groups: list[str], resume_step: int | None = None, active: bool = True):
        self.groups = groups
        self._tb = _tensorboard_writer(run_dir, resume_step) if active and "tensorboard" in names else None

    def step(self, step: int, loss: float, lr: float) -> None:
        if self._tb is not None:
            self._tb.add_scalar("loss/train", loss, step)
            self._tb.add_scalar("lr", lr, step)

    def epoch(self, step: int, row: dict, metric: str) -> None:
        if self._tb is None:
            return
        self._tb.add_scalar("loss/train_epoch", row["train_loss"], step)
        self._scalar(f"val/{metric}", row.get(f"val_{metric}"), step)
        for g in self.groups:
            self._scalar(f"masking/p/{g}", row.get(f"p_{g}"), step)
        self._tb.flush()  # an epoch's numbers are on disk when its line is printed

    def imbalance(self, step: int, record: dict) -> None:
        if self._tb is None:
            return
        for key in IMBALANCE_KEYS:
            for g in self.groups:
                self._scalar(f"imbalance/{key}/{g}", record.get(f"{key}_{g}"), step)

    def _scalar(self, tag: str, value, step: int) -> None:
        if value is not None and math.isfinite(value):  # d and ρ_d do not exist before two evaluations
            self._tb.add_scalar(tag, value, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def _tensorboard_writer(run_dir: Path, resume_step: int | None):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UserError('train.loggers: tensorboard needs the tensorboard package: pip install "miam[tensorboard]"') from None
    # on resume, events logged after the checkpoint's step (by the run that was stopped) are dropped
    return SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"), purge_step=resume_step)
