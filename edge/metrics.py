"""Binary classification metrics in plain numpy, shared by evaluation and the quantization report.

Kept on the edge side (no TensorFlow, no scikit-learn) so that every number leukoedge reports is
computed by one implementation that the tests check against hand-worked examples.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from leukoedge.errors import DataError

#: Metrics that depend on the threshold (computed from the confusion matrix).
THRESHOLD_METRICS = ("accuracy", "sensitivity", "specificity", "precision", "f1", "balanced_accuracy")
#: Metrics that use the probabilities themselves.
SCORE_METRICS = ("roc_auc", "pr_auc", "brier", "ece")


def _check(y_true: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true).astype(np.int64).reshape(-1)
    s = np.asarray(p, dtype=np.float64).reshape(-1)
    if y.shape != s.shape:
        raise ValueError(f"labels ({y.shape}) and scores ({s.shape}) differ in length")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 or 1")
    return y, s


def require_both_classes(y_true: np.ndarray, what: str = "evaluation set") -> None:
    """Refuse metrics on data with one class: sensitivity or specificity would be undefined."""
    y = np.asarray(y_true).reshape(-1)
    n_pos = int((y == 1).sum())
    n_neg = int((y == 0).sum())
    if n_pos == 0 or n_neg == 0:
        only = "malignant" if n_neg == 0 else "non-malignant"
        raise DataError(
            f"the {what} has {len(y)} images, all {only}: metrics such as accuracy, AUC, sensitivity "
            "and specificity need both classes, and on one class they mean nothing. "
            "Evaluate on labelled data with both classes, or use 'leukoedge classify' to label images."
        )


def confusion(y_true: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, int]:
    """Counts at ``p >= threshold`` -> positive."""
    y, s = _check(y_true, p)
    pred = s >= threshold
    return {
        "tp": int(np.sum(pred & (y == 1))),
        "fp": int(np.sum(pred & (y == 0))),
        "tn": int(np.sum(~pred & (y == 0))),
        "fn": int(np.sum(~pred & (y == 1))),
    }


def _div(a: float, b: float) -> float:
    return float(a) / float(b) if b else float("nan")


def threshold_metrics(cm: dict[str, int]) -> dict[str, float]:
    tp, fp, tn, fn = cm["tp"], cm["fp"], cm["tn"], cm["fn"]
    sens = _div(tp, tp + fn)
    spec = _div(tn, tn + fp)
    prec = _div(tp, tp + fp)
    npv = _div(tn, tn + fn)
    f1 = _div(2 * tp, 2 * tp + fp + fn)
    f1_neg = _div(2 * tn, 2 * tn + fn + fp)
    return {
        "accuracy": _div(tp + tn, tp + tn + fp + fn),
        "sensitivity": sens,
        "specificity": spec,
        "precision": prec,
        "npv": npv,
        "f1": f1,
        "f1_non_malignant": f1_neg,
        "balanced_accuracy": (sens + spec) / 2,
    }


def roc_auc(y_true: np.ndarray, p: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with ties counted as one half)."""
    y, s = _check(y_true, p)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    # average ranks over ties
    _, first, counts = np.unique(sorted_s, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def roc_curve(y_true: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """False-positive rates, true-positive rates and the thresholds they occur at (descending)."""
    y, s = _check(y_true, p)
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    distinct = np.r_[np.nonzero(np.diff(s_sorted))[0], len(s_sorted) - 1]
    tps = np.cumsum(y_sorted)[distinct]
    fps = (distinct + 1) - tps
    n_pos, n_neg = max(int(y.sum()), 1), max(len(y) - int(y.sum()), 1)
    fpr = np.r_[0.0, fps / n_neg]
    tpr = np.r_[0.0, tps / n_pos]
    thresholds = np.r_[np.inf, s_sorted[distinct]]
    return fpr, tpr, thresholds


def pr_curve(y_true: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision and recall at each distinct threshold (descending thresholds)."""
    y, s = _check(y_true, p)
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    distinct = np.r_[np.nonzero(np.diff(s_sorted))[0], len(s_sorted) - 1]
    tps = np.cumsum(y_sorted)[distinct]
    predicted = distinct + 1
    precision = tps / predicted
    recall = tps / max(int(y.sum()), 1)
    return precision, recall, s_sorted[distinct]


def average_precision(y_true: np.ndarray, p: np.ndarray) -> float:
    """PR-AUC as average precision: sum over thresholds of (recall step) x precision."""
    y, _ = _check(y_true, p)
    if y.sum() == 0:
        return float("nan")
    precision, recall, _ = pr_curve(y_true, p)
    steps = np.diff(np.r_[0.0, recall])
    return float(np.sum(steps * precision))


def brier(y_true: np.ndarray, p: np.ndarray) -> float:
    y, s = _check(y_true, p)
    return float(np.mean((s - y) ** 2))


def calibration_bins(y_true: np.ndarray, p: np.ndarray, n_bins: int = 10) -> list[dict[str, float]]:
    """Equal-width reliability bins: count, mean predicted p and observed positive rate per bin."""
    y, s = _check(y_true, p)
    idx = np.minimum((s * n_bins).astype(np.int64), n_bins - 1)
    bins = []
    for b in range(n_bins):
        mask = idx == b
        n = int(mask.sum())
        bins.append(
            {
                "lo": b / n_bins,
                "hi": (b + 1) / n_bins,
                "count": n,
                "mean_p": float(s[mask].mean()) if n else float("nan"),
                "positive_rate": float(y[mask].mean()) if n else float("nan"),
            }
        )
    return bins


def expected_calibration_error(y_true: np.ndarray, p: np.ndarray, n_bins: int = 10) -> float:
    """ECE: bin-count-weighted mean |observed rate - mean p| over equal-width bins."""
    bins = calibration_bins(y_true, p, n_bins)
    total = sum(b["count"] for b in bins)
    if not total:
        return float("nan")
    return float(sum(b["count"] * abs(b["positive_rate"] - b["mean_p"]) for b in bins if b["count"]) / total)


def binary_metrics(y_true: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, Any]:
    """Every headline metric at one threshold, plus the confusion matrix and class counts."""
    y, s = _check(y_true, p)
    require_both_classes(y)
    cm = confusion(y, s, threshold)
    out: dict[str, Any] = {"threshold": float(threshold), "n": int(len(y)), "n_malignant": int(y.sum())}
    out["n_non_malignant"] = out["n"] - out["n_malignant"]
    out.update(threshold_metrics(cm))
    out["roc_auc"] = roc_auc(y, s)
    out["pr_auc"] = average_precision(y, s)
    out["brier"] = brier(y, s)
    out["ece"] = expected_calibration_error(y, s)
    out["confusion"] = cm
    return out


def bootstrap_ci(
    y_true: np.ndarray,
    p: np.ndarray,
    threshold: float,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals, resampling within each class (stratified) so that every
    replicate has both classes and the class balance of the evaluation set."""
    y, s = _check(y_true, p)
    require_both_classes(y)
    rng = np.random.default_rng(seed)
    pos = np.flatnonzero(y == 1)
    neg = np.flatnonzero(y == 0)
    names = (*THRESHOLD_METRICS, *SCORE_METRICS)
    samples: dict[str, list[float]] = {k: [] for k in names}
    for _ in range(n_boot):
        idx = np.r_[rng.choice(pos, len(pos)), rng.choice(neg, len(neg))]
        yb, sb = y[idx], s[idx]
        tm = threshold_metrics(confusion(yb, sb, threshold))
        values = {**tm, "roc_auc": roc_auc(yb, sb), "pr_auc": average_precision(yb, sb)}
        values["brier"] = brier(yb, sb)
        values["ece"] = expected_calibration_error(yb, sb)
        for k in names:
            samples[k].append(values[k])
    out = {}
    for k, v in samples.items():
        arr = np.asarray(v, dtype=np.float64)
        arr = arr[~np.isnan(arr)]
        if len(arr) == 0:
            out[k] = (float("nan"), float("nan"))
        else:
            out[k] = (float(np.quantile(arr, alpha / 2)), float(np.quantile(arr, 1 - alpha / 2)))
    return out


def youden_threshold(y_true: np.ndarray, p: np.ndarray) -> float:
    """Threshold maximising sensitivity + specificity - 1 (Youden's J)."""
    y, s = _check(y_true, p)
    require_both_classes(y, "threshold-selection set")
    fpr, tpr, thr = roc_curve(y, s)
    j = tpr - fpr
    best = int(np.argmax(j[1:])) + 1  # skip the +inf point
    return float(thr[best])


def threshold_for_sensitivity(y_true: np.ndarray, p: np.ndarray, target: float = 0.95) -> float:
    """Highest threshold whose sensitivity is at least ``target``."""
    y, s = _check(y_true, p)
    require_both_classes(y, "threshold-selection set")
    pos = np.sort(s[y == 1])[::-1]
    k = max(math.ceil(target * len(pos) - 1e-9), 1)  # 0.28 * 25 is 7.000000000000001 in floats
    return float(pos[k - 1])


def snap_threshold(threshold: float, scale: float = 1.0 / 256, zero_point: int = 0) -> float:
    """Map a threshold onto a quantized output grid without changing any decision.

    An int8/uint8 output q decodes to (q - zero_point) * scale; ``p >= t`` on the grid is the same
    as ``q >= ceil(t / scale + zero_point)``, so the snapped threshold is that grid value.
    """
    q = math.ceil(threshold / scale + zero_point - 1e-9)
    return float((q - zero_point) * scale)


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval for a proportion, as fractions in [0, 1].

    With nothing counted (n = 0) the answer is (0, 1): it is the limit of the Wilson interval as n
    goes to 0 and says what is known, that the proportion may be anything. NaN would turn into null
    in strict JSON and make every comparison with a limit quietly false.
    """
    if n <= 0:
        return (0.0, 1.0)
    if not 0 <= successes <= n:
        raise ValueError(f"successes {successes} not in [0, {n}]")
    phat = successes / n
    denom = 1 + z * z / n
    centre = (phat + z * z / (2 * n)) / denom
    half = z * math.sqrt(phat * (1 - phat) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))
