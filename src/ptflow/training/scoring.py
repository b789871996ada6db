"""Every number a run or a test reports, declared once, and the one place test predictions are scored.

A `Metric` says what a number is called (`label`), how it is computed (`score`, from a split's
labels and predicted probabilities), how sure it is (`interval`: Wilson for a proportion, a
percentile bootstrap otherwise; stats.py), and where it goes: a row or column of `ptflow runs`
(`runs`, `column`), the trackers (`tracked`), and whether a sweep may tune it and which way
(`goal`). Training's outcome (outcome.py), `ptflow evaluate` (reports/metrics.py), the run
table (reports/history.py), the trackers (tracking.py) and the sweep all read these
declarations; adding a metric is one `register(Metric(...))`.

Two kinds of metric:
- scored (`score` set): computed here from (y, probs). `ptflow evaluate` reports it under
  `name`; a run keeps it as `test_<name>` (or `key`), judged once on the test split. A scored
  metric with a `goal` is also scored on the validation split at the end of training
  (`valid_<name>`), and that is what a sweep tunes: the test split never chooses anything.
- recorded (`score` None): measured by training itself (the loop's validation loss, the epoch
  counts, the temperature) and kept under `name`; declared here for the places that show them.

This module lives in training/, the lowest layer that knows what a run is, so training
(below reports) and reports both read it. numpy and calibration are imported inside the
functions: `ptflow runs` reads the declarations without loading numpy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ptflow import stats
from ptflow.errors import UsageError

ALWAYS, RECORDED = "always", "recorded"  # `runs`: a row for every run, or only for runs that have it
MINIMIZE, MAXIMIZE = "minimize", "maximize"  # `goal`, Optuna's names for a study's direction


@dataclass(frozen=True)
class Interval:
    """How sure a scored number is: `method` as reports name it, `compute(y, probs, value, score) -> (low, high)`."""

    method: str
    compute: Callable


def _wilson(y, probs, value: float, score=None) -> tuple[float, float]:
    return stats.wilson_interval(round(value * len(y)), len(y))  # value * n recovers the count exactly


def bootstrap(resampled: Callable | None = None) -> Interval:
    """A percentile bootstrap over the examples. By default the metric is rescored on each resample;
    `resampled(y, probs)` may return a faster statistic(index) that scores many resamples at once."""

    def compute(y, probs, value, score) -> tuple[float, float]:
        import numpy as np

        statistic = resampled(y, probs) if resampled else \
            (lambda index: np.array([score(y[i], probs[i]) for i in index]))  # |index| = (B, n)
        # Resamples drawn a few at a time: training judges its test split while the data is still
        # loaded, at its peak memory. The draws, so the interval, do not depend on the chunk.
        chunk = min(100, max(1, CHUNK_BYTES // (8 * max(len(y), 1))))
        return stats.bootstrap_interval(statistic, len(y), chunk=chunk)

    return Interval(f"bootstrap, {stats.BOOTSTRAP_SAMPLES:,} resamples", compute)


CHUNK_BYTES = 2 ** 20  # of one chunk's (B, n) int64 resample indices: ~3x this at most in flight
WILSON = Interval("Wilson", _wilson)


@dataclass(frozen=True)
class Metric:
    name: str  # its key in evaluation.json, and (recorded metrics) in run.json
    label: str  # what `ptflow runs` calls it, e.g. "test acc"
    score: Callable | None = None  # (y (n,), probs (n, K)) -> float; None: recorded by training
    interval: Interval | None = None  # 95% interval of a scored metric, kept as <name>_ci95
    line: str = ""  # `ptflow evaluate`'s line for it; fields: label value interval n method bins calibrated
    key: str = ""  # its key in run.json when not test_<name> (scored) or name (recorded)
    run: bool = True  # kept in a run's files (training scores it); False: `ptflow evaluate` only
    runs: str | None = None  # ALWAYS or RECORDED: a row of `ptflow runs show` (and compare, if ALWAYS)
    column: bool = False  # a column of the `ptflow runs` table (a RECORDED one where some run has it)
    tracked: bool = False  # sent to TensorBoard and MLflow when the run ends
    goal: str | None = None  # MINIMIZE or MAXIMIZE: a sweep may tune it (on validation)
    title: str = ""  # its row in `ptflow report`'s test metrics (default: label); scored metrics only
    how: str = ""  # that row's "how" (default: the interval's method); fields as `line`

    @property
    def run_key(self) -> str:
        return self.key or (f"test_{self.name}" if self.score else self.name)

    @property
    def objective_key(self) -> str:
        """What a sweep reads from a trial's metrics: validation numbers only."""
        return f"valid_{self.name}" if self.score else self.name

    @property
    def runs_label(self) -> str:
        return f"{self.label} (95% CI)" if self.interval and self.runs else self.label


METRICS: dict[str, Metric] = {}  # name -> declaration, in the order reports show them


def register(metric: Metric) -> Metric:
    """Declare a metric; its name must be new (a typo would otherwise replace a built-in)."""
    if metric.name in METRICS:
        raise ValueError(f"metric {metric.name!r} is already declared")
    if metric.goal not in (None, MINIMIZE, MAXIMIZE):
        raise ValueError(f"metric {metric.name!r}: goal must be {MINIMIZE!r} or {MAXIMIZE!r}")
    METRICS[metric.name] = metric
    return metric


def declared(scored: bool | None = None, **where) -> list[Metric]:
    """The metrics whose fields equal `where` (and that are scored or recorded, if asked)."""
    return [m for m in METRICS.values() if (scored is None or bool(m.score) == scored)
            and all(getattr(m, k) == v for k, v in where.items())]


def by_run_key(key: str) -> Metric | None:
    return next((m for m in METRICS.values() if m.run_key == key), None)


def label(key: str) -> str:
    """The label of a run.json key, for a table."""
    metric = by_run_key(key)
    return metric.runs_label if metric else key.replace("_", " ")


# ---- scoring: one function, used on the test split by training and by `ptflow evaluate`

def score(y, probs, metrics: list[Metric] | None = None) -> dict:
    """Each scored metric of (y, probs) under its name, with <name>_ci95 where it has an interval."""
    import numpy as np

    y = np.asarray(y, dtype=np.int64)
    scored = {}
    for metric in declared(scored=True) if metrics is None else metrics:
        value = float(metric.score(y, probs))
        scored[metric.name] = value
        if metric.interval:
            scored[f"{metric.name}_ci95"] = list(metric.interval.compute(y, probs, value, metric.score))
    return scored


def run_record(y, probs) -> dict:
    """What a run keeps of its test split: each run metric under its run key, and the count."""
    scored = score(y, probs, declared(scored=True, run=True))
    record = {}
    for metric in declared(scored=True, run=True):
        record[metric.run_key] = scored[metric.name]
        if f"{metric.name}_ci95" in scored:
            record[f"{metric.run_key}_ci95"] = scored[f"{metric.name}_ci95"]
    return {**record, "test_n": len(y)}


def validation_record(y, probs) -> dict:
    """The tunable scored metrics on the validation split, as a sweep reads them (no intervals)."""
    tunable = [m for m in declared(scored=True) if m.goal]
    return {m.objective_key: float(m.score(y, probs)) for m in tunable}


def run_keys() -> list[str]:
    """Every run.json key that judging the test (and validation) split may write."""
    keys = []
    for metric in declared(scored=True, run=True):
        keys += [metric.run_key, *([f"{metric.run_key}_ci95"] if metric.interval else [])]
    return [*keys, "test_n", *(m.objective_key for m in declared(scored=True) if m.goal)]


def objectives() -> dict[str, Metric]:
    """What a sweep may tune: objective key -> declaration."""
    return {m.objective_key: m for m in METRICS.values() if m.goal}


def objective(key: str) -> Metric:
    tunable = objectives()
    if key not in tunable:
        raise UsageError(f"--objective {key}: a sweep tunes one of {', '.join(tunable)}")
    return tunable[key]


def headline(report: dict, temperature: float | None = None) -> list[str]:
    """`ptflow evaluate`'s first lines: each scored metric with how sure it is or how it was measured."""
    from ptflow.models.calibration import ECE_BINS

    calibrated = f"; temperature {temperature:.3g}, fitted on validation" if temperature else ""
    lines = []
    for metric in declared(scored=True):
        interval = stats.format_interval(report.get(f"{metric.name}_ci95"))
        default = "{label}: {value:.4f}" + ("  95% CI {interval}  ({method})" if interval else "")
        lines.append((metric.line or default).format(
            label=metric.label, value=report[metric.name], interval=interval, n=report["n"], bins=ECE_BINS,
            method=metric.interval.method if metric.interval else "", calibrated=calibrated))
    return lines


# ---- the built-in metrics' computations

def confusion(y_true, y_pred, n_classes: int):
    """Counts, rows: true class, columns: predicted."""
    import numpy as np

    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (y_true, y_pred), 1)
    return matrix


def per_class(matrix):
    """Precision, recall and F1 along the last two axes of (..., K, K) confusion matrices; 0 where undefined."""
    import numpy as np

    tp = np.diagonal(matrix, axis1=-2, axis2=-1).astype(np.float64)
    predicted, actual = matrix.sum(-2), matrix.sum(-1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(tp),
                   where=(precision + recall) > 0)
    return precision, recall, f1


def macro_f1(matrix):
    """Mean F1 over the classes that occur (as truth or as prediction), as scikit-learn's default;
    works on one (K, K) matrix or a stack (B, K, K) of bootstrap resamples."""
    import numpy as np

    f1 = per_class(matrix)[2]
    present = (matrix.sum(-2) + matrix.sum(-1)) > 0
    return (f1 * present).sum(-1) / np.maximum(present.sum(-1), 1)


def balanced_accuracy(matrix):
    """Mean recall over the classes that occur as truth, as scikit-learn's balanced_accuracy_score;
    on one (K, K) confusion matrix or a stack (B, K, K) of bootstrap resamples."""
    import numpy as np

    recall = per_class(matrix)[1]
    present = matrix.sum(-1) > 0
    return (recall * present).sum(-1) / np.maximum(present.sum(-1), 1)


def macro_f1_interval(y_true, y_pred, n_classes: int, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of macro-F1, which is not a proportion (no Wilson interval)."""
    return stats.bootstrap_interval(_confusion_resamples(y_true, y_pred, n_classes), len(y_true), seed=seed)


def _confusion_resamples(y_true, y_pred, n_classes: int, of=None):
    """statistic(index) for the bootstrap: B resamples' confusion matrices counted in one bincount,
    then `of` them (default macro-F1)."""
    import numpy as np

    codes = np.asarray(y_true, dtype=np.int64) * n_classes + y_pred
    of = of or macro_f1

    def resampled(index):  # |index| = (B, n) -> B values
        resampled_codes = codes[index]
        resampled_codes += np.arange(len(index))[:, None] * n_classes * n_classes  # in place: one copy fewer
        counts = np.bincount(resampled_codes.ravel(), minlength=len(index) * n_classes * n_classes)
        return of(counts.reshape(len(index), n_classes, n_classes))

    return resampled


def _accuracy(y, probs) -> float:
    return int((probs.argmax(1) == y).sum()) / max(len(y), 1)


def _macro_f1(y, probs) -> float:
    return float(macro_f1(confusion(y, probs.argmax(1), probs.shape[1])))


def _balanced_accuracy(y, probs) -> float:
    return float(balanced_accuracy(confusion(y, probs.argmax(1), probs.shape[1])))


def _ece(y, probs) -> float:
    from ptflow.models.calibration import expected_calibration_error

    return expected_calibration_error(probs, y)


# Declaration order is the order of `ptflow runs`' rows and `ptflow evaluate`'s lines.
for _metric in (
    Metric("epochs_run", "epochs run", runs=ALWAYS),
    Metric("best_epoch", "best epoch", runs=ALWAYS, tracked=True),
    Metric("best_valid_loss", "best valid loss", runs=ALWAYS, column=True, tracked=True, goal=MINIMIZE),
    Metric("valid_acc", "valid acc", runs=ALWAYS, tracked=True),
    Metric("test_loss", "test loss", runs=ALWAYS, tracked=True),  # from the network's scores: outcome.py
    Metric("accuracy", "test acc", _accuracy, WILSON, key="test_acc", runs=ALWAYS, column=True, tracked=True,
           line="Accuracy: {value:.4f}  95% CI {interval}  (Wilson, {n:,} test examples)",
           title="accuracy", how="Wilson score"),
    Metric("macro_f1", "test macro-F1", _macro_f1, bootstrap(lambda y, probs: _confusion_resamples(
        y, probs.argmax(1), probs.shape[1])), line="Macro-F1: {value:.4f}  95% CI {interval}  ({method})",
        run=False, title="macro-F1"),  # a bootstrap per run would slow every training for a number `evaluate` gives
    # Mean recall over classes: what a constant guess of the largest class scores 1/K on, however
    # imbalanced the test split; kept by runs (a bootstrap of ~0.05 s on 10,000 examples), so that
    # --class_weights and --sampler are judged by it.
    Metric("balanced_accuracy", "test balanced acc", _balanced_accuracy, bootstrap(
        lambda y, probs: _confusion_resamples(y, probs.argmax(1), probs.shape[1], of=balanced_accuracy)),
        line="Balanced accuracy: {value:.4f}  95% CI {interval}  ({method})",
        runs=RECORDED, tracked=True, title="balanced accuracy (mean recall)"),
    Metric("ece", "test ECE", _ece, line="Calibration: ECE {value:.4f}  ({bins} confidence bins{calibrated})",
           runs=RECORDED, column=True, title="expected calibration error", how="{bins} bins{calibrated}"),
    Metric("temperature", "temperature", runs=RECORDED),
    Metric("valid_ece", "valid ECE", runs=RECORDED),
    Metric("valid_ece_calibrated", "valid ECE, calibrated", runs=RECORDED),
):
    register(_metric)
