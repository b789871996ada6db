"""The numbers of a test: accuracy, per-class precision/recall/F1, confusion matrix, and how sure
each one is (stats.py) and how well the confidence matches the accuracy (models/calibration.py).

`evaluate`, `predict` without inputs, `report` and the sweep's final judgement all score
predictions here, so each number is computed, and printed, in one way.
"""

from __future__ import annotations

import numpy as np

from ptflow import stats
from ptflow.console import terminal_safe
from ptflow.models.calibration import ECE_BINS, expected_calibration_error, reliability


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts, rows: true class, columns: predicted."""
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (y_true, y_pred), 1)
    return matrix


def per_class(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall and F1 along the last two axes of (..., K, K) confusion matrices; 0 where undefined."""
    tp = np.diagonal(matrix, axis1=-2, axis2=-1).astype(np.float64)
    predicted, actual = matrix.sum(-2), matrix.sum(-1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(tp),
                   where=(precision + recall) > 0)
    return precision, recall, f1


def macro_f1(matrix: np.ndarray) -> np.ndarray:
    """Mean F1 over the classes that occur (as truth or as prediction), as scikit-learn's default;
    works on one (K, K) matrix or a stack (B, K, K) of bootstrap resamples."""
    f1 = per_class(matrix)[2]
    present = (matrix.sum(-2) + matrix.sum(-1)) > 0
    return (f1 * present).sum(-1) / np.maximum(present.sum(-1), 1)


def macro_f1_interval(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of macro-F1, which is not a proportion (no Wilson interval)."""
    codes = y_true.astype(np.int64) * n_classes + y_pred

    def resampled(index: np.ndarray) -> np.ndarray:  # |index| = (B, n) -> B macro-F1 values
        offsets = np.arange(len(index))[:, None] * n_classes * n_classes
        counts = np.bincount((codes[index] + offsets).ravel(), minlength=len(index) * n_classes * n_classes)
        return macro_f1(counts.reshape(len(index), n_classes, n_classes))

    return stats.bootstrap_interval(resampled, len(y_true), seed=seed)


def classification_report(y_true: np.ndarray, probs: np.ndarray, n_classes: int) -> dict:
    """Every number a test reports, as JSON-ready values; intervals are 95%."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = probs.argmax(1)
    matrix = confusion(y_true, y_pred, n_classes)
    precision, recall, f1 = per_class(matrix)
    n, correct = len(y_true), int(np.trace(matrix))
    return {"accuracy": correct / max(n, 1), "accuracy_ci95": list(stats.wilson_interval(correct, n)), "n": n,
            "macro_f1": float(macro_f1(matrix)), "macro_f1_ci95": list(macro_f1_interval(y_true, y_pred, n_classes)),
            "ece": expected_calibration_error(probs, y_true), "calibration_bins": ECE_BINS,
            "reliability": reliability(probs, y_true),
            "precision": precision.tolist(), "recall": recall.tolist(), "f1": f1.tolist(),
            "support": matrix.sum(1).tolist(), "confusion_matrix": matrix.tolist()}


def headline(report: dict, temperature: float | None = None) -> list[str]:
    """Accuracy, macro-F1 and calibration, each with how sure or how it was measured."""
    n = report["n"]
    calibrated = f"; temperature {temperature:.3g}, fitted on validation" if temperature else ""
    return [f"Accuracy: {report['accuracy']:.4f}  95% CI {stats.format_interval(report['accuracy_ci95'])}"
            f"  (Wilson, {n:,} test examples)",
            f"Macro-F1: {report['macro_f1']:.4f}  95% CI {stats.format_interval(report['macro_f1_ci95'])}"
            f"  (bootstrap, {stats.BOOTSTRAP_SAMPLES:,} resamples)",
            f"Calibration: ECE {report['ece']:.4f}  ({report['calibration_bins']} confidence bins{calibrated})"]


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
