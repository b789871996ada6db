"""`ptflow predict`: labels and class probabilities for images, .npz arrays or .csv rows."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from ptflow.data.imaging import load_image_input
from ptflow.data.sources import IMAGE_SUFFIXES
from ptflow.devices import resolve_device
from ptflow.errors import PtflowError
from ptflow.models.files import LoadedModel, load_model
from ptflow.models.inference import check_inputs, predict_proba


def collect_inputs(paths: list[str], loaded: LoadedModel) -> tuple[list[str], np.ndarray]:
    """(names, inputs of shape (N, *input_shape)) from files and folders, in the order given."""
    names, arrays = [], []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise PtflowError(f"{path}: no images in this folder")
        elif path.is_file():
            files = [path]
        else:
            raise PtflowError(f"{path}: no such file or folder")
        for file in files:
            file_names, x = _read(file, loaded)
            names += file_names
            arrays.append(x)
    if len({a.dtype for a in arrays}) > 1:
        # uint8 means raw pixels and floats mean model-scale values (see Preprocess), so a mix is
        # brought to the model's scale before stacking, or the pixels would be read as huge floats.
        scale = loaded.meta["preprocessing"]["scale"]
        arrays = [a.astype(np.float32) * scale if a.dtype == np.uint8 else a for a in arrays]
    x = np.concatenate(arrays) if arrays else np.zeros((0, *loaded.input_shape), np.float32)
    return names, x


def _read(file: Path, loaded: LoadedModel) -> tuple[list[str], np.ndarray]:
    shape = loaded.input_shape
    suffix = file.suffix.lower()
    if suffix == ".npz":
        try:
            with np.load(file, allow_pickle=False) as archive:
                key = "x" if "x" in archive.files else archive.files[0] if len(archive.files) == 1 else None
                if key is None:
                    raise PtflowError(f"{file}: expected an array named 'x'")
                x = archive[key]
        except (OSError, ValueError) as exc:
            raise PtflowError(f"{file}: not a readable .npz file ({exc})") from None
        x = check_inputs(x, shape, str(file))
        return [f"{file.name}[{i}]" for i in range(len(x))], x
    if suffix == ".csv":
        x = _read_csv(file)
        x = check_inputs(x, shape, str(file))
        return [f"{file.name}[{i}]" for i in range(len(x))], x
    x = load_image_input(file, shape, loaded.meta.get("image_style", "resize"), str(file))
    return [str(file)], x[None]


def _read_csv(file: Path) -> np.ndarray:
    """Rows of numbers; a header row of names is skipped."""
    try:
        rows = [row for row in csv.reader(file.read_text().splitlines()) if row]
    except (OSError, UnicodeDecodeError) as exc:
        raise PtflowError(f"{file}: cannot read CSV ({exc})") from None
    try:
        float(rows[0][0]) if rows else None
    except ValueError:
        rows = rows[1:]
    try:
        return np.array([[float(cell) for cell in row] for row in rows], dtype=np.float32)
    except ValueError as exc:
        raise PtflowError(f"{file}: non-numeric value ({exc})") from None


def results(names: list[str], probs: np.ndarray, classes: list[str]) -> list[dict]:
    return [{"input": name, "label": int(p.argmax()), "class": classes[int(p.argmax())],
             "probabilities": {c: round(float(v), 6) for c, v in zip(classes, p)}}
            for name, p in zip(names, probs)]


def format_results(rows: list[dict], classes: list[str], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(rows, indent=2)
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["input", "label", "class", *(f"p_{c}" for c in classes)])
        for r in rows:
            writer.writerow([r["input"], r["label"], r["class"], *r["probabilities"].values()])
        return buffer.getvalue().rstrip("\n")
    width = max([5, *(len(r["input"]) for r in rows)])
    lines = [f"{'input':<{width}}  {'label':>5}  {'class':<12}  {'p':>6}  probabilities"]
    for r in rows:
        probs = " ".join(f"{c}:{v:.2f}" for c, v in r["probabilities"].items())
        lines.append(f"{r['input']:<{width}}  {r['label']:>5}  {r['class'][:12]:<12}  "
                     f"{r['probabilities'][r['class']]:6.4f}  {probs}")
    return "\n".join(lines)


def run(model_fn: str, inputs: list[str], fmt: str = "table", device: str = "auto") -> list[dict]:
    loaded = load_model(model_fn, resolve_device(device))
    names, x = collect_inputs(inputs, loaded)
    rows = results(names, predict_proba(loaded, x), loaded.classes)
    print(format_results(rows, loaded.classes, fmt))
    return rows
