"""Writing files so that a crash never leaves half a file behind.

Every write goes to a temporary file in the same folder, is flushed to disk, then renamed over
the target: readers see the old file or the new one, never a mix. Only the main process writes.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Callable

from ptflow.dist import is_main_process


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Let write(temporary_path) fill a temporary file beside path, flush it to disk, rename it over path.

    Taking a writer rather than bytes lets libraries that write files themselves (safetensors)
    stream into it, without a second in-memory copy of the whole file.
    """
    if not is_main_process():
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600 files; give them the usual mode
        os.close(fd)
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def _umask() -> int:
    mask = os.umask(0)  # the only portable way to read it is to set it and put it back
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def append_line(path: str | os.PathLike, line: str) -> None:
    """Append one line (JSONL metrics): a torn last line is the worst a crash can do, and readers skip it."""
    if not is_main_process():
        return
    with open(path, "a", encoding="utf-8") as f:
        f.write(line.rstrip("\n") + "\n")
        f.flush()
        os.fsync(f.fileno())


def remove_temporaries(folder: str | os.PathLike) -> None:
    """Delete the temporary files a writer killed mid-write left in folder (never a finished file)."""
    if not is_main_process():
        return
    for tmp in Path(folder).glob(".*.tmp"):
        tmp.unlink(missing_ok=True)
