"""Reading the array and table files users hand to ptflow: .npz archives and CSV files.

One reader per format, shared by training (`--dataset npz:PATH`, `csv:PATH`) and prediction
(`ptflow predict rows.csv batch.npz`), so both see the same file the same way and refuse the
same damage with the same one-line error. Every size an .npz declares is checked against its
real size before numpy allocates it (sizes.py); every CSV problem names its line.
"""

from __future__ import annotations

import csv
import math
import zipfile
from pathlib import Path

import numpy as np

from ptflow.errors import PtflowError, first_line
from ptflow.sizes import check_declared, check_zip


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of an .npz file by name, after checking each declared shape against the bytes there."""
    try:
        with zipfile.ZipFile(path) as archive:
            check_zip(str(path), archive, path.stat().st_size)
            for entry in archive.infolist():
                _check_npy_entry(path, archive, entry)
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except zipfile.BadZipFile:
        raise PtflowError(f"{path}: not an .npz file (not a zip archive of arrays)") from None
    except (OSError, ValueError, EOFError, zipfile.LargeZipFile) as exc:
        raise PtflowError(f"{path}: not a readable .npz file ({_reason(exc)})") from None


def _check_npy_entry(path: Path, archive: zipfile.ZipFile, entry: zipfile.ZipInfo) -> None:
    """An entry must be a .npy array of plain numbers whose shape fits the entry's size."""
    what = f"{path}: {entry.filename}"
    if not entry.filename.endswith(".npy"):
        raise PtflowError(f"{what}: not a numpy array (an .npz holds .npy entries only)")
    with archive.open(entry) as f:
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
            np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(f)
        header = f.tell()
    if dtype.hasobject:
        raise PtflowError(f"{what}: holds Python objects, which ptflow never unpickles")
    declared = math.prod(shape) * dtype.itemsize
    check_declared(what, declared, entry.file_size - header)
    if declared != entry.file_size - header:
        raise PtflowError(f"{what}: shape {shape} needs {declared:,} bytes, the entry has "
                          f"{entry.file_size - header:,}: truncated or corrupt")


def read_csv(path: Path) -> tuple[list[str] | None, list[tuple[int, list[str]]]]:
    """(header or None, [(line number, cells)...]) of a CSV file; blank lines are skipped.

    The first row is a header when any of its cells is not a number. Every data row must have
    as many cells as the first row.
    """
    rows = []
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            try:
                for row in reader:
                    if row:
                        rows.append((reader.line_num, row))
            except csv.Error as exc:  # a cell over csv.field_size_limit(), an unclosed quote...
                raise PtflowError(f"{path}: line {reader.line_num}: malformed CSV ({exc})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PtflowError(f"{path}: cannot read CSV ({_reason(exc)})") from None
    if not rows:
        raise PtflowError(f"{path}: empty CSV")
    header = rows[0][1] if not all(is_number(cell) for cell in rows[0][1]) else None
    body = rows[1:] if header else rows
    width = len(rows[0][1])
    for line, row in body:
        if len(row) != width:
            raise PtflowError(f"{path}: line {line} has {len(row)} cells, expected {width}")
    return header, body


def is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def parse_numbers(path: Path, line: int, cells: list[str]) -> list[float]:
    """The cells of one row as finite floats, or the line and cell that is not one."""
    try:
        values = [float(cell) for cell in cells]
    except ValueError:
        bad = next(c for c in cells if not is_number(c))
        raise PtflowError(f"{path}: line {line}: non-numeric value {_shorten(bad)!r}") from None
    if not all(math.isfinite(v) for v in values):
        raise PtflowError(f"{path}: line {line}: NaN or infinite value")
    return values


def _shorten(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or first_line(exc)
