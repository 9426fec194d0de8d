"""Writing a run's outputs: history.csv, metrics.json, run.json, plots, report.md and report.html.

The Markdown and HTML reports show the same tables, built once from the metrics; the HTML
embeds the plots so the one file is the whole report.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from leukoedge import report as hr
from leukoedge.train import plots
from leukoedge.train import runfiles as rf

#: (key in the metrics dict, label) in report order.
HEADLINE = (
    ("roc_auc", "ROC-AUC"),
    ("pr_auc", "PR-AUC (average precision)"),
    ("sensitivity", "Sensitivity (malignant recall)"),
    ("specificity", "Specificity (non-malignant recall)"),
    ("precision", "Precision (malignant)"),
    ("f1", "F1 (malignant)"),
    ("balanced_accuracy", "Balanced accuracy"),
    ("accuracy", "Accuracy"),
)

Table = tuple[list[str], list[list[str]]]


def fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def metric_table(m: Mapping[str, Any]) -> Table:
    """Headline metrics with their bootstrap 95 % intervals."""
    ci = m.get("ci95", {})
    rows = []
    for key, label in HEADLINE:
        lo, hi = ci.get(key, (None, None))
        rows.append([label, fmt(m.get(key)), f"{fmt(lo)} - {fmt(hi)}" if lo is not None else ""])
    return ["metric", "value", "95 % CI (bootstrap)"], rows


def per_class_table(m: Mapping[str, Any]) -> Table:
    rows = [
        [name, fmt(v["precision"]), fmt(v["recall"]), fmt(v["f1"]), str(v["support"])]
        for name, v in m["per_class"].items()
    ]
    return ["class", "precision", "recall", "F1", "images"], rows


def confusion_table(m: Mapping[str, Any]) -> Table:
    cm = m["confusion"]
    return (
        ["true \\ predicted", "non_malignant", "malignant"],
        [["non_malignant", str(cm["tn"]), str(cm["fp"])], ["malignant", str(cm["fn"]), str(cm["tp"])]],
    )


def threshold_table(
    thresholds: Mapping[str, Any], operating: str, test_at: Mapping[str, Any] | None
) -> Table:
    rows = []
    for name, t in thresholds.items():
        at = (test_at or {}).get(name, {})
        rows.append(
            [
                name + (" (operating)" if name == operating else ""),
                fmt(t["value"]),
                f"{fmt(t['val_sensitivity'])} / {fmt(t['val_specificity'])}",
                f"{fmt(at.get('sensitivity'))} / {fmt(at.get('specificity'))}" if at else "n/a",
                t["rule"],
            ]
        )
    return ["threshold", "value", "val sens / spec", "test sens / spec", "rule"], rows


def md_table(table: Table) -> str:
    header, rows = table
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def html_table(table: Table) -> str:
    return hr.table(*table)


def _save_plots(
    out: Path, history: Sequence[Mapping[str, float]], best_epoch: int, scores: Mapping, metrics: Mapping
) -> dict[str, Path]:
    saved = {"history": plots.save(plots.history_figure(history, best_epoch), out / rf.PLOTS["history"])}
    if metrics.get("robustness"):
        from leukoedge.train.robustness import robustness_figure

        saved["robustness"] = plots.save(
            robustness_figure(metrics["robustness"]), out / rf.PLOTS["robustness"]
        )
    if scores.get("test") is not None:
        y, p = scores["test"]
        marks = {name: t["value"] for name, t in metrics["thresholds"].items()}
        saved["roc"] = plots.save(plots.roc_figure(y, p, marks), out / rf.PLOTS["roc"])
        saved["pr"] = plots.save(plots.pr_figure(y, p), out / rf.PLOTS["pr"])
        t = metrics["operating_threshold"]["value"]
        saved["confusion"] = plots.save(
            plots.confusion_figure(metrics["test"]["confusion"], t), out / rf.PLOTS["confusion"]
        )
    return saved


def _run_facts(run: Mapping[str, Any]) -> Table:
    data, model = run["data"], run["model"]
    split_counts = run["splits"]["counts"]
    rows = [
        ["data", f"{data['root']} ({data['layout']})"],
        ["label mapping", data.get("mapping_text", "")],
        ["splits", run["splits"]["policy"]],
        *[[f"  {k}", ", ".join(f"{c} {n}" for c, n in v.items())] for k, v in split_counts.items()],
        ["skipped files", str(len(run.get("skipped_files", [])))],
        ["model", f"{model['architecture']}, {model['params']:,} parameters"],
        [
            "best epoch",
            f"{model['best_epoch']} of {model['epochs_run']} (validation AUC {fmt(model['best_val_auc'])})",
        ],
        [
            "crop geometry",
            f"cell fraction {run['input_contract']['crop']['cell_fraction']:.3f} "
            f"({run['crop_geometry_source']})",
        ],
        ["seed", str(run["seed"])],
        ["command", run["command"]],
        ["versions", ", ".join(f"{k} {v}" for k, v in run["versions"].items() if k != "platform")],
        ["durations (s)", ", ".join(f"{k} {v}" for k, v in run["durations_s"].items())],
    ]
    return ["", ""], rows


def _sections(run: Mapping[str, Any], metrics: Mapping[str, Any]) -> list[tuple[str, list[Table | str]]]:
    op = metrics["operating_threshold"]
    test = metrics.get("test")
    parts: list[tuple[str, list[Table | str]]] = []
    if test:
        parts.append(
            (
                "Held-out test split",
                [
                    f"{test['n']} images ({test['n_malignant']} malignant), never used for training, "
                    f"checkpoint or threshold choice. Threshold {op['value']:.4f} ({op['rule']}), "
                    "chosen on the validation split.",
                    metric_table(test),
                    per_class_table(test),
                    confusion_table(test),
                ],
            )
        )
        if "differential" in test:
            parts.append(("Cell types (held-out test split)", differential_blocks(test, metrics)))
    else:
        parts.append(("Held-out test split", [metrics.get("test_note", "no test split")]))
    parts.append(
        (
            "Thresholds (chosen on validation, applied unchanged to test)",
            [threshold_table(metrics["thresholds"], op["rule"], metrics.get("test_at"))],
        )
    )
    if metrics.get("robustness"):
        parts.append(("Robustness (perturbed test images)", robustness_blocks(metrics["robustness"])))
    parts.append(("Validation split", [metric_table(metrics["val"])]))
    parts.append(("Run", [_run_facts(run)]))
    return parts


def differential_blocks(test: Mapping[str, Any], metrics: Mapping[str, Any]) -> list[Table | str]:
    """The differential's per-type table, its confusion matrix and the abstention figures."""
    from leukoedge.train.differential import confusion_rows, type_table

    diff = test["differential"]
    blocks: list[Table | str] = [
        f"Balanced accuracy of the differential {fmt(diff['balanced_accuracy'])} (mean recall over the "
        "types present). Per type: the share recognised as that type, and the blast decision at the "
        "operating threshold on p_blast (sensitivity for blasts, specificity for every other type), "
        "with Wilson 95 % intervals.",
        type_table(test),
        confusion_rows(test),
    ]
    abstention = metrics.get("abstention")
    shares = diff.get("unclassified")
    if abstention and shares:
        rows = [[k, str(v["n"]), fmt(v["rate"])] for k, v in shares.items()]
        blocks += [
            f"Abstention: min_confidence {fmt(abstention['min_confidence'])} ({abstention['rule']}).",
            (["cells", "images", "share unclassified"], rows),
        ]
    return blocks


def robustness_blocks(result: Mapping[str, Any]) -> list[Table | str]:
    """The perturbation table: blast sensitivity / mean specificity per family and strength."""
    from leukoedge.train.robustness import __doc__ as how

    rows = [
        [family, fmt(r["strength"], 2), fmt(r["sensitivity"], 3), fmt(r["specificity"], 3)]
        for family, family_rows in result["families"].items()
        for r in family_rows
    ]
    intro = (how or "").split("\n\n")[0].replace("\n", " ")
    return [
        intro + " See robustness.png.",
        (["family", "strength", "blast sensitivity", "mean specificity"], rows),
    ]


def _citation(run: Mapping[str, Any]) -> list[str]:
    return list(run.get("citation") or [])


def render_markdown(
    title: str,
    sections: list[tuple[str, list[Table | str]]],
    images: Mapping[str, Path],
    citations: list[str],
) -> str:
    lines = [f"# {title}", "", f"> {hr.RESEARCH_USE_NOTICE}", ""]
    for heading, blocks in sections:
        lines += [f"## {heading}", ""]
        for block in blocks:
            lines.append(block + "\n" if isinstance(block, str) else md_table(block))
    if images:
        lines += ["## Plots", ""] + [f"![{name}]({path.name})" for name, path in images.items()] + [""]
    if citations:
        lines += ["## Data", ""] + [f"- {c}" for c in citations] + [""]
    return "\n".join(lines)


def render_html(
    title: str,
    sections: list[tuple[str, list[Table | str]]],
    images: Mapping[str, Path],
    citations: list[str],
) -> str:
    body = []
    for heading, blocks in sections:
        html = "".join(hr.paragraph(b) if isinstance(b, str) else html_table(b) for b in blocks)
        body.append((heading, html))
    if images:
        body.insert(1, ("Plots", hr.figures([(path, name) for name, path in images.items()])))
    if citations:
        body.append(("Data", "<ul>" + "".join(f"<li>{hr.escape(c)}</li>" for c in citations) + "</ul>"))
    return hr.html_page(title, body)


def write_train_outputs(
    out: Path,
    run: Mapping[str, Any],
    metrics: Mapping[str, Any],
    history: Sequence[Mapping[str, float]],
    scores: Mapping[str, Any],
) -> None:
    """Write every file of a training run except the model and the split manifest."""
    rf.write_history_csv(out / rf.HISTORY_FILE, history)
    rf.write_json(out / rf.METRICS_FILE, metrics)
    rf.write_json(out / rf.RUN_FILE, run)
    images = _save_plots(out, history, run["model"]["best_epoch"], scores, metrics)
    sections = _sections(run, metrics)
    title = "LeukoNet training run"
    (out / rf.REPORT_MD).write_text(
        render_markdown(title, sections, images, _citation(run)), encoding="utf-8"
    )
    (out / rf.REPORT_HTML).write_text(render_html(title, sections, images, _citation(run)), encoding="utf-8")
