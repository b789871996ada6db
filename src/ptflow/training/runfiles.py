"""Reading a run folder's JSON files: one reader for every command, because a run folder is input.

A run folder may come from another machine or another person, or be damaged by a crash or a
full disk, and one bad file must not take down `ptflow runs` for every run beside it. So
config.json, run.json, env.json and metrics.jsonl are read only here, and each either gives a
checked value or raises RunFileError, a one-line PtflowError naming the run, the file and
the line:

- only regular files are read (never through a symbolic link; a FIFO or a device is refused
  before it could block or never end), and at most a stated number of bytes;
- the bytes must be UTF-8, the JSON an object nested at most sizes.MAX_NESTING levels;
- the fields ptflow reads must have their types (FIELDS below); others pass untouched, so a
  newer ptflow's files still list.

A missing file is not an error: a run killed while starting has only some of them. Nor is a
metrics.jsonl whose last line is torn (no newline, not JSON): a crash during an append leaves
exactly that, and the epochs before it stand. Pure standard library: listing needs no torch.
"""

from __future__ import annotations

import errno
import json
import math
import os
from pathlib import Path

from ptflow.errors import PtflowError, shown
from ptflow.files import open_regular
from ptflow.sizes import MAX_NESTING, check_structure
from ptflow.training import scoring

MAX_JSON_BYTES = 1 << 20  # config.json, run.json, env.json: a few kilobytes each when ptflow writes them
MAX_METRICS_BYTES = 32 << 20  # metrics.jsonl: about 150,000 epochs of some 200 bytes
MAX_LINE_BYTES = 64 << 10  # one epoch's record


class RunFileError(PtflowError):
    """A run folder's file that cannot be used; `place` names the file (and line), `reason` says why."""

    def __init__(self, run: Path, where: str, reason: str):
        super().__init__(f"{run}: {where}: {reason}")
        self.place, self.reason = where, reason

    @property
    def short(self) -> str:
        """Without the run's path, for a listing whose row already names the run."""
        return f"{self.place}: {self.reason}"


# Checks of a value a field may hold (None is always allowed: a field ptflow cleared or never set).
def _integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 1 << 53


def _number(value) -> bool:
    """A float (NaN and infinity included: a diverged run's loss is NaN), or an int a float can hold."""
    if isinstance(value, bool):
        return False
    return isinstance(value, float) or (isinstance(value, int) and abs(value) < 1e300)


def _finite(low: float, high: float):
    return lambda value: _number(value) and math.isfinite(value) and low <= value <= high


def _text(value) -> bool:
    return isinstance(value, str)


def _list_of(check):
    return lambda value: isinstance(value, list) and all(check(v) for v in value)


def _fields(checks: dict):
    """A mapping holding every one of checks' fields, each passing its check."""
    return lambda value: isinstance(value, dict) and all(k in value and check(value[k]) for k, check in checks.items())


def _names(value) -> bool:  # env.json's versions: package name -> version
    return isinstance(value, dict) and all(isinstance(v, str) for v in value.values())


_proportion = _finite(0, 1)
_seconds = _finite(0, 1e9)  # 31 years: a sum of them still formats as a duration
_timestamp = _finite(0, 1e11)  # seconds since 1970, up to the year 5138: time.localtime takes them all
_cv = _fields({"folds": _integer, "runs": _list_of(_text), "valid_loss": _list_of(_number),
               "valid_acc": _list_of(_number), "best_epoch": _list_of(_integer), "valid_loss_mean": _number,
               "valid_loss_std": _number, "valid_acc_mean": _number, "valid_acc_std": _number})

# The fields ptflow reads from each file, and what each must hold.
FIELDS = {
    "run.json": {"status": _text, "started": _timestamp, "finished": _timestamp, "seconds": _seconds,
                 "pid": _integer, "host": _text, "dataset": _text, "model": _text, "world_size": _integer,
                 "best_epoch": _integer, "epochs_run": _integer, "best_valid_loss": _number, "valid_acc": _number,
                 "test_loss": _number, "test_acc": _proportion, "test_n": _integer,
                 "test_acc_ci95": _list_of(_proportion), "test_ece": _number, "temperature": _number,
                 "valid_ece": _number, "valid_ece_calibrated": _number, "error": _text, "cv": _cv,
                 "bad_images": _integer},
    "config.json": {"dataset": _text, "model": _text, "run_name": _text},
    "env.json": {"versions": _names, "command": _list_of(_text), "git_commit": _text, "data_fingerprint": _text,
                 "seed": _integer, "host": _text},
    "metrics.jsonl": {"epoch": _integer, "train_loss": _number, "valid_loss": _number, "valid_acc": _number,
                      "lr": _number, "seconds": _seconds},
}
REQUIRED = {"metrics.jsonl": ("epoch", "train_loss", "valid_loss", "valid_acc")}  # every epoch has these


def read_record(run: Path, name: str) -> dict | None:
    """config.json, run.json or env.json of a run, checked; None when the file is not there."""
    data = _read(run, name, MAX_JSON_BYTES)
    if data is None:
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RunFileError(run, name, _not_utf8(exc)) from None
    return _checked(run, name, name, text)


def read_metrics(run: Path) -> list[dict]:
    """metrics.jsonl's epochs, checked; [] when the file is not there. A torn last line is skipped."""
    data = _read(run, "metrics.jsonl", MAX_METRICS_BYTES)
    lines = (data or b"").split(b"\n")
    torn = lines.pop()  # what follows the last newline: b"" unless a crash cut an append short
    records = []
    for number, line in enumerate(lines, 1):
        if line.strip():
            records.append(_line(run, number, line))
    if torn.strip():
        try:
            records.append(_line(run, len(lines) + 1, torn))
        except RunFileError:
            pass  # cut off mid-write by a crash: the epochs before it stand
    return records


def _line(run: Path, number: int, line: bytes) -> dict:
    where = f"metrics.jsonl line {number}"
    if len(line) > MAX_LINE_BYTES:
        raise RunFileError(run, where, f"longer than {MAX_LINE_BYTES:,} bytes")
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RunFileError(run, where, _not_utf8(exc)) from None
    return _checked(run, "metrics.jsonl", where, text)


def _read(run: Path, name: str, limit: int) -> bytes | None:
    """Up to limit bytes of a regular file in the run folder; None if it does not exist."""
    try:
        fd = open_regular(Path(run) / name, os.O_RDONLY)  # never through a link, never blocked by a FIFO
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return None
        reason = {errno.ELOOP: "a symbolic link, which ptflow does not follow",
                  errno.ENXIO: "not a regular file"}.get(exc.errno, f"cannot be read ({exc.strerror})")
        raise RunFileError(run, name, reason) from None
    try:
        info = os.fstat(fd)
        if info.st_size > limit:
            raise RunFileError(run, name, f"{info.st_size:,} bytes, more than the {limit:,} ptflow reads")
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(limit + 1)  # a file still growing is read up to the limit, no further
    except OSError as exc:
        raise RunFileError(run, name, f"cannot be read ({exc.strerror})") from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise RunFileError(run, name, f"more than the {limit:,} bytes ptflow reads")
    return data


def _checked(run: Path, name: str, where: str, text: str) -> dict:
    """text parsed as a JSON object whose known fields have their types."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise RunFileError(run, where, f"nested more than {MAX_NESTING} levels deep") from None
    except json.JSONDecodeError as exc:
        at = f"column {exc.colno}" if where != name else f"line {exc.lineno}, column {exc.colno}"
        raise RunFileError(run, where, f"not JSON ({exc.msg} at {at})") from None
    except ValueError as exc:  # an integer of more than 4,300 digits (Python's own limit)
        raise RunFileError(run, where, f"not JSON ({str(exc).split(':')[0].lower()})") from None
    if not isinstance(value, dict):
        raise RunFileError(run, where, f"a JSON {_kind(value)}, not an object")
    return _typed(run, name, where, value)


def _typed(run: Path, name: str, where: str, value: dict) -> dict:
    try:
        check_structure(value, where, PtflowError)
    except PtflowError as exc:
        raise RunFileError(run, where, str(exc).removeprefix(f"{where}: ")) from None
    for key in REQUIRED.get(name, ()):
        if value.get(key) is None:
            raise RunFileError(run, where, f"no {key!r}")
    for key, check in [*FIELDS.get(name, {}).items(), *(_declared() if name == "run.json" else [])]:
        if value.get(key) is not None and not check(value[key]):
            raise RunFileError(run, where, f"{key!r} is {_described(value[key])}: not a valid {key}")
    return value


def _declared() -> list:
    """Checks for the run.json keys of metrics declared in scoring.py that FIELDS does not list:
    a number, and its interval a pair of numbers."""
    keys = [key for key in scoring.run_keys() if key not in FIELDS["run.json"]]
    return [(key, _list_of(_number) if key.endswith("_ci95") else _number) for key in keys]


def _not_utf8(exc: UnicodeDecodeError) -> str:
    return f"not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})"


def _kind(value) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean"}.get(type(value), "number")


def _described(value) -> str:
    """A wrong value as an error shows it: its JSON kind and its repr, cut short."""
    return f"{_kind(value)} {shown(value)}"
