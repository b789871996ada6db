"""Printing: plain lines, and a progress bar when on a terminal.

In a training job of several processes only its main process prints (main_process.py); outside
one, every process does.
"""

from __future__ import annotations

import sys

from ptflow.main_process import is_main


def info(message: str = "") -> None:
    if is_main():
        print(message, flush=True)


def warn(message: str) -> None:
    if is_main():
        print(f"warning: {message}", file=sys.stderr, flush=True)


class EpochBar:
    """A transient per-epoch progress bar (rich), used only when stdout is a terminal."""

    def __init__(self, description: str):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._progress = Progress(TextColumn(description), BarColumn(), MofNCompleteColumn(),
                                  TimeRemainingColumn(), transient=True)
        self._task = None

    def __enter__(self):
        self._progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self._progress.__exit__(*exc)

    def update(self, done: int, total: int) -> None:
        if self._task is None:
            self._task = self._progress.add_task("", total=total)
        self._progress.update(self._task, completed=done)


def epoch_bar_factory(n_epochs: int, verbose: int):
    """A factory of per-epoch bars, or None where a bar would only clutter a log file."""
    if verbose != 1 or not sys.stdout.isatty() or not is_main():
        return None
    return lambda epoch: EpochBar(f"epoch {epoch + 1}/{n_epochs}")
