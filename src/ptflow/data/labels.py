"""Labels into classes: the one place where a dataset's labels become indices 0..K-1 and class names.

Every source (CSV, npz, image folders, plugins) hands its labels here, so one rule holds for all:

- Given class names (an npz's or a plugin's `classes`), the labels index them: whole numbers 0..K-1.
- Otherwise the classes are the distinct labels, sorted, and class i is named by the i-th one.
  So labels 0..K-1 keep their values, and any other whole numbers (3, 7, 42) become classes named
  '3', '7', '42' (said once), rather than a 43-way model with 40 classes never seen.
- Text labels (CSV cells, string arrays) are numbers when every one of them is a number, so
  `1`, `1.0`, `01` and `1e0` are one class, '1'; otherwise each is a name, as written (trimmed).
- Refused with one line each: a negative label (-1 and -100 often mean "unlabelled", which must
  not become a class silently), a fraction (1.5: that is regression), NaN or infinity, labels of
  mixed types, fewer than two classes, more than MAX_CLASSES, empty or duplicate class names.
- Class names are valid Unicode text: bytes that are not UTF-8 (a folder named in Latin-1, which
  Python reads as lone surrogates) are written as `\\xe9` (console.printable), so reports, plots,
  JSON model files and the server all carry the same printable name.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

import numpy as np

from ptflow.console import info, printable
from ptflow.errors import PtflowError, shown
from ptflow.sizes import MAX_CLASSES

BIGGEST = 2 ** 64  # uint64's range: whole-number labels at or beyond it are no class ids


def encode(where: str, parts: list[np.ndarray], names=None) -> tuple[list[np.ndarray], list[str]]:
    """(each part's labels as int64 class indices, the class names) for the label arrays `parts`
    (a dataset's train labels, and its own test labels where it has them), per the rules above."""
    parts = [np.asarray(p) for p in parts]
    if names is not None:
        return _indices(where, parts, class_names(where, names))
    kinds = {_kind(where, p) for p in parts}
    if len(kinds) > 1:
        raise PtflowError(f"{where}: the labels are of mixed types ({', '.join(sorted(kinds))})")
    uniques = [np.unique(p, return_inverse=True) for p in parts]
    _check_count(where, max(len(u) for u, _ in uniques), at_least=0)  # before any Python object is made
    keys = [[v.item() if hasattr(v, "item") else v for v in u] for u, _ in uniques]
    if kinds == {"text"}:
        keys = _text_keys(where, keys)
    else:
        keys = [[_whole(where, v) if not isinstance(v, bool) else v for v in ks] for ks in keys]
    order = sorted({k for ks in keys for k in ks}, key=_sort_key)
    if len(order) == 1:
        raise PtflowError(f"{where}: every example is labelled {shown(str(order[0]))}: a classifier needs "
                          f"examples of at least two classes")
    index = {k: i for i, k in enumerate(order)}
    ys = [np.array([index[k] for k in ks], dtype=np.int64)[inverse.reshape(-1)]
          for ks, (_, inverse) in zip(keys, uniques)]
    classes = class_names(where, [str(k) for k in order])
    if all(isinstance(k, int) and not isinstance(k, bool) for k in order) and order[-1] != len(order) - 1:
        info(f"{where}: the labels ({_some(order)}) are not 0..{len(order) - 1}: the {len(order)} classes "
             f"are named by their values")
    return ys, classes


def class_names(where: str, names) -> list[str]:
    """Names as printable text, checked: at least two, at most MAX_CLASSES, none empty, none twice."""
    names = [printable(_text(n)) for n in (names.tolist() if isinstance(names, np.ndarray) else names)]
    _check_count(where, len(names))
    seen: set[str] = set()
    for name in names:
        if not name.strip():
            raise PtflowError(f"{where}: a class name is empty")
        if name in seen:
            raise PtflowError(f"{where}: the class name {shown(name)} appears twice; class names must differ")
        seen.add(name)
    return names


def _text(value) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    return str(value)


def _kind(where: str, part: np.ndarray) -> str:
    """'bool', 'number' or 'text', after refusing NaN, infinity and types no label has."""
    if part.dtype.kind == "b":
        return "bool"
    if part.dtype.kind in "iu":
        return "number"
    if part.dtype.kind == "f":
        bad = ~np.isfinite(part)
        if bad.any():
            raise PtflowError(f"{where}: label {part[bad][0]} (example {int(np.argmax(bad))}) is not a class")
        return "number"
    if part.dtype.kind in "US":
        return "text"
    raise PtflowError(f"{where}: labels must be whole numbers or text, got {part.dtype} values")


def _whole(where: str, value) -> int:
    """A number label as a non-negative whole number, or a one-line error saying why it is none."""
    if isinstance(value, float) and not value.is_integer():
        raise PtflowError(f"{where}: label {value:g} is not a whole number: class labels are categories "
                          f"(ptflow classifies; it does not predict quantities)")
    if value < 0:
        raise PtflowError(f"{where}: label {_number_text(value)} is negative: ptflow makes no class of it "
                          f"(negative labels often mean 'unlabelled'); drop those examples, or shift the labels "
                          f"to 0 and up")
    if value >= BIGGEST:
        raise PtflowError(f"{where}: label {_number_text(value)} is too large for a class label (at most 2^64 - 1)")
    return int(value)


def _number_text(value) -> str:
    return f"{value:g}" if isinstance(value, (float, Decimal)) else str(value)


def _text_keys(where: str, keys: list[list[str]]) -> list[list]:
    """Numbers when every label is one (1, 1.0 and 01 alike), otherwise the trimmed text itself."""
    texts = [[_text(k).strip() for k in ks] for ks in keys]
    numbers = [[_number(t) for t in ts] for ts in texts]
    if all(n is not None for ns in numbers for n in ns):
        return [[_whole_text(where, t, n) for t, n in zip(ts, ns)] for ts, ns in zip(texts, numbers)]
    if any(not t for ts in texts for t in ts):
        raise PtflowError(f"{where}: a label is empty")
    return texts


def _whole_text(where: str, text: str, number: Decimal) -> int:
    """_whole for a label written as text; its bounds are checked on the Decimal, before int() of 1e9999."""
    if not number.is_finite():
        raise PtflowError(f"{where}: label {shown(text)} is not a class")
    if number != number.to_integral_value():
        return _whole(where, float(number))
    return _whole(where, number if abs(number) >= BIGGEST else int(number))


def _number(text: str) -> Decimal | None:
    """The exact number a label's text writes (Decimal: 12345678901234567890 stays exact), or None."""
    try:
        return Decimal(text)
    except InvalidOperation:
        return None


def _sort_key(key) -> tuple:
    """Numbers by value, then text in code point order (a text column that mixes both)."""
    if isinstance(key, str):
        number = _number(key)
        return (0, number, key) if number is not None and number.is_finite() else (1, 0, key)
    return (0, key, "")


def _indices(where: str, parts: list[np.ndarray], names: list[str]) -> tuple[list[np.ndarray], list[str]]:
    """Labels that index given class names: whole numbers 0..len(names)-1."""
    ys = []
    for part in parts:
        if _kind(where, part) == "text":
            raise PtflowError(f"{where}: the labels are text but class names are given too: with `classes`, "
                              f"labels are indices into it (0..{len(names) - 1})")
        for value in np.unique(part).tolist():
            if _whole(where, value) >= len(names):
                raise PtflowError(f"{where}: {len(names)} class names for labels up to {_number_text(value)}")
        ys.append(part.astype(np.int64))
    present = np.unique(np.concatenate(ys))
    if len(present) < 2:
        raise PtflowError(f"{where}: every example is class {shown(names[present[0]])}: a classifier needs "
                          f"examples of at least two classes")
    return ys, names


def _check_count(where: str, count: int, at_least: int = 2) -> None:
    if count > MAX_CLASSES:
        raise PtflowError(f"{where}: {count:,} distinct labels, more than the {MAX_CLASSES:,} classes a "
                          f"model may have")
    if count < at_least:
        raise PtflowError(f"{where}: {'one class' if count else 'no classes'}: a classifier needs examples of "
                          f"at least two classes")


def _some(values: list, shown_at_most: int = 6) -> str:
    head = ", ".join(str(v) for v in values[:shown_at_most])
    return head + (", ..." if len(values) > shown_at_most else "")
