"""`ptflow report RUN`: one self-contained HTML page about a run.

Everything needed to judge a run without its folder: the config, the learning curves, the test
metrics per class, the confusion matrix, sample predictions and the most confident mistakes.
Images are PNGs embedded as base64 data URIs and the style is inline: no external resource, so
the file can be mailed, attached to an issue or archived on its own. The test results are
computed afresh from the run's model file, exactly as `ptflow evaluate` does.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

import numpy as np

from ptflow import history, plots, runs
from ptflow.config import EVAL_BATCH_SIZE
from ptflow.console import info
from ptflow.files import atomic_write_text

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: .5em 0; }
th, td { padding: 2px 12px; border-bottom: 1px solid #ddd; text-align: left; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; }
h2 { margin-top: 1.8em; border-bottom: 2px solid #eee; }
.muted { color: #777; }
"""


def run(spec: str, runs_dir: str = "runs", out: str | None = None, data_dir: str | None = None,
        device: str = "auto", batch_size: int = EVAL_BATCH_SIZE) -> Path:
    entry = history.load(runs.find(spec, runs_dir))
    config = _table([[key, history.format_value(value)] for key, value in entry.config.items()])
    sections = [_summary(entry), _section("Config", config), _curves(entry)]
    model_file = entry.path / "model.safetensors"
    if model_file.is_file():
        from ptflow import evaluate

        sections += _test_results(evaluate.judge(str(model_file), data_dir, device, batch_size))
    else:
        sections.append(_section("Test", f"<p>No model file: the run is {html.escape(entry.status)} and was "
                                         f"never tested.</p>"))
    path = Path(out) if out else entry.path / "report.html"
    atomic_write_text(path, _page(f"ptflow run {entry.id}", sections))
    info(f"Wrote {path}")
    return path


def _summary(entry: history.Run) -> str:
    versions = (runs.read_json(entry.path / "env.json") or {}).get("versions", {})
    rows = history.summary(entry) + [["versions", ", ".join(f"{k} {v}" for k, v in versions.items())]]
    return f"<h1>{html.escape(entry.id)}</h1>\n" + _table(rows)


def _curves(entry: history.Run) -> str:
    if not entry.history:
        return _section("Learning curves", "<p>No epoch completed.</p>")
    png = plots.learning_curve({entry.id: entry.history}, None)
    epochs = _table(history.epoch_rows(entry), history.EPOCH_COLUMNS)
    return _section("Learning curves", _image(png, "learning curves") +
                    f"<details><summary>every epoch</summary>{epochs}</details>")


def _test_results(judged) -> list[str]:
    from ptflow import evaluate

    report, classes, splits = judged.report, judged.loaded.classes, judged.splits
    summary = _table([["accuracy", f"{report['accuracy']:.4f}"], ["test examples", str(len(judged.probs))],
                      ["inference", f"{report['images_per_second']:,.0f} examples/s"]])
    per_class = _table([[name, f"{report['precision'][i]:.4f}", f"{report['recall'][i]:.4f}",
                         f"{report['f1'][i]:.4f}", str(report["support"][i])] for i, name in enumerate(classes)],
                       ["class", "precision", "recall", "f1", "support"])
    matrix = plots.confusion_matrix(np.array(report["confusion_matrix"]), classes, None)
    sections = [_section("Test metrics", summary + per_class),
                _section("Confusion matrix", _image(matrix, "confusion matrix") +
                         "<p class=muted>rows: true class, columns: predicted</p>")]
    if splits.is_image:
        pictures = evaluate.pictures(splits.x_test, splits.y_test, judged.probs, classes)
        sections.append(_section("Sample predictions", _image(pictures["samples.png"], "sample predictions")))
        sections.append(_section("Most confident mistakes", _image(pictures["mistakes.png"], "mistakes")))
    else:  # tabular data has no pictures: the mistakes as a table
        worst = evaluate.most_confident_mistakes(splits.y_test, judged.probs, 20)
        y_pred = judged.probs.argmax(1)
        rows = [[str(i), classes[y_pred[i]], f"{judged.probs[i, y_pred[i]]:.3f}", classes[splits.y_test[i]]]
                for i in worst]
        sections.append(_section("Most confident mistakes", _table(rows, ["test row", "predicted", "p", "true"])))
    return sections


def _page(title: str, sections: list[str]) -> str:
    body = "\n".join(sections)
    return (f"<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head>\n<body>\n{body}\n"
            f"<p class=muted>Written by ptflow report.</p></body></html>\n")


def _section(title: str, content: str) -> str:
    return f"<h2>{html.escape(title)}</h2>\n{content}\n"


def _table(rows: list[list[str]], headers: list[str] | None = None) -> str:
    head = "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in headers) + "</tr>" if headers else ""
    body = "".join("<tr>" + "".join(_td(c) for c in row) + "</tr>" for row in rows)
    return f"<table>{head}{body}</table>"


def _td(text: str) -> str:
    numeric = history.is_number(text)
    return f"<td class=n>{html.escape(text)}</td>" if numeric else f"<td>{html.escape(text)}</td>"


def _image(png: bytes, alt: str) -> str:
    return f'<p><img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}"></p>'
