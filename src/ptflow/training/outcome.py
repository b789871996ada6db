"""What a finished run learns about its model on held-out data, after training chose the weights.

- With --calibrate, a softmax temperature fitted on the validation split (models/calibration.py),
  with the validation ECE before and after. The validation split has already chosen the best
  epoch; fitting one more number there still leaves the test split untouched.
- The test split, judged once: loss, every metric scoring.py declares for runs (accuracy with
  its 95% Wilson interval, ECE, ...), scored by the same function as `ptflow evaluate`, and each
  example's prediction (the run folder's predictions.npz, for `ptflow runs compare`).
- The validation split scored by the metrics a sweep may tune (valid_<name>), when any is
  declared: selection then reads validation numbers only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from ptflow import stats
from ptflow.errors import PtflowError
from ptflow.models.calibration import apply_temperature, expected_calibration_error, fit_temperature
from ptflow.training import scoring
from ptflow.training.loop import eval_batches
from ptflow.training.precision import autocast
from ptflow.training.steps import loss_function


def results() -> tuple[str, ...]:
    """Every key judge() may add to a run's metrics (a resumed run clears them until it finishes again)."""
    return ("temperature", "valid_ece", "valid_ece_calibrated", "test_loss", *scoring.run_keys())


@dataclass
class Outcome:
    metrics: dict = field(default_factory=dict)  # JSON-ready, merged into the run's metrics
    temperature: float | None = None  # for the model file's meta
    test_probs: np.ndarray | None = None  # |test_probs| = (n_test, n_classes), temperature applied


@torch.inference_mode()
def scores(model: torch.nn.Module, forward, x, batch_size: int, precision: str) -> torch.Tensor:
    """The network's scores (logits or log-probabilities) for x, float32, in eval mode.

    x: a tensor on the device, or a streamed split (data/streaming.py), where an example
    --bad_images skip leaves out scores log(1/K) for every class: uniform, both as logits and as
    log-probabilities, so it is still counted and never right by more than chance.
    """
    model.eval()
    out = []
    for _, x_i, kept in eval_batches(x, len(x), batch_size):
        batch = None
        if x_i is not None:
            with autocast(x_i.device, precision):
                batch = forward(x_i).float()
        if kept is not None:
            batch = _uniform_where_left_out(batch, kept, out[0].shape[1] if out else None)
        out.append(batch)
    return torch.cat(out) if out else torch.zeros((0, 0))


def _uniform_where_left_out(batch: torch.Tensor | None, kept: torch.Tensor, classes: int | None) -> torch.Tensor:
    classes = batch.shape[1] if batch is not None else classes
    if classes is None:
        raise PtflowError("no example of the first evaluation batch could be decoded")
    full = torch.full((len(kept), classes), -math.log(classes),
                      device=batch.device if batch is not None else "cpu")
    if batch is not None:
        full[kept.to(full.device)] = batch
    return full


def judge(model: torch.nn.Module, forward, data: dict[str, torch.Tensor], batch_size: int, precision: str,
          calibrate: bool, evaluate_test: bool) -> Outcome:
    """Fit the temperature (if asked) on validation, then judge the test split (if asked)."""
    outcome = Outcome()
    tuned = any(m.goal for m in scoring.declared(scored=True))  # a sweep may read valid_<name>
    if calibrate or tuned:
        valid = scores(model, forward, data["x_val"], batch_size, precision).cpu()
        y_val = data["y_val"].cpu()
    if calibrate:
        outcome.temperature = fit_temperature(valid, y_val)
        before = expected_calibration_error(apply_temperature(valid, None).numpy(), y_val.numpy())
        after = expected_calibration_error(apply_temperature(valid, outcome.temperature).numpy(), y_val.numpy())
        outcome.metrics.update(temperature=outcome.temperature, valid_ece=before, valid_ece_calibrated=after)
    if tuned:  # the model as saved: temperature applied, as on the test split
        outcome.metrics.update(scoring.validation_record(y_val.numpy(),
                                                         apply_temperature(valid, outcome.temperature).numpy()))
    if evaluate_test:
        test = scores(model, forward, data["x_test"], batch_size, precision).cpu()
        y = data["y_test"].cpu()
        outcome.test_probs = apply_temperature(test, outcome.temperature).numpy()
        # The loss comes from the network's own scores and loss, summed as the validation loss is;
        # every other number from the predictions, by the function `ptflow evaluate` uses.
        outcome.metrics.update(test_loss=mean_loss(test, y, batch_size, loss_function(model)),
                               **scoring.run_record(y.numpy(), outcome.test_probs))
    return outcome


def mean_loss(scores: torch.Tensor, y: torch.Tensor, batch_size: int, loss_fn) -> float:
    """Per-sample cross-entropy summed batch by batch in float64, as loop.evaluate sums the
    validation loss: test and validation losses are then computed alike, to the last bit."""
    total = sum(float(loss_fn(scores[s:s + batch_size], y[s:s + batch_size], reduction="sum"))
                for s in range(0, len(y), batch_size))
    return total / len(y)


def summary_lines(metrics: dict) -> list[str]:
    """The lines `ptflow train` ends with: calibration, then the test accuracy with its interval."""
    lines = []
    if metrics.get("temperature") is not None:
        lines.append(f"Calibration: temperature {metrics['temperature']:.3g} fitted on the validation split "
                     f"(validation ECE {metrics['valid_ece']:.4f} -> {metrics['valid_ece_calibrated']:.4f})")
    if metrics.get("test_acc") is not None:
        lines.append(f"Test accuracy: {metrics['test_acc']:.4f}  95% CI "
                     f"{stats.format_interval(metrics['test_acc_ci95'])}  ({metrics['test_n']:,} test examples)")
    return lines
