"""Run logs: a CSV of per-epoch metrics (rewritten atomically from the history) and optional TensorBoard."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any

from prunekit.errors import ConfigError


def write_csv(history: list[dict[str, Any]], path: Path) -> None:
    """Write every epoch's metrics to ``path`` (all keys that appear, in first-seen order)."""
    keys: list[str] = []
    for row in history:
        keys += [k for k in row if k not in keys]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    w.writerows(history)
    tmp = path.with_suffix(".csv.tmp")
    tmp.write_text(buf.getvalue())
    os.replace(tmp, path)


class TensorBoardLog:
    """Scalars to TensorBoard under ``log_dir``; needs the optional ``tensorboard`` package."""

    def __init__(self, log_dir: Path, purge_step: int | None = None):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError("tensorboard=True needs the tensorboard package: "
                              "pip install 'prunekit[tensorboard]'") from None
        self.writer = SummaryWriter(str(log_dir), purge_step=purge_step)

    def log(self, metrics: dict[str, Any], step: int) -> None:
        for k, v in metrics.items():
            if isinstance(v, (int, float)) and k not in ("epoch",):
                self.writer.add_scalar(k, v, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
