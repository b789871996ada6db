"""Intervals, tests and calibration checked against known values: textbook examples written out,
and scipy / scikit-learn where they compute the same thing."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import binomtest
from sklearn.metrics import f1_score

from ptflow import stats
from ptflow.models.calibration import (
    apply_temperature,
    expected_calibration_error,
    fit_temperature,
    reliability,
)
from ptflow.reports.metrics import classification_report, confusion, macro_f1, macro_f1_interval


def test_wilson_interval_matches_newcombes_worked_example_and_scipy():
    # Newcombe (1998), "Two-sided confidence intervals for the single proportion", 81/263: 0.2553 to 0.3662.
    low, high = stats.wilson_interval(81, 263)
    assert (round(low, 4), round(high, 4)) == (0.2553, 0.3662)
    for k, n in [(0, 10), (10, 10), (1, 1), (9825, 10000), (359, 359), (3, 17), (4999, 10000)]:
        expected = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        assert stats.wilson_interval(k, n) == pytest.approx((expected.low, expected.high), abs=1e-12)


def test_wilson_interval_stays_in_the_unit_interval_and_narrows_with_n():
    assert stats.wilson_interval(0, 0) == (0.0, 1.0)
    low, high = stats.wilson_interval(10, 10)
    assert 0 < low < 1 and high == 1.0  # all right: the interval is still not a point
    widths = [np.subtract(*stats.wilson_interval(n * 98 // 100, n)[::-1]) for n in (100, 1000, 10000)]
    assert widths[0] > widths[1] > widths[2]
    assert stats.accuracy_interval(0.9825, 10000) == stats.wilson_interval(9825, 10000)


@pytest.mark.parametrize("only_a, only_b", [(0, 1), (2, 10), (10, 2), (7, 7), (30, 51), (0, 25), (480, 530),
                                             (12000, 12400)])  # the last: past the exact-integer limit
def test_mcnemar_exact_is_the_two_sided_binomial_test(only_a, only_b):
    expected = binomtest(min(only_a, only_b), only_a + only_b, 0.5).pvalue
    assert stats.mcnemar_exact(only_a, only_b) == pytest.approx(expected, rel=1e-9)


def test_mcnemar_exact_textbook_values():
    # 2 vs 10 disagreements: p = 2 * (C(12,0) + C(12,1) + C(12,2)) / 2^12 = 158 / 4096
    assert stats.mcnemar_exact(2, 10) == 158 / 4096
    assert stats.mcnemar_exact(0, 0) == 1.0  # no disagreement: indistinguishable
    assert stats.mcnemar_exact(5, 5) == 1.0
    assert stats.mcnemar_exact(0, 30) < 1e-8


def test_mean_and_sample_std():
    assert stats.mean_std([0.1, 0.2, 0.3, 0.4]) == pytest.approx((0.25, float(np.std([0.1, 0.2, 0.3, 0.4], ddof=1))))
    assert stats.mean_std([0.5]) == (0.5, 0.0)


def test_classification_report_agrees_with_scikit_learn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 400)
    probs = rng.dirichlet(np.ones(5), 400)
    probs[np.arange(300), y[:300]] += 1.5  # mostly right
    probs /= probs.sum(1, keepdims=True)
    report = classification_report(y, probs, 5)
    y_pred = probs.argmax(1)
    assert report["accuracy"] == np.mean(y_pred == y) and report["n"] == 400
    assert report["macro_f1"] == pytest.approx(f1_score(y, y_pred, average="macro"))
    assert report["f1"] == pytest.approx(list(f1_score(y, y_pred, average=None)))
    assert report["accuracy_ci95"] == list(stats.wilson_interval(int((y_pred == y).sum()), 400))
    low, high = report["macro_f1_ci95"]
    assert low < report["macro_f1"] < high and high - low < 0.2


def test_macro_f1_counts_only_the_classes_that_occur_like_scikit_learn():
    y, y_pred = np.array([0, 0, 1, 1, 2]), np.array([0, 1, 1, 1, 2])  # class 3 of 4 never occurs
    assert macro_f1(confusion(y, y_pred, 4)) == pytest.approx(f1_score(y, y_pred, average="macro"))


def test_bootstrap_resamples_are_scored_like_the_full_sample_and_seeded():
    rng = np.random.default_rng(1)
    y, y_pred = rng.integers(0, 3, 200), rng.integers(0, 3, 200)
    y_pred[:120] = y[:120]
    index = rng.integers(0, 200, (4, 200))
    batched = macro_f1(np.stack([confusion(y[i], y_pred[i], 3) for i in index]))
    assert batched == pytest.approx([f1_score(y[i], y_pred[i], average="macro") for i in index])
    first = macro_f1_interval(y, y_pred, 3)
    assert first == macro_f1_interval(y, y_pred, 3)  # the same predictions give the same interval
    assert first != macro_f1_interval(y, y_pred, 3, seed=1)


def test_ece_of_a_worked_example():
    # Four predictions: confidences 0.95, 0.95 (one right, one wrong) and 0.55, 0.55 (both right).
    # With 15 bins: bin (14/15, 1]: |0.5 - 0.95| * 2/4; bin (8/15, 9/15]: |1.0 - 0.55| * 2/4. ECE = 0.45.
    probs = np.array([[0.95, 0.05], [0.95, 0.05], [0.45, 0.55], [0.45, 0.55]])
    y = np.array([0, 1, 1, 1])
    assert expected_calibration_error(probs, y) == pytest.approx(0.45)
    bins = reliability(probs, y)
    assert [b["count"] for b in bins] == [0] * 8 + [2] + [0] * 5 + [2]
    assert bins[14]["accuracy"] == 0.5 and bins[8]["confidence"] == pytest.approx(0.55)


def overconfident(n=6000, classes=10, sharpen=4.0, seed=0):
    """Logits of a calibrated model (labels drawn from its own softmax), then sharpened: over-confident."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, classes, generator=generator) * 2
    y = torch.multinomial(torch.softmax(logits, -1), 1, generator=generator).squeeze(1)
    return logits * sharpen, y


def test_temperature_scaling_lowers_ece_and_keeps_every_argmax():
    scores, y = overconfident()
    temperature = fit_temperature(scores, y)
    assert temperature == pytest.approx(4.0, rel=0.1)  # undoes the sharpening it was given
    before = apply_temperature(scores, None).numpy()
    after = apply_temperature(scores, temperature).numpy()
    assert expected_calibration_error(after, y.numpy()) < expected_calibration_error(before, y.numpy()) / 3
    assert np.array_equal(after.argmax(1), before.argmax(1))  # accuracy unchanged


def test_fitted_temperature_minimises_the_validation_nll():
    scores, y = overconfident(sharpen=0.5, seed=3)  # under-confident this time: T < 1
    temperature = fit_temperature(scores, y)
    assert temperature < 1

    def nll(t):
        return float(F.cross_entropy(scores.double() / t, y))

    assert nll(temperature) <= min(nll(temperature * 1.01), nll(temperature / 1.01))
    # log-probabilities (a model ending in log-softmax) give the same temperature as logits
    assert fit_temperature(torch.log_softmax(scores, -1), y) == pytest.approx(temperature, rel=1e-5)


def test_formatting():
    assert stats.format_interval((0.97971, 0.985)) == "[0.9797, 0.9850]"
    assert stats.format_interval(None) == "" and stats.format_interval((math.nan, 1.0)) == ""
    assert stats.format_p(0.03857) == "0.0386" and stats.format_p(1e-9) == "< 1e-6"
