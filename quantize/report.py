"""The quantization accuracy report: Keras float vs TFLite float32, float16 and int8 on held-out images.

``report.json`` keys (stable; new keys may be added, these keep their meaning):

* ``format`` ("leukoedge-quantization-report"), ``version`` (1), ``created_utc``, ``notice``
* ``bundle``: ``dir``, ``name``, ``version``, ``int8_sha256``
* ``eval_set``: ``description``, ``n``, ``class_counts``, ``unreadable``, ``disjoint_from``
* ``threshold``: the bundle's (snapped) operating threshold every model is judged at
* ``reference``: the model the others are compared with (``keras_float``, or ``tflite_float32``)
* ``models``: per model (``keras_float``, ``tflite_float32``, ``tflite_float16``, ``tflite_int8``, and
  extra int8 variants): ``accuracy``, ``sensitivity``, ``specificity``, ``precision``, ``f1``,
  ``balanced_accuracy``, ``roc_auc``, ``pr_auc``, ``brier``, ``ece``, ``confusion`` {tp, fp, tn, fn},
  ``ci95`` {metric: [lo, hi]}
* ``comparisons``: per TFLite model vs the reference: ``agreement``, ``n_flips``, ``flips``
  {true_malignant|true_non_malignant: {malignant_to_non_malignant, non_malignant_to_malignant}},
  ``missed_blasts``, ``abs_dp`` {mean, p99, max, histogram}, ``flipped_indices``
* ``calibration_stability``: ``seeds``, ``delta`` {roc_auc, sensitivity, specificity}, ``agreement``
  (between the two int8 models)
* ``layers``: QuantizationDebugger rows (``layer``, ``op``, ``rmse_over_scale``, ``flagged`` ...), ``flagged``
* ``selective``: the variant keeping flagged layers in float (when any were flagged)
* ``sizes``: per variant ``bytes`` and ``ratio_to_float32``
* ``latency``: per variant ``single_ms_median``, ``batch32_ms_per_crop_median``, ``runtime``, ``where``
* ``gates``: ``passed`` and ``checks`` [{name, value, limit, passed, rule}]
* ``headline``: agreement, delta_auc, sensitivity_drop, int8 auc/sensitivity/specificity, size ratio

A differential (softmax) bundle is judged on p_blast (the sum over its blast classes) in every key
above, with "malignant" meaning "a blast class"; ``eval_set.class_counts`` counts cell types, and
``differential`` adds per cell type (:mod:`leukoedge.quantize.differential`): ``classes``,
``blast_classes`` and ``comparisons`` per TFLite model vs the reference (``agreement``,
``type_agreement``, ``blast_agreement``, ``confusion``, ``per_class`` {n, agreement, recall_float,
recall_int8, recall_change, called_blast_float, called_blast_int8, called_blast_change ...},
``not_in_eval_set``); the gates add agreement overall and per cell type and the blast recall drop
per blast class; ``headline.differential`` the overall and per-class agreement.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from leukoedge import RESEARCH_USE_NOTICE
from leukoedge.errors import BundleError
from leukoedge.inference.bundle import BUNDLE_KIND, ModelBundle, load_bundle
from leukoedge.quantize import evaluate_variants as ev
from leukoedge.quantize.differential import compare_types, gate_checks
from leukoedge.quantize.differential import headline as differential_headline

logger = logging.getLogger(__name__)

REPORT_FORMAT = "leukoedge-quantization-report"
#: Exit status of ``quantize`` and ``report`` when a gate fails.
GATE_EXIT_CODE = 3
SUMMARY_KEYS = ("accuracy", "sensitivity", "specificity", "roc_auc", "pr_auc", "brier", "ece")


@dataclass(frozen=True)
class Gates:
    """Limits the int8 model must meet against the float reference."""

    agreement: float = 0.99
    delta_auc: float = 0.01
    sensitivity_drop: float = 0.01

    def check(self, ref: dict[str, Any], int8: dict[str, Any], comparison: dict[str, Any]) -> dict[str, Any]:
        d_auc = int8["roc_auc"] - ref["roc_auc"]
        drop = ref["sensitivity"] - int8["sensitivity"]
        checks = [
            _gate(
                "agreement",
                comparison["agreement"],
                self.agreement,
                comparison["agreement"] >= self.agreement,
                f"top-1 agreement with float >= {self.agreement}",
            ),
            _gate(
                "delta_auc",
                d_auc,
                self.delta_auc,
                abs(d_auc) <= self.delta_auc,
                f"|int8 AUC - float AUC| <= {self.delta_auc}",
            ),
            _gate(
                "sensitivity_drop",
                drop,
                self.sensitivity_drop,
                drop <= self.sensitivity_drop + 1e-12,
                f"float sensitivity - int8 sensitivity <= {self.sensitivity_drop}",
            ),
        ]
        return {"passed": all(c["passed"] for c in checks), "checks": checks}


def _gate(name: str, value: float, limit: float, passed: bool, rule: str) -> dict[str, Any]:
    return {"name": name, "value": float(value), "limit": float(limit), "passed": bool(passed), "rule": rule}


def failed_gates(report: dict[str, Any]) -> list[str]:
    return [c["name"] for c in report["gates"]["checks"] if not c["passed"]]


def find_variants(path: str | Path) -> dict[str, ModelBundle]:
    """The int8 bundle at ``path`` (folder or manifest) and its float32/float16 siblings."""
    int8 = load_bundle(path)
    if int8.variant != "int8":
        raise BundleError(
            f"{int8.manifest_path}: variant {int8.variant!r}; the report starts from the int8 bundle"
        )
    out = {"int8": int8}
    for manifest in sorted(int8.manifest_path.parent.glob("*.json")):
        if manifest == int8.manifest_path:
            continue
        try:
            doc = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(doc, dict) or doc.get("kind") != BUNDLE_KIND:
            continue
        model = doc.get("model", {})
        if model.get("name") == int8.name and model.get("variant") in ("float32", "float16"):
            out[model["variant"]] = load_bundle(manifest)
    return out


def build_report(
    bundles: dict[str, ModelBundle],
    eval_set: ev.EvalSet,
    *,
    keras_model: Any | None = None,
    extra: dict[str, ModelBundle] | None = None,
    layers: dict[str, Any] | None = None,
    calibration: dict[str, Any] | None = None,
    gates: Gates | None = None,
    n_boot: int = 1000,
    latency_repeats: int = 100,
    runtime: str | None = None,
    seed: int = 0,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Evaluate every model on ``eval_set``; returns the report and each model's probabilities."""
    gates = gates or Gates()
    int8 = bundles["int8"]
    threshold = int8.threshold
    tflite = {f"tflite_{v}": b for v, b in bundles.items()} | {
        f"tflite_{k}": b for k, b in (extra or {}).items()
    }
    probs, reference = _predict_all(int8, tflite, eval_set, keras_model, runtime)
    type_probs = {}
    if probs[reference].ndim == 2:  # a differential bundle: judge p_blast here, the types below
        type_probs = probs
        probs = {k: np.asarray(int8.contract.p_blast(p), np.float64) for k, p in type_probs.items()}
    y = eval_set.y
    models = {k: ev.model_metrics(y, p, threshold, n_boot, seed) for k, p in probs.items()}
    comparisons = {
        k: ev.compare(y, probs[reference], p, threshold) for k, p in probs.items() if k != reference
    }
    report: dict[str, Any] = {
        **_header(int8, eval_set),
        "threshold": threshold,
        "reference": reference,
        "models": models,
        "comparisons": comparisons,
        "calibration": calibration,
        "layers": layers or {"available": False, "layers": [], "flagged": []},
        "sizes": _sizes({k.removeprefix("tflite_"): b for k, b in tflite.items()}),
        "latency": {
            k.removeprefix("tflite_"): ev.measure_latency(b, eval_set.x, latency_repeats, runtime)
            for k, b in tflite.items()
            if k.removeprefix("tflite_") in bundles
        },
    }
    if "tflite_int8_seed2" in probs:
        report["calibration_stability"] = _stability(models, probs, threshold, calibration)
    if "tflite_int8_selective" in probs:
        report["selective"] = _selective(report)
    report["gates"] = gates.check(models[reference], models["tflite_int8"], comparisons["tflite_int8"])
    if type_probs:
        _add_differential(report, type_probs, eval_set, int8, gates)
    report["headline"] = _headline(report)
    return report, probs


def _add_differential(
    report: dict[str, Any],
    type_probs: dict[str, np.ndarray],
    eval_set: ev.EvalSet,
    int8: ModelBundle,
    gates: Gates,
) -> None:
    """The per-cell-type comparison of a differential bundle, and its gates added to the others."""
    contract = int8.contract
    ref = report["reference"]
    names = list(contract.class_names)
    comparisons = {
        k: compare_types(
            eval_set.types, names, contract.suspect_classes, type_probs[ref], p, report["threshold"]
        )
        for k, p in type_probs.items()
        if k != ref
    }
    report["differential"] = {
        "classes": names,
        "blast_classes": list(contract.suspect_classes),
        "comparisons": comparisons,
        "predicted_types": {k: [names[i] for i in p.argmax(axis=1)] for k, p in type_probs.items()},
    }
    checks = report["gates"]["checks"] + gate_checks(
        comparisons["tflite_int8"], gates.agreement, gates.sensitivity_drop
    )
    report["gates"] = {"passed": all(c["passed"] for c in checks), "checks": checks}


def _predict_all(
    int8: ModelBundle,
    tflite: dict[str, ModelBundle],
    eval_set: ev.EvalSet,
    keras_model: Any | None,
    runtime: str | None,
) -> tuple[dict[str, np.ndarray], str]:
    """Every model's probabilities, and the name of the float model the others are judged against."""
    probs: dict[str, np.ndarray] = {}
    if keras_model is not None:
        probs["keras_float"] = ev.predict_keras(keras_model, eval_set.x, int8.contract)
    for key, bundle in tflite.items():
        probs[key] = ev.predict_bundle(bundle, eval_set.x, runtime)
    reference = "keras_float" if "keras_float" in probs else "tflite_float32"
    if reference not in probs:
        raise BundleError(
            f"{int8.manifest_path.parent}: no float32 bundle and no Keras model to compare with"
        )
    return probs, reference


def _header(int8: ModelBundle, eval_set: ev.EvalSet) -> dict[str, Any]:
    y = eval_set.y
    return {
        "format": REPORT_FORMAT,
        "version": 1,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "notice": RESEARCH_USE_NOTICE,
        "bundle": {
            "dir": str(int8.manifest_path.parent),
            "name": int8.name,
            "version": int8.manifest.model.version,
            "int8_sha256": int8.sha256,
        },
        "eval_set": {
            "description": eval_set.description,
            "n": int(len(y)),
            "class_counts": _class_counts(eval_set),
            "unreadable": [{"path": p, "error": e} for p, e in eval_set.errors],
            "disjoint_from": ["calibration", "training"],
        },
    }


def _class_counts(eval_set: ev.EvalSet) -> dict[str, int]:
    """Images per class: malignant/non_malignant, or per cell type for a differential model."""
    y = eval_set.y
    if eval_set.types is None or eval_set.class_names is None:
        return {"malignant": int(y.sum()), "non_malignant": int(len(y) - y.sum())}
    counts = np.bincount(eval_set.types, minlength=len(eval_set.class_names))
    return {name: int(n) for name, n in zip(eval_set.class_names, counts, strict=True)}


def _selective(report: dict[str, Any]) -> dict[str, Any]:
    """The variant that keeps the flagged layers in float, against the plain int8 model."""
    metrics = report["models"]["tflite_int8_selective"]
    return {
        "flagged": report["layers"].get("flagged", []),
        "metrics": {k: metrics[k] for k in SUMMARY_KEYS},
        "agreement": report["comparisons"]["tflite_int8_selective"]["agreement"],
        "bytes": report["sizes"]["int8_selective"]["bytes"],
    }


def _sizes(bundles: dict[str, ModelBundle]) -> dict[str, dict[str, Any]]:
    sizes = {k: ev.file_size(b) for k, b in bundles.items()}
    base = sizes.get("float32")
    return {k: {"bytes": n, "ratio_to_float32": (n / base) if base else None} for k, n in sizes.items()}


def _stability(models: dict, probs: dict, threshold: float, calibration: dict | None) -> dict[str, Any]:
    a, b = models["tflite_int8"], models["tflite_int8_seed2"]
    same = np.mean((probs["tflite_int8"] >= threshold) == (probs["tflite_int8_seed2"] >= threshold))
    return {
        "seeds": (calibration or {}).get("stability_seeds"),
        "seed2": {k: b[k] for k in ("roc_auc", "sensitivity", "specificity", "accuracy")},
        "delta": {k: float(b[k] - a[k]) for k in ("roc_auc", "sensitivity", "specificity", "accuracy")},
        "agreement": float(same),
        "max_abs_dp": float(np.max(np.abs(probs["tflite_int8"] - probs["tflite_int8_seed2"]))),
    }


def _headline(report: dict[str, Any]) -> dict[str, Any]:
    ref = report["models"][report["reference"]]
    q = report["models"]["tflite_int8"]
    cmp = report["comparisons"]["tflite_int8"]
    d = report.get("differential")
    return {
        "reference": report["reference"],
        "n_eval": report["eval_set"]["n"],
        "agreement": cmp["agreement"],
        "missed_blasts_vs_float": cmp["missed_blasts"],
        "delta_auc": q["roc_auc"] - ref["roc_auc"],
        "sensitivity_drop": ref["sensitivity"] - q["sensitivity"],
        "int8_accuracy": q["accuracy"],
        "int8_roc_auc": q["roc_auc"],
        "int8_sensitivity": q["sensitivity"],
        "int8_specificity": q["specificity"],
        "float_roc_auc": ref["roc_auc"],
        "int8_size_ratio": report["sizes"]["int8"]["ratio_to_float32"],
        "int8_bytes": report["sizes"]["int8"]["bytes"],
        "gates_passed": report["gates"]["passed"],
    } | ({"differential": differential_headline(d["comparisons"]["tflite_int8"])} if d else {})


def _clean(obj: Any) -> Any:
    """JSON-safe: NaN/inf become null, numpy scalars and tuples become Python values."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_report(
    report: dict[str, Any], probs: dict[str, np.ndarray], eval_set: ev.EvalSet, out_dir: str | Path
) -> dict[str, Path]:
    """Write report.json, report.md, the self-contained report.html and predictions.csv into ``out_dir``.

    predictions.csv has one row per held-out image: path, true label (1 = malignant) and each
    model's p(malignant), so any figure in the report can be recomputed independently.
    """
    from leukoedge.quantize.report_html import render_html, render_markdown

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {k: out / f"report.{k}" for k in ("json", "md", "html")} | {"csv": out / "predictions.csv"}
    types = (report.get("differential") or {}).get("predicted_types") or {}
    if types:  # per-image rows belong in predictions.csv, not in report.json
        report = {
            **report,
            "differential": {k: v for k, v in report["differential"].items() if k != "predicted_types"},
        }
    clean = _clean(report)
    paths["json"].write_text(json.dumps(clean, indent=2) + "\n", encoding="utf-8")
    paths["md"].write_text(render_markdown(clean), encoding="utf-8")
    paths["html"].write_text(render_html(clean, probs, eval_set), encoding="utf-8")
    _write_predictions(paths["csv"], probs, eval_set, types)
    return paths


def _write_predictions(
    path: Path, probs: dict[str, np.ndarray], eval_set: ev.EvalSet, types: dict[str, list[str]]
) -> None:
    """One row per image; a differential model adds the true cell type and each model's type."""
    import csv

    names = list(probs)
    typed = list(types)
    true_types = (
        [eval_set.class_names[int(t)] for t in eval_set.types]
        if eval_set.types is not None and eval_set.class_names is not None and typed
        else None
    )
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        type_header = ["type_true", *(f"type_{n}" for n in typed)] if true_types else []
        writer.writerow(["path", "y_true", *names, *type_header])
        for i, p in enumerate(eval_set.paths):
            row = [p, int(eval_set.y[i]), *(f"{probs[n][i]:.8f}" for n in names)]
            if true_types:
                row += [true_types[i], *(types[n][i] for n in typed)]
            writer.writerow(row)
