"""The numbers of a test: every declared metric (training/scoring.py: accuracy, macro-F1, ECE and
any other, each with how sure it is), per-class precision/recall/F1, the confusion matrix and
the reliability bins.

`evaluate`, `predict` without inputs, `report` and the sweep's final judgement all score
predictions here, and training scores its test split with the same scoring.score, so each
number is computed, and printed, in one way.
"""

from __future__ import annotations

import numpy as np

from ptflow.console import terminal_safe
from ptflow.models.calibration import ECE_BINS, reliability
from ptflow.training import scoring
from ptflow.training.scoring import confusion, macro_f1, macro_f1_interval, per_class  # noqa: F401 (read from here too)


def classification_report(y_true: np.ndarray, probs: np.ndarray, n_classes: int) -> dict:
    """Every number a test reports, as JSON-ready values; intervals are 95%."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = probs.argmax(1)
    matrix = confusion(y_true, y_pred, n_classes)
    precision, recall, f1 = per_class(matrix)
    return {**scoring.score(y_true, probs), "n": len(y_true), "calibration_bins": ECE_BINS,
            "reliability": reliability(probs, y_true),
            "precision": precision.tolist(), "recall": recall.tolist(), "f1": f1.tolist(),
            "support": matrix.sum(1).tolist(), "confusion_matrix": matrix.tolist()}


def headline(report: dict, temperature: float | None = None) -> list[str]:
    """Each declared metric, with how sure it is or how it was measured."""
    return scoring.headline(report, temperature)


def format_report(report: dict, classes: list[str], temperature: float | None = None) -> str:
    classes = [terminal_safe(c) for c in classes]  # names from a model file or a dataset: no terminal codes
    width = max(8, *(len(c) for c in classes))
    lines = [*headline(report, temperature), "", f"{'class':>{width}}  precision  recall     f1  support"]
    for i, name in enumerate(classes):
        lines.append(f"{name:>{width}}  {report['precision'][i]:9.4f}  {report['recall'][i]:6.4f}  "
                     f"{report['f1'][i]:.4f}  {report['support'][i]:7d}")
    matrix = np.array(report["confusion_matrix"])
    if len(classes) <= 20:
        cell = max(4, len(str(matrix.max())) + 1)
        lines += ["", "confusion matrix (rows: true, columns: predicted)",
                  " " * width + "".join(f"{c[:cell - 1]:>{cell}}" for c in classes)]
        lines += [f"{name:>{width}}" + "".join(f"{v:>{cell}d}" for v in row) for name, row in zip(classes, matrix)]
    return "\n".join(lines)
