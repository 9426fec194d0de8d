"""Metrics against hand-worked examples: every reported number rests on these."""

from __future__ import annotations

import numpy as np
import pytest

from leukoedge.errors import DataError
from leukoedge.metrics import (
    average_precision,
    binary_metrics,
    bootstrap_ci,
    brier,
    confusion,
    expected_calibration_error,
    roc_auc,
    snap_threshold,
    threshold_for_sensitivity,
    wilson_interval,
    youden_threshold,
)

Y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
P = np.array([0.1, 0.4, 0.35, 0.8, 0.9, 0.7, 0.6, 0.3])


def test_confusion_and_threshold_metrics_by_hand() -> None:
    # at 0.5: positives predicted for 0.8 (neg), 0.9, 0.7, 0.6 (pos); 0.3 is a missed positive
    assert confusion(Y, P, 0.5) == {"tp": 3, "fp": 1, "tn": 3, "fn": 1}
    m = binary_metrics(Y, P, 0.5)
    assert m["sensitivity"] == pytest.approx(0.75)
    assert m["specificity"] == pytest.approx(0.75)
    assert m["precision"] == pytest.approx(0.75)
    assert m["f1"] == pytest.approx(0.75)
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["n"] == 8 and m["n_malignant"] == 4


def test_roc_auc_counts_pairs() -> None:
    # 16 (pos, neg) pairs; pos scores 0.9,0.7,0.6,0.3 vs neg 0.1,0.4,0.35,0.8
    wins = sum(p > n for p in (0.9, 0.7, 0.6, 0.3) for n in (0.1, 0.4, 0.35, 0.8))
    assert roc_auc(Y, P) == pytest.approx(wins / 16)
    assert roc_auc([0, 1], [0.5, 0.5]) == pytest.approx(0.5)  # a tie counts one half
    assert roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0


def test_average_precision_by_hand() -> None:
    # ranking: 0.9(+) 0.8(-) 0.7(+) 0.6(+) 0.4(-) 0.35(-) 0.3(+) 0.1(-)
    expected = (1 / 1 + 2 / 3 + 3 / 4 + 4 / 7) / 4
    assert average_precision(Y, P) == pytest.approx(expected)


def test_brier_and_ece() -> None:
    assert brier([0, 1], [0.0, 1.0]) == 0.0
    assert brier([0, 1], [1.0, 0.0]) == 1.0
    # perfectly calibrated in each bin -> ECE 0
    y = np.array([0] * 9 + [1] * 1 + [1] * 9 + [0] * 1)
    p = np.array([0.1] * 10 + [0.9] * 10)
    assert expected_calibration_error(y, p) == pytest.approx(0.0)
    assert expected_calibration_error([1, 1], [0.05, 0.05]) == pytest.approx(0.95)


def test_single_class_is_refused() -> None:
    with pytest.raises(DataError, match="all non-malignant"):
        binary_metrics([0, 0, 0], [0.1, 0.2, 0.3], 0.5)
    with pytest.raises(DataError, match="both classes"):
        bootstrap_ci([1, 1], [0.9, 0.8], 0.5, n_boot=10)


def test_thresholds_chosen_on_scores() -> None:
    t = youden_threshold(Y, P)
    cm = confusion(Y, P, t)
    j = cm["tp"] / 4 + cm["tn"] / 4 - 1
    # no other observed threshold gives a higher J
    for cand in P:
        c = confusion(Y, P, cand)
        assert c["tp"] / 4 + c["tn"] / 4 - 1 <= j + 1e-12
    t95 = threshold_for_sensitivity(Y, P, 0.95)
    assert t95 == pytest.approx(0.3)  # all four positives need the lowest positive score
    assert confusion(Y, P, t95)["fn"] == 0


def test_bootstrap_interval_contains_point_estimate() -> None:
    rng = np.random.default_rng(1)
    y = np.r_[np.zeros(100), np.ones(100)].astype(int)
    p = np.clip(np.r_[rng.normal(0.3, 0.15, 100), rng.normal(0.7, 0.15, 100)], 0, 1)
    point = binary_metrics(y, p, 0.5)
    ci = bootstrap_ci(y, p, 0.5, n_boot=200, seed=3)
    for key in ("roc_auc", "sensitivity", "specificity"):
        lo, hi = ci[key]
        assert lo <= point[key] <= hi
        assert hi - lo < 0.25
    assert ci == bootstrap_ci(y, p, 0.5, n_boot=200, seed=3)  # seeded


def test_snap_threshold_keeps_decisions_on_the_grid() -> None:
    scale = 1 / 256
    for t in (0.5, 0.4321, 0.999, 0.001):
        snapped = snap_threshold(t, scale, 0)
        assert abs(snapped - t) < scale
        for q in range(256):
            p = q * scale
            assert (p >= t) == (p >= snapped)


def test_wilson_interval() -> None:
    lo, hi = wilson_interval(20, 100)
    assert lo == pytest.approx(0.1333, abs=1e-3) and hi == pytest.approx(0.2888, abs=1e-3)
    assert wilson_interval(0, 0) == (0.0, 1.0)  # nothing counted: any proportion
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        wilson_interval(11, 10)
