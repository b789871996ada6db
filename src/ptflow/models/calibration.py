"""Calibration: whether a model's confidence matches how often it is right, and a temperature
that makes it so.

A classifier that says 0.99 should be right 99% of the time. Networks trained to a low loss are
usually over-confident; the expected calibration error (ECE) measures the gap: predictions are
put in equal-width bins by confidence (their top probability), and the gap between each bin's
mean confidence and its accuracy is averaged, weighted by the bin's share of examples (Guo et
al., "On Calibration of Modern Neural Networks", 2017, who use 15 bins).

Temperature scaling (same paper) divides the scores by one number T before the softmax, fitted
to minimise the negative log-likelihood on the validation split. T > 1 softens over-confident
predictions; the argmax, and so the accuracy, never changes. The model file keeps T (meta key
`temperature`) and predict, serve and export apply it. It is fitted on validation data, never
on the test split, which only judges.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

ECE_BINS = 15  # Guo et al.'s choice: fine enough to see the shape, coarse enough to fill bins on 10,000 examples
TEMPERATURE_RANGE = (0.05, 20.0)  # searched on a log scale; beyond it a model is broken, not miscalibrated


def reliability(probs: np.ndarray, y: np.ndarray, bins: int = ECE_BINS) -> list[dict]:
    """Per confidence bin (lo, hi]: examples, mean confidence and accuracy (None for an empty bin)."""
    confidence = probs.max(1)
    correct = probs.argmax(1) == y
    # bin i holds confidences in (i/bins, (i+1)/bins]; a confidence of exactly 0 cannot happen
    index = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    rows = []
    for i in range(bins):
        members = index == i
        count = int(members.sum())
        rows.append({"lo": i / bins, "hi": (i + 1) / bins, "count": count,
                     "confidence": float(confidence[members].mean()) if count else None,
                     "accuracy": float(correct[members].mean()) if count else None})
    return rows


def expected_calibration_error(probs: np.ndarray, y: np.ndarray, bins: int = ECE_BINS) -> float:
    """Sum over bins of (share of examples) * |accuracy - mean confidence|."""
    n = len(y)
    if n == 0:
        return math.nan
    return float(sum(b["count"] / n * abs(b["accuracy"] - b["confidence"])
                     for b in reliability(probs, y, bins) if b["count"]))


def fit_temperature(scores: torch.Tensor, y: torch.Tensor, iterations: int = 80) -> float:
    """The T minimising the mean NLL of softmax(scores / T) on (scores, y).

    The NLL is convex in 1/T, so it has one minimum: a golden-section search over log T finds
    it to ~1e-6 relative without a learning rate to tune. scores may be logits or
    log-probabilities (a model ending in log-softmax): softmax(scores / T) is the same for both.
    """
    scores, y = scores.detach().double(), y.detach()

    def nll(log_t: float) -> float:
        return float(F.cross_entropy(scores / math.exp(log_t), y))

    low, high = math.log(TEMPERATURE_RANGE[0]), math.log(TEMPERATURE_RANGE[1])
    ratio = (math.sqrt(5) - 1) / 2
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    f_a, f_b = nll(a), nll(b)
    for _ in range(iterations):
        if f_a <= f_b:
            high, b, f_b = b, a, f_a
            a = high - ratio * (high - low)
            f_a = nll(a)
        else:
            low, a, f_a = a, b, f_b
            b = low + ratio * (high - low)
            f_b = nll(b)
    return math.exp((low + high) / 2)


def apply_temperature(scores: torch.Tensor, temperature: float | None) -> torch.Tensor:
    """Class probabilities from scores (logits or log-probabilities), softened by the temperature."""
    if temperature is not None and temperature != 1.0:
        scores = scores / temperature
    return torch.softmax(scores, dim=-1)
