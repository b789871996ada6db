"""What a finished run learns about its model on held-out data, after training chose the weights.

- With --calibrate, a softmax temperature fitted on the validation split (models/calibration.py),
  with the validation ECE before and after. The validation split has already chosen the best
  epoch; fitting one more number there still leaves the test split untouched.
- The test split, judged once: loss, accuracy with its 95% Wilson interval, ECE, and each
  example's prediction (the run folder's predictions.npz, for `ptflow runs compare`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ptflow import stats
from ptflow.models.calibration import apply_temperature, expected_calibration_error, fit_temperature
from ptflow.training.loop import autocast, loss_function

# Every key judge() may add to a run's metrics (a resumed run clears them until it finishes again)
RESULTS = ("temperature", "valid_ece", "valid_ece_calibrated", "test_loss", "test_acc", "test_acc_ci95", "test_n",
           "test_ece")


@dataclass
class Outcome:
    metrics: dict = field(default_factory=dict)  # JSON-ready, merged into the run's metrics
    temperature: float | None = None  # for the model file's meta
    test_probs: np.ndarray | None = None  # |test_probs| = (n_test, n_classes), temperature applied


@torch.inference_mode()
def scores(model: torch.nn.Module, forward, x: torch.Tensor, batch_size: int, precision: str) -> torch.Tensor:
    """The network's scores (logits or log-probabilities) for x, float32, in eval mode."""
    model.eval()
    out = []
    for start in range(0, len(x), batch_size):
        with autocast(x.device, precision):
            out.append(forward(x[start:start + batch_size]).float())
    return torch.cat(out) if out else torch.zeros((0, 0))


def judge(model: torch.nn.Module, forward, data: dict[str, torch.Tensor], batch_size: int, precision: str,
          calibrate: bool, evaluate_test: bool) -> Outcome:
    """Fit the temperature (if asked) on validation, then judge the test split (if asked)."""
    outcome = Outcome()
    if calibrate:
        valid = scores(model, forward, data["x_val"], batch_size, precision).cpu()
        y_val = data["y_val"].cpu()
        outcome.temperature = fit_temperature(valid, y_val)
        before = expected_calibration_error(apply_temperature(valid, None).numpy(), y_val.numpy())
        after = expected_calibration_error(apply_temperature(valid, outcome.temperature).numpy(), y_val.numpy())
        outcome.metrics.update(temperature=outcome.temperature, valid_ece=before, valid_ece_calibrated=after)
    if evaluate_test:
        test = scores(model, forward, data["x_test"], batch_size, precision).cpu()
        y = data["y_test"].cpu()
        correct = int((test.argmax(-1) == y).sum())
        outcome.test_probs = apply_temperature(test, outcome.temperature).numpy()
        test_loss = mean_loss(test, y, batch_size, loss_function(model))
        outcome.metrics.update(test_loss=test_loss, test_acc=correct / len(y),
                               test_acc_ci95=list(stats.wilson_interval(correct, len(y))), test_n=len(y),
                               test_ece=expected_calibration_error(outcome.test_probs, y.numpy()))
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
