"""Checking option values: declared types read from annotations, values against them, one-line errors.

Values from flags arrive typed; values from a config file, a sweep spec or Python
(`ptflow.train(...)`) do not, so each is checked against the type its field declares, and
every failure is a UsageError naming the flag. Pure standard library.
"""

from __future__ import annotations

import types
import typing

from ptflow.constants import MAX_THREADS
from ptflow.errors import UsageError, shown


def value_type(hint) -> tuple[typing.Any, bool]:
    """A field annotation's value type with Optional unwrapped (list[int] stays list[int]), and
    whether None is allowed."""
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    options = typing.get_args(hint) if union else (hint,)
    return next(t for t in options if t is not type(None)), type(None) in options


def check_type(name: str, value, kind, optional: bool) -> None:
    """A value of the declared type (a list's items too), and no NUL in text: --NAME's error otherwise."""
    if value is None:
        check(optional, f"--{name} needs a value")
        return
    if typing.get_origin(kind) is list:
        item = typing.get_args(kind)[0]
        ok = isinstance(value, list) and all(is_type(v, item) for v in value)
    else:
        ok = is_type(value, kind)
    check(ok, f"--{name} must be {describe_type(kind)}, got {shown(value)}")
    if isinstance(value, str) or (isinstance(value, list) and value and isinstance(value[0], str)):
        check(all("\0" not in v for v in ([value] if isinstance(value, str) else value)),
              f"--{name} contains a NUL character")


def describe_type(kind) -> str:
    """A field type in words, for errors about values read from files and flags."""
    if typing.get_origin(kind) is list:
        return {int: "a list of integers", str: "a list of strings"}.get(typing.get_args(kind)[0], str(kind))
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string",
            dict: "a mapping (or its JSON text)"}.get(kind, str(kind))


def is_type(value, kind) -> bool:
    """isinstance, where a bool is no number and an int is a float."""
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def is_file_name(name: str) -> bool:
    return bool(name) and name not in (".", "..") and not any(c in name for c in "/\\\0") and len(name) <= 255


def is_json(value) -> bool:
    import json  # here: json stays off `ptflow --help`'s imports

    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True


def check_threads(count: int | None) -> None:
    """--num_threads, of train and of the commands that run a model (evaluate, predict, report)."""
    check(count is None or 1 <= count <= MAX_THREADS, f"--num_threads must be in 1..{MAX_THREADS}, got {count}")


def check(ok: bool, message: str) -> None:
    if not ok:
        raise UsageError(message)


def check_choice(name: str, value, choices: tuple) -> None:
    check(value in choices, f"--{name} must be one of {', '.join(map(str, choices))}, got {value!r}")
