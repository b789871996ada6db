"""`csv:PATH`: numeric feature columns and one label column (--target; string labels become classes)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pathlib stays off `ptflow --help`'s imports
    from pathlib import Path

from ptflow.data.formats import Format
from ptflow.errors import PtflowError, UsageError


def load(path: Path, target: str | None):
    """Numeric features, one label column (string labels become class names)."""
    import numpy as np

    from ptflow.data import labels
    from ptflow.data.readers import parse_numbers, read_csv
    from ptflow.data.sources import RawData

    header, body = read_csv(path)
    width = len(header or body[0][1])
    column = _target_column(path, target, header, width)
    features, label_cells = [], []
    for line, row in body:
        label = row[column].strip()
        if not label:
            raise PtflowError(f"{path}: line {line} has no label in column {column}")
        label_cells.append(label)
        features.append(parse_numbers(path, line, row[:column] + row[column + 1:]))
    if not features or width < 2:
        raise PtflowError(f"{path}: need at least one feature column and one data row")
    x = np.asarray(features, dtype=np.float32)
    if not np.isfinite(x).all():  # finite as float64, too large for float32
        raise PtflowError(f"{path}: features too large for float32 (beyond 3.4e38)")
    (y,), classes = labels.encode(str(path), [np.array(label_cells)])
    return RawData(x, y, classes)


def _target_column(path: Path, target: str | None, header: list[str] | None, width: int) -> int:
    if target is None:
        return width - 1
    if header and target in header:
        return header.index(target)
    if target.lstrip("-").isdigit() and -width <= int(target) < width:
        return int(target) % width
    raise UsageError(f"{path}: --target {target!r} is neither a column name nor an index below {width}")


def read_inputs(path: Path):
    """Rows of numbers, no label column; a header row of names is skipped."""
    import numpy as np

    from ptflow.data.readers import parse_numbers, read_csv

    header, body = read_csv(path)
    if not body:
        raise PtflowError(f"{path}: no data rows, only a header")
    x = np.array([parse_numbers(path, line, row) for line, row in body], dtype=np.float32)
    if not np.isfinite(x).all():
        raise PtflowError(f"{path}: values too large for float32 (beyond 3.4e38)")
    return x


FORMAT = Format("csv", "numeric columns and a label column, --target", load, suffixes=(".csv",),
                read_inputs=read_inputs)
