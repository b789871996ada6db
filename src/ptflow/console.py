"""Printing, from the main process only: plain lines, and a progress bar when on a terminal.

What is printed or written as text is valid Unicode (`printable`): a file or folder name with
bytes that are not UTF-8 reaches Python as lone surrogates, which a UTF-8 terminal, an HTML
file or a JSON response cannot encode.
"""

from __future__ import annotations

import sys

from ptflow.dist import is_main_process


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
    if is_main_process():
        print(f"warning: {printable(message)}", file=sys.stderr, flush=True)


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


# Characters that must not reach a terminal as they are: C0 controls (ESC starts the escape
# sequences that recolour, retitle or rewrite a terminal; a newline forges a second line), DEL,
# C1 controls (0x9b is a one-byte ESC [), the bidirectional marks that reorder what is shown
# (U+202E), line and paragraph separators, and lone surrogates (a file name's non-UTF-8 bytes, or
# a JSON "\udc00", which would make print() itself fail).
_UNSAFE = [*range(0x00, 0x20), *range(0x7F, 0xA0), 0x061C, 0x200E, 0x200F, *range(0x2028, 0x202F),
           *range(0x2066, 0x206A), *range(0xD800, 0xE000)]


_NAMED = {0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"}


def _escaped(code: int) -> str:
    if code in _NAMED:
        return _NAMED[code]
    if 0xDC80 <= code <= 0xDCFF:  # how Python's file-system encoding keeps a byte that is not UTF-8
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


_ESCAPES = {code: _escaped(code) for code in _UNSAFE}


def printable(text, keep: str = "") -> str:
    """text as one safe line: each character above (but those in `keep`) as a visible escape
    (\\x1b, \\n, \\u202e; a file name's non-UTF-8 byte as \\xff). Everything printed that came
    from a file, a folder name or another program passes through here."""
    table = {code: escape for code, escape in _ESCAPES.items() if chr(code) not in keep} if keep else _ESCAPES
    return str(text).translate(table)
