"""`ptflow report RUN`: one self-contained HTML page about a run.

Everything needed to judge a run without its folder: the config, the learning curves, the
cross-validation folds (--folds), the test metrics with their 95% intervals and per class, the
calibration (ECE and a reliability diagram), the confusion matrix, sample predictions and the
most confident mistakes. The page is self-contained (html.py). The test results are computed
afresh from the run's model file, exactly as `ptflow evaluate` does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ptflow import plots, stats
from ptflow.config import EVAL_BATCH_SIZE
from ptflow.console import info
from ptflow.files import atomic_write_text
from ptflow.models import registry
from ptflow.models.calibration import ECE_BINS
from ptflow.reports import history
from ptflow.reports.html import escape, image, page, section, table
from ptflow.reports.tables import format_value
from ptflow.training import runs, scoring


def write_report(spec: str, runs_dir: str = "runs", out: str | None = None, data_dir: str | None = None,
                 device: str = "auto", batch_size: int = EVAL_BATCH_SIZE, trust_code: bool = False) -> Path:
    entry = history.load(runs.find(spec, runs_dir))
    unused = registry.flags_not_used_by(str(entry.config.get("model")))  # a cnn run has no n_layers to show
    config = table([[key, format_value(value)] for key, value in entry.config.items() if key not in unused])
    sections = [_summary(entry), section("Config", config), _curves(entry), *_folds(entry)]
    model_file = entry.path / "model.safetensors"
    if model_file.is_file():
        from ptflow.reports import evaluate

        sections += _test_results(evaluate.judge(str(model_file), data_dir, device, batch_size,
                                                       trust_code))
    else:
        sections.append(section("Test", f"<p>No model file: the run is {escape(entry.status)} and was "
                                         f"never tested.</p>"))
    path = Path(out) if out else entry.path / "report.html"
    atomic_write_text(path, page(f"ptflow run {entry.id}", sections, "Written by ptflow report."))
    info(f"Wrote {path}")
    return path


def _summary(entry: history.Run) -> str:
    versions = history.environment(entry).get("versions", {})
    rows = history.summary(entry) + [["versions", ", ".join(f"{k} {v}" for k, v in versions.items())]]
    return f"<h1>{escape(entry.id)}</h1>\n" + table(rows)


def _curves(entry: history.Run) -> str:
    if not entry.history:
        return section("Learning curves", "<p>No epoch completed.</p>")
    png = plots.learning_curve({entry.id: entry.history}, None)
    epochs = table(history.epoch_rows(entry), history.EPOCH_COLUMNS)
    return section("Learning curves", image(png, "learning curves") +
                    f"<details><summary>every epoch</summary>{epochs}</details>")


def _folds(entry: history.Run) -> list[str]:
    rows = history.cv_rows(entry)
    if not rows:
        return []
    note = ("<p class=muted>Each fold's model validated on a different stratified part of the training data; "
            "the spread says how much one validation split can mislead. The final model below was trained "
            "on the usual split.</p>")
    return [section(f"Cross-validation ({entry.record['cv']['folds']} folds)", table(rows, history.CV_COLUMNS) + note)]


def _test_results(judged) -> list[str]:
    from ptflow.reports import evaluate

    report, classes, splits = judged.report, judged.loaded.classes, judged.splits
    temperature = judged.loaded.temperature
    summary = table([
        *_metric_rows(report, temperature),
        ["test examples", f"{report['n']:,}", "", ""],
        ["inference", f"{report['images_per_second']:,.0f} examples/s", "", ""]], ["", "value", "95% CI", "how"])
    per_class = table([[name, f"{report['precision'][i]:.4f}", f"{report['recall'][i]:.4f}",
                         f"{report['f1'][i]:.4f}", str(report["support"][i])] for i, name in enumerate(classes)],
                       ["class", "precision", "recall", "f1", "support"])
    matrix = plots.confusion_matrix(np.array(report["confusion_matrix"]), classes, None)
    reliability = plots.reliability_diagram(report["reliability"], report["ece"], None)
    calibrated = (f"Probabilities softened by the temperature {temperature:.3g}, fitted on the validation split."
                  if temperature else "Not calibrated: train with --calibrate to fit a temperature on validation.")
    sections = [section("Test metrics", summary + per_class),
                section("Calibration", image(reliability, "reliability diagram") +
                        f"<p class=muted>Bars: accuracy of the test examples in each confidence bin; a calibrated "
                        f"model follows the diagonal. {escape(calibrated)}</p>"),
                section("Confusion matrix", image(matrix, "confusion matrix") +
                         "<p class=muted>rows: true class, columns: predicted; colours on a log scale, so that "
                         "a few mistakes show beside thousands of right answers</p>")]
    if splits.is_image:
        pictures = evaluate.pictures(splits.x_test, splits.y_test, judged.probs, classes)
        sections.append(section("Sample predictions", image(pictures["samples.png"], "sample predictions")))
        sections.append(section("Most confident mistakes", image(pictures["mistakes.png"], "mistakes")))
    else:  # tabular data has no pictures: the mistakes as a table
        worst = evaluate.most_confident_mistakes(splits.y_test, judged.probs, 20)
        y_pred = judged.probs.argmax(1)
        rows = [[str(i), classes[y_pred[i]], f"{judged.probs[i, y_pred[i]]:.3f}", classes[splits.y_test[i]]]
                for i in worst]
        sections.append(section("Most confident mistakes", table(rows, ["test row", "predicted", "p", "true"])))
    return sections


def _metric_rows(report: dict, temperature: float | None = None) -> list[list[str]]:
    """[title, value, 95% interval, how] for each scored metric, as training/scoring.py declares it."""
    calibrated = f"; temperature {temperature:.3g}, fitted on validation" if temperature else ""
    rows = []
    for metric in scoring.declared(scored=True):
        method = metric.interval.method if metric.interval else ""
        how = (metric.how or method).format(n=report["n"], bins=ECE_BINS, method=method, calibrated=calibrated)
        rows.append([metric.title or metric.label, f"{report[metric.name]:.4f}",
                     stats.format_interval(report.get(f"{metric.name}_ci95")), how])
    return rows
