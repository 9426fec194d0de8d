"""report.md and a self-contained report.html (plots and thumbnails embedded as data URIs)."""

from __future__ import annotations

import html
import io
from typing import Any

import numpy as np
from PIL import Image

from leukoedge.quantize import differential, plots
from leukoedge.quantize.evaluate_variants import EvalSet
from leukoedge.report import png_data_uri, render_page, table

METRIC_ROWS = (
    "accuracy",
    "sensitivity",
    "specificity",
    "precision",
    "f1",
    "balanced_accuracy",
    "roc_auc",
    "pr_auc",
    "brier",
    "ece",
)
MAX_THUMBNAILS = 60


def _f(value: Any, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _metric_table(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    models = report["models"]
    header = ["metric", *models]
    rows = []
    for key in METRIC_ROWS:
        row = [key]
        for m in models.values():
            lo, hi = (m.get("ci95", {}).get(key) or [None, None])[:2]
            ci = f" [{_f(lo, 3)}, {_f(hi, 3)}]" if lo is not None else ""
            row.append(_f(m.get(key)) + ci)
        rows.append(row)
    return header, rows


def _summary_lines(report: dict[str, Any]) -> list[str]:
    h = report["headline"]
    gates = report["gates"]
    lines = [
        f"Held-out images: {report['eval_set']['n']} ({report['eval_set']['description']}); "
        f"threshold {report['threshold']:.6f}; reference {h['reference']}.",
        f"int8 vs float: agreement {h['agreement']:.4f}, ΔAUC {h['delta_auc']:+.4f}, "
        f"sensitivity drop {h['sensitivity_drop']:+.4f}, "
        f"blasts lost to quantization {h['missed_blasts_vs_float']}.",
        f"int8 size {h['int8_bytes']:,} bytes ({_f(h['int8_size_ratio'], 3)} of float32).",
        "Gates: "
        + ("PASSED" if gates["passed"] else "FAILED")
        + " ("
        + "; ".join(
            f"{c['name']} {c['value']:+.4f} {'ok' if c['passed'] else 'FAILED'}: {c['rule']}"
            for c in gates["checks"]
        )
        + ").",
    ]
    diff = report.get("differential")
    if diff:
        lines.append(differential.summary_line(diff["comparisons"]["tflite_int8"]))
    stab = report.get("calibration_stability")
    if stab:
        d = stab["delta"]
        lines.append(
            f"Calibration stability (seeds {stab['seeds']}): ΔAUC {d['roc_auc']:+.4f}, Δsensitivity "
            f"{d['sensitivity']:+.4f}, Δspecificity {d['specificity']:+.4f}, "
            f"agreement {stab['agreement']:.4f}."
        )
    return lines


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def _size_rows(report: dict[str, Any]) -> list[list[str]]:
    rows = []
    for name, size in report["sizes"].items():
        lat = report["latency"].get(name, {})
        rows.append(
            [
                name,
                f"{size['bytes']:,}",
                _f(size["ratio_to_float32"], 3),
                _f(lat.get("single_ms_median"), 3),
                _f(lat.get("batch32_ms_per_crop_median"), 3),
            ]
        )
    return rows


SIZE_HEADER = ["variant", "bytes", "ratio to float32", "ms per crop (single)", "ms per crop (batch 32)"]


def _flip_rows(report: dict[str, Any]) -> list[list[str]]:
    rows = []
    for name, cmp in report["comparisons"].items():
        for true_label, f in cmp["flips"].items():
            rows.append(
                [name, true_label, str(f["malignant_to_non_malignant"]), str(f["non_malignant_to_malignant"])]
            )
    return rows


FLIP_HEADER = ["model", "true label", "float malignant -> non-malignant", "float non-malignant -> malignant"]


def _differential_tables(report: dict[str, Any]) -> list[tuple[str, tuple[list[str], list[list[str]]]]]:
    """Per cell type, int8 vs the float reference (a differential bundle only)."""
    diff = report.get("differential")
    if not diff:
        return []
    cmp = diff["comparisons"]["tflite_int8"]
    return [
        ("Per cell type: int8 vs float (95 % Wilson intervals)", differential.class_rows(cmp)),
        ("Cell type: float (rows) vs int8 (columns)", differential.confusion_rows(cmp)),
    ]


def render_markdown(report: dict[str, Any]) -> str:
    parts = [
        f"# Quantization report: {report['bundle']['name']} {report['bundle']['version']}",
        "",
        f"*{report['notice']}*",
        "",
    ]
    parts += [f"- {line}" for line in _summary_lines(report)]
    parts += ["", "## Metrics (95 % bootstrap intervals)", "", _md_table(*_metric_table(report))]
    for title, (header, rows) in _differential_tables(report):
        parts += ["", f"## {title}", "", _md_table(header, rows)]
    parts += ["", "## Decision flips vs the reference", "", _md_table(FLIP_HEADER, _flip_rows(report))]
    dp_rows = [
        [k, _f(c["abs_dp"]["mean"], 5), _f(c["abs_dp"]["p99"], 5), _f(c["abs_dp"]["max"], 5)]
        for k, c in report["comparisons"].items()
    ]
    parts += ["", "## |Δp| vs the reference", "", _md_table(["model", "mean", "p99", "max"], dp_rows)]
    parts += [
        "",
        "## Size and latency (measured on the host, not the Pi)",
        "",
        _md_table(SIZE_HEADER, _size_rows(report)),
    ]
    layers = report["layers"]
    if layers.get("layers"):
        rows = [
            [r["layer"], r["op"], _f(r["rmse_over_scale"], 3), "yes" if r["flagged"] else ""]
            for r in layers["layers"]
        ]
        parts += [
            "",
            "## Per-layer error (rmse/scale; ~0.29 ideal, > 0.7 suspect)",
            "",
            _md_table(["layer", "op", "rmse/scale", "flagged"], rows),
        ]
    return "\n".join(parts) + "\n"


def _thumb(crop: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(crop).resize((96, 96), Image.Resampling.NEAREST).save(buf, format="PNG")
    return png_data_uri(buf.getvalue())


def _figures(
    report: dict[str, Any], probs: dict[str, np.ndarray], eval_set: EvalSet
) -> list[tuple[str, bytes]]:
    aucs = {k: report["models"][k]["roc_auc"] or float("nan") for k in probs}
    figs = [
        ("ROC curves", plots.roc_plot(eval_set.y, probs, aucs)),
        ("Reliability diagram", plots.reliability_plot(eval_set.y, probs)),
        ("Confusion matrices at the bundle threshold", plots.confusion_plots(report["models"])),
        (
            "|Δp| int8 vs float",
            plots.dp_histogram(report["comparisons"]["tflite_int8"]["abs_dp"]["histogram"], "int8"),
        ),
    ]
    layers = report["layers"]
    if layers.get("layers"):
        figs.append(
            (
                "Per-layer error",
                plots.layer_error_plot(
                    layers["layers"], layers["ideal_rmse_over_scale"], layers["suspect_above"]
                ),
            )
        )
    return figs


def _flipped_gallery(report: dict[str, Any], probs: dict[str, np.ndarray], eval_set: EvalSet) -> str:
    ref = report["reference"]
    idx = report["comparisons"]["tflite_int8"]["flipped_indices"][:MAX_THUMBNAILS]
    if not idx:
        return "<p>No image changed its label between the float and int8 models.</p>"
    cells = []
    for i in idx:
        true = "malignant" if eval_set.y[i] else "non-malignant"
        caption = (
            f"true {true}<br>float p={probs[ref][i]:.3f}<br>int8 p={probs['tflite_int8'][i]:.3f}"
            f"<br><small>{html.escape(eval_set.paths[i].rsplit('/', 1)[-1])}</small>"
        )
        missed = " missed" if eval_set.y[i] and probs["tflite_int8"][i] < report["threshold"] else ""
        cells.append(
            f'<figure class="thumb{missed}"><img src="{_thumb(eval_set.x[i])}" alt="flipped cell">'
            f"<figcaption>{caption}</figcaption></figure>"
        )
    total = len(report["comparisons"]["tflite_int8"]["flipped_indices"])
    shown = f"<p>Showing {len(idx)} of {total} images.</p>" if total > len(idx) else ""
    return shown + '<div class="gallery">' + "".join(cells) + "</div>"


#: What only this page draws; the rest is the report room's shared look.
STYLE = """table{font-size:.85em}
.fail{color:#b00;font-weight:bold}.pass{color:#070;font-weight:bold}
.gallery{display:flex;flex-wrap:wrap;gap:6px}
.thumb{margin:0;font-size:.7em;text-align:center;border:2px solid #ccc;padding:2px}
.thumb.missed{border-color:#c00}
img.plot{max-width:100%;margin:.5em 0}"""


def render_html(report: dict[str, Any], probs: dict[str, np.ndarray], eval_set: EvalSet) -> str:
    title = f"Quantization report: {report['bundle']['name']} {report['bundle']['version']}"
    verdict = (
        '<span class="pass">PASSED</span>'
        if report["gates"]["passed"]
        else '<span class="fail">FAILED</span>'
    )
    body = [
        f"<p>Gates: {verdict}</p><ul>"
        + "".join(f"<li>{html.escape(s)}</li>" for s in _summary_lines(report))
        + "</ul>",
        "<h2>Metrics (95 % bootstrap intervals)</h2>",
        table(*_metric_table(report)),
        *(f"<h2>{html.escape(t)}</h2>" + table(*rows) for t, rows in _differential_tables(report)),
        "<h2>Decision flips vs the reference</h2>",
        "<p>A malignant-to-non-malignant flip on a truly malignant cell is a blast the int8 model misses "
        "that the float model found: the costliest kind (red frames below).</p>",
        table(FLIP_HEADER, _flip_rows(report)),
        "<h2>Size and latency</h2><p>Latency measured on the host, not the Pi (one thread).</p>",
        table(SIZE_HEADER, _size_rows(report)),
    ]
    for caption, png in _figures(report, probs, eval_set):
        body.append(
            f"<h2>{html.escape(caption)}</h2>"
            f'<img class="plot" src="{png_data_uri(png)}" alt="{html.escape(caption)}">'
        )
    layers = report["layers"]
    if layers.get("layers"):
        rows = [
            [
                r["layer"],
                r["op"],
                _f(r["rmse_over_scale"], 3),
                _f(r["scale"], 6),
                "yes" if r["flagged"] else "",
            ]
            for r in layers["layers"]
        ]
        body += [
            "<h2>Per-layer error table</h2>",
            table(["layer", "op", "rmse/scale", "scale", "flagged"], rows),
        ]
    body += ["<h2>Images whose label changed (float vs int8)</h2>", _flipped_gallery(report, probs, eval_set)]
    return render_page(title, "".join(body), css=STYLE)
