"""Writing files so that a crash never leaves half a file behind, and locking them.

Every write goes to a temporary file in the same folder, is flushed to disk, then renamed over
the target: readers see the old file or the new one, never a mix. In a training job of several
processes only its main process writes (main_process.py).

ptflow writes regular files only: a target that exists must be a regular file, which is then
replaced whole. A folder, a symbolic link (a rename would replace the link, not the file it
names, and writing through it could reach anywhere), a FIFO, a socket or a device is refused
(`target_problem`): `-o /dev/null` run as root must not replace the device with a file. The
commands check their outputs with it before any work, and every writer again as it writes.
A write that the file system refuses (disk full, read-only, a folder where the file should go)
is a one-line PtflowError naming the file, with the temporary file removed and the target as it was.
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat
import tempfile
from pathlib import Path
from typing import Callable

from ptflow.console import printable
from ptflow.errors import PtflowError
from ptflow.main_process import is_main

# Errors of the file system itself, as opposed to a writer's own (a download's network error).
FILESYSTEM_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EISDIR,
                     errno.ENOTDIR, errno.EEXIST, errno.EIO, errno.EFBIG, errno.ENAMETOOLONG, errno.ENOENT}


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Let write(temporary_path) fill a temporary file beside path, flush it to disk, rename it over path.

    Taking a writer rather than bytes lets libraries that write files themselves (safetensors)
    stream into it, without a second in-memory copy of the whole file.
    """
    if not is_main():
        return
    path = Path(path)
    refuse_target(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise write_error(path, exc) from None
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600 files; give them the usual mode
        os.close(fd)
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        refuse_target(path)  # again: something may have been put there while the file was written
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            Path(tmp).unlink(missing_ok=True)
        except OSError:  # a file system turned read-only keeps it: the next resume of a run removes it
            pass
        if _errno(exc) in FILESYSTEM_ERRORS:
            raise write_error(path, exc) from None
        raise


# What each kind of file that is not a regular file is called in an error.
_KINDS = ((stat.S_ISDIR, "a folder is in the way"),
          (stat.S_ISLNK, "it is a symbolic link, and ptflow does not write through links"),
          (stat.S_ISCHR, "it is a character device, not a regular file"),
          (stat.S_ISBLK, "it is a block device, not a regular file"),
          (stat.S_ISFIFO, "it is a FIFO (named pipe), not a regular file"),
          (stat.S_ISSOCK, "it is a socket, not a regular file"))


def target_problem(path: str | os.PathLike) -> str | None:
    """Why ptflow will not write path, or None when it is absent or a regular file.

    The link itself is looked at (lstat), never what it points to. Anything else that stops a
    write (a missing permission, a file where a folder should be) is left to the write to report.
    """
    try:
        mode = os.lstat(path).st_mode
    except (OSError, ValueError):
        return None
    if stat.S_ISREG(mode):
        return None
    return next((why for test, why in _KINDS if test(mode)), "it is not a regular file")


def refuse_target(path: str | os.PathLike) -> None:
    problem = target_problem(path)
    if problem:
        raise PtflowError(f"cannot write {path}: {problem}")


def database_file(url: str | None) -> str | None:
    """The file an SQLite URL (sqlite:///runs/sweeps.db, SQLAlchemy's form) names; None for other
    databases and for an in-memory one."""
    prefix = "sqlite:///"
    if not url or not url.startswith(prefix):
        return None
    name = url[len(prefix):].split("?", 1)[0]
    return name if name and name != ":memory:" else None


def write_error(path: Path, exc: BaseException) -> PtflowError:
    """A file-system error while writing path, as one line: what, where, and why."""
    number = _errno(exc)
    reason = os.strerror(number) if number else str(exc)
    if number == errno.EISDIR or (number == errno.EEXIST and path.is_dir()):
        reason = "a folder is in the way"
    elif number in (errno.ENOTDIR, errno.EEXIST):
        reason = "a file is in the way where a folder should be"
    elif number == errno.ELOOP:  # O_NOFOLLOW met a link
        reason = "it is a symbolic link, and ptflow does not write through links"
    elif number == errno.ENXIO:  # O_NONBLOCK met a FIFO, or open_regular something else
        reason = "it is not a regular file"
    return PtflowError(f"cannot write {path}: {reason}")


def _errno(exc: BaseException) -> int | None:
    if isinstance(exc, OSError):
        return exc.errno
    found = re.search(r"os error (\d+)", str(exc))  # safetensors reports I/O errors as "(os error 28)"
    return int(found.group(1)) if found else None


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def _umask() -> int:
    mask = os.umask(0)  # the only portable way to read it is to set it and put it back
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, printable(text).encode("utf-8"))  # a non-UTF-8 file name in a report


def write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def append_line(path: str | os.PathLike, line: str) -> None:
    """Append one line (JSONL metrics): a torn last line is the worst a crash can do, and readers skip it."""
    if not is_main():
        return
    refuse_target(path)
    try:
        fd = open_regular(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        with open(fd, "a", encoding="utf-8") as f:
            f.write(line.rstrip("\n") + "\n")
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        raise write_error(Path(path), exc) from None


def overwrite_in_place(path: str | os.PathLike, text: str) -> None:
    """Rewrite a small file in place, without a temporary file: the last resort when the disk is
    full (the file's own blocks are reused). Not atomic: a crash meanwhile can leave it torn."""
    data = text.encode("utf-8")
    fd = open_regular(path, os.O_WRONLY)
    try:
        os.write(fd, data)
        os.ftruncate(fd, len(data))
        os.fsync(fd)
    finally:
        os.close(fd)


def open_regular(path: str | os.PathLike, flags: int) -> int:
    """A descriptor of a regular file, to read it or to write to it in place. O_NOFOLLOW: never
    through a link someone left where a run's file should be (ELOOP); O_NONBLOCK: a FIFO put there
    fails at once (or opens, and is refused: ENXIO) rather than blocking until the other end opens."""
    fd = os.open(path, flags | os.O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0), 0o666)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.ENXIO, "not a regular file")
    os.set_blocking(fd, True)
    return fd


def lock(path: str | os.PathLike) -> int | None:
    """Take an exclusive lock on a folder (or an existing file), or None if another holder has it.

    Nothing is written: the lock lives in the kernel (flock on a read-only descriptor), and the
    operating system drops it when the holder closes it or dies (kill -9 included), so a lock
    is never left stale. Without flock (Windows) nothing is locked.
    """
    try:
        import fcntl
    except ImportError:
        return -1
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise PtflowError(f"cannot open {path} to lock it: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # BlockingIOError: held elsewhere
        os.close(fd)
        return None
    return fd


def unlock(fd: int) -> None:
    if fd >= 0:
        os.close(fd)  # closing the descriptor drops the flock


def remove_temporaries(folder: str | os.PathLike) -> None:
    """Delete the temporary files a writer killed mid-write left in folder (never a finished file)."""
    if not is_main():
        return
    # ".NAME.XXXX.tmp" are atomic_write's; ".tmpXXXXXX" the safetensors library's own, which it
    # writes first and renames onto ours.
    for tmp in [*Path(folder).glob(".*.tmp"), *Path(folder).glob(".tmp??????")]:
        if tmp.is_file():
            tmp.unlink(missing_ok=True)
