"""Outputs of ``leukoedge evaluate --out DIR``: metrics.json, plots, report.md and report.html."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from leukoedge.train import plots
from leukoedge.train import runfiles as rf
from leukoedge.train.report import (
    Table,
    confusion_table,
    fmt,
    metric_table,
    per_class_table,
    render_html,
    render_markdown,
)


def one_class_table(m: dict[str, Any]) -> Table:
    """Rate per source class (and overall) with Wilson intervals."""
    metric = m["metric"]
    error = next(k for k in m["overall"] if k.endswith("_rate"))
    rows = []
    for name, r in [*m["by_source_class"].items(), ("all", m["overall"])]:
        rows.append(
            [
                name,
                str(r["n"]),
                fmt(r[metric]),
                f"{fmt(r['ci95'][0])} - {fmt(r['ci95'][1])}",
                fmt(r[error]),
                fmt(r["mean_p_malignant"]),
            ]
        )
    return [
        "source class",
        "images",
        metric,
        "95 % CI (Wilson)",
        error.replace("_", " "),
        "mean p(malignant)",
    ], rows


def summary_lines(result: dict[str, Any]) -> list[str]:
    """The evaluation in a few plain lines, for the terminal and the report's opening."""
    m = result["metrics"]
    lines = [
        f"images: {result['images']} ({', '.join(f'{k} {v}' for k, v in result['class_counts'].items())})",
        f"threshold: {result['threshold']:.4f} ({result['threshold_source']})",
    ]
    if result["skipped_files"]:
        lines.append(f"skipped {len(result['skipped_files'])} unreadable images")
    if result["kind"] == "differential":
        for name, r in [*m["by_source_class"].items(), ("all", m["overall"])]:
            cb, un = r["called_blast"], r["unclassified"]
            lines.append(
                f"{name:12s} n {r['n']:4d}  called blast {fmt(cb['rate'], 3)} "
                f"({fmt(cb['ci95'][0], 3)}-{fmt(cb['ci95'][1], 3)})  unclassified {fmt(un['rate'], 3)}  "
                f"types {r['types_given']}"
            )
    elif result["kind"] == "two_class":
        ci = m["ci95"]
        for key in ("roc_auc", "pr_auc", "sensitivity", "specificity", "balanced_accuracy"):
            lines.append(f"{key:18s} {fmt(m[key])}  (95 % CI {fmt(ci[key][0])} - {fmt(ci[key][1])})")
    else:
        metric = m["metric"]
        for name, r in [*m["by_source_class"].items(), ("all", m["overall"])]:
            lines.append(
                f"{metric} {name:12s} {fmt(r[metric])}  ({r['correct']}/{r['n']}, "
                f"95 % CI {fmt(r['ci95'][0])} - {fmt(r['ci95'][1])})"
            )
        lines.append("not reported: " + m["not_reported"])
    return lines


def write_eval_outputs(out: Path, result: dict[str, Any], y: np.ndarray, p: np.ndarray) -> None:
    """Write metrics.json, plots and the Markdown/HTML report of one evaluation into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    rf.write_json(out / rf.METRICS_FILE, result)
    m = result["metrics"]
    images: dict[str, Path] = {}
    blocks: list[Table | str]
    if result["kind"] == "differential":
        blocks = [line for line in summary_lines(result)[2:]]
    elif result["kind"] == "two_class":
        t = result["threshold"]
        images["roc"] = plots.save(plots.roc_figure(y, p, {"threshold": t}), out / rf.PLOTS["roc"])
        images["pr"] = plots.save(plots.pr_figure(y, p), out / rf.PLOTS["pr"])
        images["confusion"] = plots.save(
            plots.confusion_figure(m["confusion"], t), out / rf.PLOTS["confusion"]
        )
        blocks = [metric_table(m), per_class_table(m), confusion_table(m)]
    else:
        images["rates"] = plots.save(
            plots.rates_figure(m["by_source_class"], m["metric"]), out / rf.PLOTS["rates"]
        )
        blocks = [one_class_table(m), "Not reported: " + m["not_reported"]]
    overview: list[Table | str] = [line for line in summary_lines(result)[:2]]
    overview.append(f"model: {result['model']}")
    sections = [("Evaluation", overview + blocks)]
    title = "LeukoNet evaluation"
    cite = rf.citations(result["data"])
    (out / rf.REPORT_MD).write_text(render_markdown(title, sections, images, cite), encoding="utf-8")
    (out / rf.REPORT_HTML).write_text(render_html(title, sections, images, cite), encoding="utf-8")
