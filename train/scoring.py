"""Turning scores into reported figures: thresholds chosen on validation data, metrics with intervals.

All numbers come from :mod:`leukoedge.metrics` (one implementation for the whole package); this
module decides which of them a run reports and how thresholds are picked. Thresholds are chosen
on the validation split only and applied unchanged to the test split.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from leukoedge.contract import CLASS_NAMES, POSITIVE_CLASS
from leukoedge.metrics import (
    binary_metrics,
    bootstrap_ci,
    require_both_classes,
    threshold_for_sensitivity,
    wilson_interval,
    youden_threshold,
)

NEGATIVE_CLASS = next(c for c in CLASS_NAMES if c != POSITIVE_CLASS)
#: Names of the two threshold rules; "youden" is the default operating point.
OPERATING_RULES = ("youden", "sensitivity")
#: Bootstrap replicates for the 95 % intervals.
N_BOOT = 1000


def with_margin(edge: float, scores: np.ndarray) -> float:
    """Move a threshold from a validation score down to halfway to the next lower validation score.

    Every threshold in that gap makes the same decisions on the validation images, so the choice
    inside it is free; the midpoint does not put the cut exactly on one validation image's score
    (which, on well-separated data, leaves no room at all for unseen positives just below it).
    """
    below = scores[scores < edge]
    return float((edge + below.max()) / 2.0) if below.size else float(edge)


def choose_thresholds(
    y_val: np.ndarray, p_val: np.ndarray, target_sensitivity: float = 0.95
) -> dict[str, Any]:
    """Youden-J and fixed-sensitivity thresholds from validation scores, with what they give there."""
    y = np.asarray(y_val).astype(np.int64).reshape(-1)
    p = np.asarray(p_val, dtype=np.float64).reshape(-1)
    require_both_classes(y, "validation split (used to choose the threshold)")
    if not 0 < target_sensitivity <= 1:
        raise ValueError(f"target sensitivity {target_sensitivity} must be in (0, 1]")
    rules = {
        "youden": (youden_threshold(y, p), "maximises sensitivity + specificity - 1 on validation"),
        "sensitivity": (
            threshold_for_sensitivity(y, p, target_sensitivity),
            f"highest threshold with validation sensitivity >= {target_sensitivity:g}",
        ),
    }
    out: dict[str, Any] = {}
    for name, (edge, rule) in rules.items():
        value = with_margin(edge, p)
        m = binary_metrics(y, p, value)
        out[name] = {
            "value": value,
            "validation_score_edge": edge,
            "rule": rule + "; placed halfway to the next lower validation score",
            "val_sensitivity": m["sensitivity"],
            "val_specificity": m["specificity"],
        }
    out["sensitivity"]["target"] = float(target_sensitivity)
    return out


def per_class(metrics: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Precision, recall and F1 per class from a :func:`binary_metrics` result."""
    cm = metrics["confusion"]
    return {
        POSITIVE_CLASS: {
            "precision": metrics["precision"],
            "recall": metrics["sensitivity"],
            "f1": metrics["f1"],
            "support": cm["tp"] + cm["fn"],
        },
        NEGATIVE_CLASS: {
            "precision": metrics["npv"],
            "recall": metrics["specificity"],
            "f1": metrics["f1_non_malignant"],
            "support": cm["tn"] + cm["fp"],
        },
    }


def evaluate_scores(
    y: np.ndarray, p: np.ndarray, threshold: float, n_boot: int = N_BOOT, seed: int = 0
) -> dict[str, Any]:
    """Every headline metric at ``threshold`` with stratified-bootstrap 95 % intervals.

    Refuses (DataError) a set without both classes: see :func:`one_class_rates` for those.
    """
    m = binary_metrics(y, p, threshold)
    m["per_class"] = per_class(m)
    m["ci95"] = {k: list(v) for k, v in bootstrap_ci(y, p, threshold, n_boot=n_boot, seed=seed).items()}
    m["n_bootstrap"] = n_boot
    return m


def one_class_rates(
    y: np.ndarray, p: np.ndarray, threshold: float, source_classes: Sequence[str | None]
) -> dict[str, Any]:
    """What a one-class set can tell: how often the model calls its images the other class.

    For an all-negative set that is the specificity (and false-positive rate) overall and per
    source class, with Wilson 95 % intervals; for an all-positive set, the sensitivity. Nothing
    that needs both classes (AUC, precision, balanced accuracy, a threshold) is computed.
    """
    y = np.asarray(y).astype(np.int64).reshape(-1)
    p = np.asarray(p, dtype=np.float64).reshape(-1)
    present = sorted(set(y.tolist()))
    if len(present) != 1:
        raise ValueError("one_class_rates is for sets with exactly one class")
    cls = CLASS_NAMES[present[0]]
    correct = (p >= threshold) if cls == POSITIVE_CLASS else (p < threshold)
    rate_name = "sensitivity" if cls == POSITIVE_CLASS else "specificity"
    error_name = "false_negative_rate" if cls == POSITIVE_CLASS else "false_positive_rate"

    def rates(mask: np.ndarray) -> dict[str, Any]:
        n, k = int(mask.sum()), int(correct[mask].sum())
        lo, hi = wilson_interval(k, n)
        return {
            "n": n,
            "correct": k,
            rate_name: k / n if n else math.nan,
            "ci95": [lo, hi],
            error_name: (n - k) / n if n else math.nan,
            "mean_p_malignant": float(p[mask].mean()) if n else math.nan,
        }

    sources = np.array([str(s) for s in source_classes])
    by_source = {s: rates(sources == s) for s in sorted(Counter(sources.tolist()))}
    other = NEGATIVE_CLASS if cls == POSITIVE_CLASS else POSITIVE_CLASS
    return {
        "one_class": cls,
        "threshold": float(threshold),
        "metric": rate_name,
        "overall": rates(np.ones(len(y), dtype=bool)),
        "by_source_class": by_source,
        "not_reported": (
            f"every image is {cls}: ROC-AUC, PR-AUC, precision, F1, balanced accuracy and {other} "
            f"recall need {other} images and are not reported; only the {rate_name} "
            f"(share of images called {cls}) is defined."
        ),
    }
