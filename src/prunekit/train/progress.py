"""A rich progress bar for training: epoch, step, loss, accuracy, lr, images/s, ETA."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


class TrainProgress:
    """One bar per run (steps over all epochs) when ``enabled``; per-epoch lines (``log``) whenever ``lines`` —
    so ``--no-progress`` hides the bar, not the news (non-main ranks pass both False)."""

    def __init__(self, enabled: bool, total_steps: int, done_steps: int = 0, *, lines: bool | None = None):
        self.enabled = enabled
        self.lines = enabled if lines is None else lines
        self.console = Console(stderr=True)
        if not enabled:
            return
        self._progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"), TimeRemainingColumn(),
            console=self.console, transient=False, disable=not self.console.is_terminal)
        self._task = self._progress.add_task("train", total=total_steps, completed=done_steps, stats="")
        self._progress.start()

    def update(self, completed: int, epoch: int, epochs: int, stats: dict[str, float]) -> None:
        if not self.enabled:
            return
        text = "  ".join(f"{k} {v:.4g}" for k, v in stats.items())
        self._progress.update(self._task, completed=completed, description=f"epoch {epoch + 1}/{epochs}",
                              stats=text)

    def log(self, message: str) -> None:
        """A line above the bar (or plain stderr when there is no bar or no terminal)."""
        if not self.lines:
            return
        if self.enabled and self.console.is_terminal:
            self._progress.console.log(message)
        else:
            print(message, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.enabled:
            self._progress.stop()
