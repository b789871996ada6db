"""The schema of a model file's description, checked once, before anything in it is used.

A model file's JSON description (see files.py) is data from whoever wrote the file. Everything
ptflow reads from it is declared here with its type, and checked before use: a wrong type, a
missing key or a value out of range is a one-line error naming the key, never a crash deep
inside prediction. Keys not declared here are accepted and kept (newer ptflows and other tools
may add optional keys), and optional keys may be absent (older files).

What must also agree with the weights is checked in files.py: the architecture's tensors on the
meta device before the model is built, then the output size with the class names.
"""

from __future__ import annotations

import math
from typing import Callable

from ptflow.constants import MAX_SEED
from ptflow.data.geometry import INTERPOLATIONS
from ptflow.errors import PtflowError, shown
from ptflow.sizes import MAX_CLASSES, check_structure

IMAGE_STYLES = ("digit", "object", "resize", "crop")  # data/imaging.py
MAX_EXAMPLE = 1 << 26  # values in one example (a 4730x4730 RGB image): loading runs one through the model


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


def _numbers(value) -> bool:
    return isinstance(value, list) and all(_is_number(v) for v in value)


def _shape(value) -> bool:
    return isinstance(value, list) and len(value) in (1, 3) and all(_is_int(v) and v >= 1 for v in value) \
        and math.prod(value) <= MAX_EXAMPLE


def _classes(value) -> bool:
    return isinstance(value, list) and 1 <= len(value) <= MAX_CLASSES and all(isinstance(v, str) for v in value) \
        and len(set(value)) == len(value)


def _preprocessing(value) -> bool:
    if not isinstance(value, dict) or not _is_number(value.get("scale")) or value["scale"] <= 0:
        return False
    mean, std = value.get("mean"), value.get("std")
    if mean is None and std is None:
        return True
    return _numbers(mean) and _numbers(std) and len(mean) == len(std) and all(s > 0 for s in std)


def _optional(check: Callable) -> Callable:
    return lambda value: value is None or check(value)


def _ratio(value) -> bool:
    return _is_number(value) and 0 < value < 1


# key: (required, what it must be, check). Keys of `config` that evaluate reads are checked too.
FIELDS: dict[str, tuple[bool, str, Callable]] = {
    "format": (True, "'ptflow.model'", lambda v: v == "ptflow.model"),
    "format_version": (False, "a positive integer", lambda v: _is_int(v) and v >= 1),
    "model": (True, "a model name", lambda v: isinstance(v, str) and bool(v.strip())),
    "model_args": (True, "a JSON object of keyword arguments", lambda v: isinstance(v, dict)),
    "model_source": (False, "an object or null", _optional(lambda v: isinstance(v, dict))),
    "classes": (True, f"a list of 1 to {MAX_CLASSES:,} distinct class names", _classes),
    "input_shape": (True, f"[features] or [channels, height, width], positive integers, at most "
                          f"{MAX_EXAMPLE:,} values", _shape),
    "preprocessing": (True, "{scale > 0, mean and std: equal-length lists of numbers, std > 0, or null}",
                      _preprocessing),
    "image_style": (False, " or ".join(IMAGE_STYLES), _optional(lambda v: v in IMAGE_STYLES)),
    "crop_pct": (False, "a number in [0.05, 1] (the crop style's share)",
                 _optional(lambda v: _is_number(v) and 0.05 <= v <= 1)),
    "interpolation": (False, f"{' or '.join(INTERPOLATIONS)} (the crop style's resize; absent: bilinear)",
                      _optional(lambda v: v in INTERPOLATIONS)),
    "dataset": (False, "a string", _optional(lambda v: isinstance(v, str))),
    "data_fingerprint": (False, "a string", _optional(lambda v: isinstance(v, str))),
    "config": (True, "an object", lambda v: isinstance(v, dict)),
    "temperature": (False, "a positive number (the --calibrate temperature) or null",
                    _optional(lambda v: _is_number(v) and v > 0)),
    "metrics": (False, "an object", _optional(lambda v: isinstance(v, dict))),
    "versions": (False, "an object", _optional(lambda v: isinstance(v, dict))),
    "run": (False, "a string", _optional(lambda v: isinstance(v, str))),
}
CONFIG_FIELDS: dict[str, tuple[bool, str, Callable]] = {
    "dataset": (True, "a dataset name", lambda v: isinstance(v, str) and bool(v.strip())),
    "train_ratio": (True, "a number in (0, 1)", _ratio),
    "test_ratio": (True, "a number in (0, 1)", _ratio),
    "seed": (True, "a non-negative integer", lambda v: _is_int(v) and 0 <= v <= MAX_SEED),
    "data_dir": (False, "a string or null", _optional(lambda v: isinstance(v, str))),
    "target": (False, "a string or null", _optional(lambda v: isinstance(v, str))),
    "image_size": (False, "a positive integer or null", _optional(lambda v: _is_int(v) and 1 <= v <= 4096)),
    "crop_pct": (False, "a number in [0.05, 1] or null", _optional(lambda v: _is_number(v) and 0.05 <= v <= 1)),
}


def validate(meta: dict, path: str) -> None:
    """Raise a one-line PtflowError for the first key of meta that breaks the schema."""
    if not isinstance(meta, dict) or meta.get("format") != "ptflow.model":
        raise PtflowError(f"{path}: not a ptflow model file (no model description in it)")
    check_structure(meta, f"{path}: its description", PtflowError)
    _check(meta, FIELDS, path, "")
    _check(meta["config"], CONFIG_FIELDS, path, "config.")
    mean = meta["preprocessing"].get("mean")
    shape = meta["input_shape"]
    expected = shape[0]  # per channel for images, per feature for vectors
    if mean is not None and len(mean) != expected:
        raise PtflowError(f"{path}: preprocessing has {len(mean)} means and stds for inputs of shape {shape} "
                          f"(expected {expected}): corrupt description")


def _check(values: dict, fields: dict, path: str, prefix: str) -> None:
    for key, (required, what, check) in fields.items():
        if key not in values:
            if required:
                raise PtflowError(f"{path}: the model description has no {prefix}{key}: corrupt or not a model file")
            continue
        if not check(values[key]):
            raise PtflowError(f"{path}: the model description's {prefix}{key} must be {what}, got "
                              f"{shown(values[key])}")
