"""How sure a number is: confidence intervals and significance tests for what ptflow reports.

A test accuracy measured on n examples is an estimate: on MNIST's 10,000 test images its 95%
interval is about +-0.3 points at 98%, on 360 test digits about +-1.5 points. Every accuracy
ptflow shows carries its interval, and two models tested on the same examples can be compared
with a test that uses the pairing (McNemar's), which is far more sensitive than comparing two
intervals.

- Accuracy: the Wilson score interval (it stays inside [0, 1] and keeps close to its nominal
  coverage for small n and accuracies near 1, where the textbook p +- z*sqrt(p(1-p)/n) fails).
- Metrics that are not a proportion (macro-F1): a percentile bootstrap over the test examples,
  seeded, so the same predictions give the same interval.
- Paired comparison: McNemar's exact test, a two-sided binomial test on the examples exactly one
  of the two models gets right.

Pure Python (math) except the bootstrap, which imports numpy when called: `ptflow runs` formats
intervals without loading numpy.
"""

from __future__ import annotations

import math

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile: two-sided 95% intervals
BOOTSTRAP_SAMPLES = 1000  # enough for a percentile interval's ends to settle within ~0.001 on 10,000 examples
EXACT_LIMIT = 20_000  # disagreements up to which the binomial tail is summed in exact integers


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion successes / n (95% by default)."""
    if n <= 0:
        return (0.0, 1.0)  # no evidence: every value is possible
    p = successes / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    # At 0 or n successes the interval ends exactly at 0 or 1; floating point would miss by 1e-16.
    return (0.0 if successes == 0 else max(0.0, centre - half), 1.0 if successes == n else min(1.0, centre + half))


def accuracy_interval(accuracy: float, n: int) -> tuple[float, float]:
    """Wilson interval of an accuracy measured on n examples (the count of correct ones is recovered)."""
    return wilson_interval(round(accuracy * n), n)


def binomial_tail(k: int, n: int) -> float:
    """P(X <= k) for X ~ Binomial(n, 1/2)."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    if n <= EXACT_LIMIT:  # exact: integer sums, one division at the end (Python divides big ints exactly)
        term, total = 1, 1
        for i in range(1, k + 1):
            term = term * (n - i + 1) // i  # C(n, i) from C(n, i - 1): always an exact integer
            total += term
        return total / 2 ** n
    log_half = n * math.log(0.5)
    logs = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + log_half for i in range(k + 1)]
    top = max(logs)
    return math.exp(top) * math.fsum(math.exp(v - top) for v in logs)


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided p-value of McNemar's exact test.

    only_a: examples model A gets right and model B wrong; only_b: the reverse. Under the null
    hypothesis (equal accuracy) each disagreement goes either way with probability 1/2. With no
    disagreement at all the two models are indistinguishable: p = 1.
    """
    n = only_a + only_b
    if n == 0:
        return 1.0
    return min(1.0, 2 * binomial_tail(min(only_a, only_b), n))


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1 in the denominator; 0 for a single value)."""
    n = len(values)
    mean = math.fsum(values) / n
    if n < 2:
        return mean, 0.0
    return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))


def bootstrap_interval(statistic, n: int, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0,
                       level: float = 0.95, chunk: int = 100) -> tuple[float, float]:
    """Percentile bootstrap interval of statistic(index) over n examples.

    statistic takes an index array of shape (k, n) (k resamples, each n indices drawn with
    replacement) and returns k values; resamples are drawn `chunk` at a time to bound memory.
    """
    import numpy as np

    if n == 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    values = []
    for start in range(0, samples, chunk):
        index = rng.integers(0, n, (min(chunk, samples - start), n))
        values.append(np.asarray(statistic(index), dtype=np.float64))
    values = np.concatenate(values)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return (float(low), float(high))


def format_interval(interval) -> str:
    """[0.9797, 0.9850]; empty for a missing interval, so callers can append it unconditionally."""
    if not interval or any(v is None or not math.isfinite(v) for v in interval):
        return ""
    return f"[{interval[0]:.4f}, {interval[1]:.4f}]"


def format_p(p: float) -> str:
    """A p-value as people read them: 3 significant digits, tiny ones as < 1e-6."""
    return "< 1e-6" if p < 1e-6 else f"{p:.3g}"
