"""`npz:PATH`: numpy arrays x and y, optionally x_test, y_test and classes; `x` alone for predict."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pathlib stays off `ptflow --help`'s imports
    from pathlib import Path

from ptflow.data.formats import Format
from ptflow.errors import PtflowError


def load(path: Path, target: str | None = None):
    """The npz layout, checked as a dataset plugin's arrays are (sources.from_arrays)."""
    from ptflow.data.readers import read_npz
    from ptflow.data.sources import from_arrays

    return from_arrays(str(path), read_npz(path))


def read_inputs(path: Path):
    """The array named x, or the archive's only array."""
    from ptflow.data.readers import read_npz

    arrays = read_npz(path)
    key = "x" if "x" in arrays else next(iter(arrays)) if len(arrays) == 1 else None
    if key is None:
        raise PtflowError(f"{path}: expected an array named 'x'")
    return arrays[key]


FORMAT = Format("npz", "arrays x and y, optionally x_test, y_test, classes", load, suffixes=(".npz",),
                read_inputs=read_inputs)
