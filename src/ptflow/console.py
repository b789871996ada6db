"""Printing, from the main process only: plain lines, and a progress bar when on a terminal.

What is printed or written as text is valid Unicode (`printable`): a file or folder name with
bytes that are not UTF-8 reaches Python as lone surrogates, which a UTF-8 terminal, an HTML
file or a JSON response cannot encode.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager

from ptflow.dist import is_main_process

_warnings_held = False  # inside held_warnings()


def printable(text: str) -> str:
    """text as valid Unicode: the lone surrogate of an undecodable byte (os.fsdecode's \udce9) becomes
    the visible escape \xe9, any other lone surrogate \ud800; everything else is kept as it is."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return "".join(_escape(c) for c in text)


def _escape(c: str) -> str:
    if "\udc80" <= c <= "\udcff":
        return f"\\x{ord(c) - 0xDC00:02x}"
    return f"\\u{ord(c):04x}" if "\ud800" <= c <= "\udfff" else c


def info(message: str = "") -> None:
    if is_main_process():
        print(printable(message), flush=True)


def warn(message: str) -> None:
    if is_main_process() and not _warnings_held:
        print(f"warning: {printable(message)}", file=sys.stderr, flush=True)


@contextmanager
def held_warnings():
    """No warnings while inside: for work done twice, whose warnings the second doing says (ptflow's
    launcher checks the config and run folder that its processes then resolve again)."""
    global _warnings_held
    before, _warnings_held = _warnings_held, True
    try:
        yield
    finally:
        _warnings_held = before


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
    if verbose != 1 or not sys.stdout.isatty() or not is_main_process():
        return None
    return lambda epoch: EpochBar(f"epoch {epoch + 1}/{n_epochs}")
