"""`ptflow predict`: labels and class probabilities for images, .npz arrays or .csv rows."""

from __future__ import annotations

import csv
import io
import json

from ptflow.console import terminal_safe
from ptflow.data.imaging import style_of
from ptflow.data.inputs import collect_inputs
from ptflow.devices import resolve_device
from ptflow.models.files import load_model
from ptflow.models.inference import predict_proba, prediction_rows


def format_results(rows: list[dict], classes: list[str], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(rows, indent=2)  # ASCII: control characters escaped by JSON itself
    # File and class names come from files: no terminal codes in a table or CSV printed to one.
    classes = [terminal_safe(c) for c in classes]
    rows = [{**r, "input": terminal_safe(r["input"]), "class": terminal_safe(r["class"]),
             "probabilities": {terminal_safe(c): p for c, p in r["probabilities"].items()}} for r in rows]
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


def predict_inputs(model_fn: str, inputs: list[str], fmt: str = "table", device: str = "auto",
                   trust_code: bool = False) -> list[dict]:
    loaded = load_model(model_fn, resolve_device(device), trust_code)
    names, x = collect_inputs(inputs, loaded.input_shape, style_of(loaded.meta),
                              loaded.meta["preprocessing"]["scale"])
    rows = prediction_rows(names, predict_proba(loaded, x), loaded.classes)
    print(format_results(rows, loaded.classes, fmt))  # made printable there: JSON as ASCII, the rest terminal_safe
    return rows
