"""The report's figures (matplotlib, Agg backend), returned as PNG bytes for embedding."""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from leukoedge.metrics import calibration_bins, roc_curve


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    _pyplot().close(fig)
    return buf.getvalue()


def roc_plot(y: np.ndarray, probs: dict[str, np.ndarray], aucs: dict[str, float]) -> bytes:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 4.5))
    for name, p in probs.items():
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, label=f"{name} (AUC {aucs[name]:.4f})", lw=1.4)
    ax.plot([0, 1], [0, 1], ls=":", c="grey", lw=0.8)
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title="ROC on held-out images")
    ax.legend(fontsize=8, loc="lower right")
    return _png(fig)


def reliability_plot(y: np.ndarray, probs: dict[str, np.ndarray]) -> bytes:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 4.5))
    for name, p in probs.items():
        bins = [b for b in calibration_bins(y, p) if b["count"]]
        ax.plot([b["mean_p"] for b in bins], [b["positive_rate"] for b in bins], marker="o", ms=3, label=name)
    ax.plot([0, 1], [0, 1], ls=":", c="grey", lw=0.8)
    ax.set(xlabel="mean predicted p(malignant)", ylabel="observed malignant rate", title="Reliability")
    ax.legend(fontsize=8)
    return _png(fig)


def dp_histogram(histogram: dict[str, list[float]], name: str) -> bytes:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    edges = np.asarray(histogram["edges"])
    ax.bar(edges[:-1], histogram["counts"], width=np.diff(edges), align="edge", edgecolor="black", lw=0.4)
    ax.set(xlabel="|p(int8) - p(float)|", ylabel="images", title=f"|Δp|, {name} vs float")
    ax.set_yscale("symlog")
    return _png(fig)


def confusion_plots(models: dict[str, dict[str, Any]]) -> bytes:
    plt = _pyplot()
    names = list(models)
    fig, axes = plt.subplots(1, len(names), figsize=(2.6 * len(names), 2.6), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        cm = models[name]["confusion"]
        grid = np.array([[cm["tn"], cm["fp"]], [cm["fn"], cm["tp"]]])
        ax.imshow(grid, cmap="Blues")
        for (i, j), v in np.ndenumerate(grid):
            ax.text(j, i, str(v), ha="center", va="center", fontsize=10)
        ax.set_xticks([0, 1], ["non-mal.", "malig."], fontsize=7)
        ax.set_yticks([0, 1], ["non-mal.", "malig."], fontsize=7)
        ax.set_title(name, fontsize=8)
        ax.set_xlabel("predicted", fontsize=7)
    axes[0][0].set_ylabel("true", fontsize=7)
    return _png(fig)


def layer_error_plot(rows: list[dict[str, Any]], ideal: float, suspect: float) -> bytes:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 0.35 * len(rows) + 1.2))
    labels = [f"{r['layer']} ({r['op']})" for r in rows]
    values = [r["rmse_over_scale"] for r in rows]
    colours = ["tab:red" if r["flagged"] else "tab:blue" for r in rows]
    ax.barh(range(len(rows)), values, color=colours)
    ax.set_yticks(range(len(rows)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.axvline(ideal, ls=":", c="green", label=f"rounding only ({ideal:.2f})")
    ax.axvline(suspect, ls="--", c="red", label=f"suspect (> {suspect})")
    ax.set(xlabel="rmse / scale", title="Per-layer quantization error")
    ax.legend(fontsize=7)
    return _png(fig)
