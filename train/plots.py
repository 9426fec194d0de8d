"""Plots of a run: training curves, ROC, precision-recall, confusion matrix, per-class rates.

Figures are built with :class:`matplotlib.figure.Figure` and the Agg canvas directly, not through
pyplot, so nothing depends on a display or on global backend state (this runs on headless
servers and inside test processes). Curves come from :mod:`leukoedge.metrics`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from leukoedge.contract import CLASS_NAMES
from leukoedge.metrics import average_precision, pr_curve, roc_auc, roc_curve


def _figure(width: float = 5.0, height: float = 4.0) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def save(fig: Any, path: str | Path, dpi: int = 110) -> Path:
    """Write a figure as PNG and return the path."""
    out = Path(path)
    fig.savefig(out, format="png", dpi=dpi, bbox_inches="tight")
    return out


def history_figure(history: Sequence[Mapping[str, float]], best_epoch: int | None = None) -> Any:
    """Loss, accuracy and ROC-AUC per epoch, training and validation, best epoch marked."""
    from matplotlib.ticker import MaxNLocator

    fig = _figure(11.0, 3.4)
    epochs = [int(r["epoch"]) for r in history]
    for i, (key, label) in enumerate((("loss", "loss"), ("accuracy", "accuracy"), ("auc", "ROC-AUC"))):
        ax = fig.add_subplot(1, 3, i + 1)
        for prefix, style in (("", "-o"), ("val_", "-s")):
            values = [r.get(prefix + key, np.nan) for r in history]
            ax.plot(epochs, values, style, ms=3, label=("validation" if prefix else "training"))
        if best_epoch:
            ax.axvline(best_epoch, color="grey", ls=":", lw=1, label=f"best (epoch {best_epoch})")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(label)
        ax.grid(alpha=0.3)
        if i == 0:
            ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def roc_figure(y: np.ndarray, p: np.ndarray, thresholds: Mapping[str, float] | None = None) -> Any:
    """ROC curve with its AUC; the named thresholds are marked as operating points."""
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    fpr, tpr, _ = roc_curve(y, p)
    ax.plot(fpr, tpr, lw=1.5, label=f"ROC (AUC {roc_auc(y, p):.4f})")
    ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=0.8)
    yy, pp = np.asarray(y).reshape(-1), np.asarray(p).reshape(-1)
    for name, t in (thresholds or {}).items():
        sens = float(np.mean(pp[yy == 1] >= t))
        fp = float(np.mean(pp[yy == 0] >= t))
        ax.plot([fp], [sens], "o", label=f"{name} (t={t:.3f})")
    ax.set_xlabel("false-positive rate (1 - specificity)")
    ax.set_ylabel("sensitivity")
    ax.set_title("ROC")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def pr_figure(y: np.ndarray, p: np.ndarray) -> Any:
    """Precision-recall curve with average precision, and the positive share as the chance line."""
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    precision, recall, _ = pr_curve(y, p)
    end = int(np.argmax(recall >= recall.max())) + 1  # lower thresholds add false positives only
    precision, recall = precision[:end], recall[:end]
    ax.step(
        np.r_[0.0, recall],
        np.r_[precision[0], precision],
        where="post",
        label=f"AP {average_precision(y, p):.4f}",
    )
    ax.axhline(float(np.mean(y)), color="grey", ls="--", lw=0.8, label="chance")
    ax.set_xlabel("recall (sensitivity)")
    ax.set_ylabel("precision")
    ax.set_ylim(0, 1.02)
    ax.set_title("Precision-recall")
    ax.legend(loc="lower left", fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def confusion_figure(confusion: Mapping[str, int], threshold: float) -> Any:
    """The 2 x 2 confusion matrix (rows: true class, columns: predicted class) with counts."""
    fig = _figure(4.2, 3.6)
    ax = fig.add_subplot(1, 1, 1)
    m = np.array([[confusion["tn"], confusion["fp"]], [confusion["fn"], confusion["tp"]]])
    ax.imshow(m, cmap="Blues")
    for (i, j), v in np.ndenumerate(m):
        ax.text(j, i, str(int(v)), ha="center", va="center", color="white" if v > m.max() / 2 else "black")
    ax.set_xticks([0, 1], [f"pred. {c}" for c in CLASS_NAMES], fontsize=8)
    ax.set_yticks([0, 1], list(CLASS_NAMES), fontsize=8)
    ax.set_title(f"Confusion matrix (t = {threshold:.3f})")
    return fig


def rates_figure(by_source: Mapping[str, Mapping[str, Any]], metric: str) -> Any:
    """A rate (e.g. specificity) per source class with its 95 % interval: for one-class sets."""
    fig = _figure(6.0, 3.6)
    ax = fig.add_subplot(1, 1, 1)
    names = list(by_source)
    values = [by_source[n][metric] for n in names]
    # clipped at 0: a Wilson bound can sit a rounding error inside an observed 0 or 1
    lo = [max(0.0, v - by_source[n]["ci95"][0]) for n, v in zip(names, values, strict=True)]
    hi = [max(0.0, by_source[n]["ci95"][1] - v) for n, v in zip(names, values, strict=True)]
    ax.bar(names, values, yerr=[lo, hi], capsize=4, color="#4a7fb5")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} per source class (95 % Wilson interval)")
    ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    ax.grid(axis="y", alpha=0.3)
    return fig
