"""Printing: plain lines, and a progress bar when on a terminal.

In a training job of several processes only its main process prints (main_process.py); outside
one, every process does. What is printed or written as text is valid Unicode (`printable`): a
file or folder name with bytes that are not UTF-8 reaches Python as lone surrogates, which a
UTF-8 terminal, an HTML file or a JSON response cannot encode. What is printed is also free of
terminal codes (`terminal_safe`): names and values from files are shown, never obeyed.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager

from ptflow.main_process import is_main

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
    if is_main():
        print(terminal_safe(message, keep="\n\t"), flush=True)  # lines of text: no terminal codes


def warn(message: str) -> None:
    if is_main() and not _warnings_held:
        print(f"warning: {terminal_safe(message)}", file=sys.stderr, flush=True)  # one line


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
    if verbose != 1 or not sys.stdout.isatty() or not is_main():
        return None
    return lambda epoch: EpochBar(f"epoch {epoch + 1}/{n_epochs}")


# Characters that must not reach a terminal as they are: C0 controls (ESC starts the escape
# sequences that recolour, retitle or rewrite a terminal; a newline forges a second line), DEL,
# C1 controls (0x9b is a one-byte ESC [), the bidirectional marks that reorder what is shown
# (U+202E), and line and paragraph separators. Lone surrogates are printable()'s.
_NAMED = {0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"}
_ESCAPES = {code: _NAMED.get(code) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
            for code in (*range(0x00, 0x20), *range(0x7F, 0xA0), 0x061C, 0x200E, 0x200F, *range(0x2028, 0x202F),
                         *range(0x2066, 0x206A))}


def terminal_safe(text, keep: str = "") -> str:
    """text safe to print, as one line: printable(), and each character above but those in `keep`
    as a visible escape (\\x1b, \\n, \\u202e). info() and warn() pass everything through it, and
    the one place that prints "error:" lines; a table escapes each cell with it, newlines included."""
    table = {code: escape for code, escape in _ESCAPES.items() if chr(code) not in keep} if keep else _ESCAPES
    return printable(str(text)).translate(table)
