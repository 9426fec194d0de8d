"""Float vs int8 per cell type, for a differential (softmax) bundle's quantization report.

A cell's result on the device is two decisions: its cell type (the most probable class) and
whether it is a suspected blast (p_blast, the sum over the blast classes, at the threshold). Two
models agree on a cell when both decisions are the same. Reported on held-out images, per true cell
type and overall, with Wilson 95 % intervals:

* ``confusion``: cell type from the float reference (rows) against the int8 model (columns);
* ``agreement`` (both decisions), ``type_agreement`` and ``blast_agreement``;
* per type the recall as that type and the share called a suspected blast, float and int8, and
  their change (for a blast class the called share is its recall, whose drop the gates bound).

The gates (see :class:`leukoedge.quantize.report.Gates`): agreement at least ``agreement`` overall
and for each cell type with held-out images, and a blast recall drop of at most ``sensitivity_drop``
for each blast class.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from leukoedge.metrics import wilson_interval


def _share(hits: np.ndarray) -> dict[str, Any]:
    k, n = int(hits.sum()), int(hits.size)
    lo, hi = wilson_interval(k, n)
    return {"k": k, "n": n, "rate": k / n if n else None, "ci95": [lo, hi]}


def compare_types(
    types: np.ndarray,
    class_names: Sequence[str],
    blast_classes: Sequence[str],
    ref: np.ndarray,
    q: np.ndarray,
    threshold: float,
) -> dict[str, Any]:
    """Per-type comparison of two models' N x classes probabilities (``ref`` the float reference)."""
    blast_idx = [list(class_names).index(c) for c in blast_classes]
    types = np.asarray(types, dtype=np.int64)
    ref_type, q_type = ref.argmax(axis=1), q.argmax(axis=1)
    ref_blast = ref[:, blast_idx].sum(axis=1) >= threshold
    q_blast = q[:, blast_idx].sum(axis=1) >= threshold
    same_type, same_blast = ref_type == q_type, ref_blast == q_blast
    same = same_type & same_blast
    k = len(class_names)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (ref_type, q_type), 1)
    per_class: dict[str, Any] = {}
    for i, name in enumerate(class_names):
        sel = types == i
        row: dict[str, Any] = {
            "n": int(sel.sum()),
            "is_blast": i in blast_idx,
            "agreement": _share(same[sel]),
            "type_agreement": _share(same_type[sel]),
            "blast_agreement": _share(same_blast[sel]),
            "recall_float": _share(ref_type[sel] == i),
            "recall_int8": _share(q_type[sel] == i),
            "called_blast_float": _share(ref_blast[sel]),
            "called_blast_int8": _share(q_blast[sel]),
        }
        row["recall_change"] = _change(row["recall_float"], row["recall_int8"])
        row["called_blast_change"] = _change(row["called_blast_float"], row["called_blast_int8"])
        per_class[name] = row
    true_blast = np.isin(types, blast_idx)
    return {
        "classes": list(class_names),
        "blast_classes": list(blast_classes),
        "threshold": float(threshold),
        "n": int(len(types)),
        "agreement": _share(same),
        "type_agreement": _share(same_type),
        "blast_agreement": _share(same_blast),
        "blast_recall_float": _share(ref_blast[true_blast]),
        "blast_recall_int8": _share(q_blast[true_blast]),
        "confusion": {"rows": "float reference type", "columns": "int8 type", "matrix": confusion.tolist()},
        "per_class": per_class,
        "not_in_eval_set": [n for n, r in per_class.items() if r["n"] == 0],
    }


def _change(before: dict[str, Any], after: dict[str, Any]) -> float | None:
    if before["rate"] is None or after["rate"] is None:
        return None
    return float(after["rate"] - before["rate"])


def gate_checks(cmp: dict[str, Any], agreement: float, recall_drop: float) -> list[dict[str, Any]]:
    """The per-class gates on :func:`compare_types`' result (cell types absent from it are skipped)."""

    def check(name: str, value: float, limit: float, passed: bool, rule: str) -> dict[str, Any]:
        return {
            "name": name,
            "value": float(value),
            "limit": float(limit),
            "passed": bool(passed),
            "rule": rule,
        }

    overall = cmp["agreement"]["rate"]
    checks = [
        check(
            "type_and_blast_agreement",
            overall,
            agreement,
            overall >= agreement,
            f"same cell type and same suspected-blast decision as float on >= {agreement} of cells",
        )
    ]
    for name, row in cmp["per_class"].items():
        if not row["n"]:
            continue
        rate = row["agreement"]["rate"]
        checks.append(
            check(
                f"agreement[{name}]",
                rate,
                agreement,
                rate >= agreement,
                f"same type and blast decision as float on >= {agreement} of {name} cells (n={row['n']})",
            )
        )
        if row["is_blast"]:
            drop = -(row["called_blast_change"] or 0.0)
            checks.append(
                check(
                    f"blast_recall_drop[{name}]",
                    drop,
                    recall_drop,
                    drop <= recall_drop + 1e-12,
                    f"float - int8 share of {name} cells called suspected blast <= {recall_drop}",
                )
            )
    return checks


def headline(cmp: dict[str, Any]) -> dict[str, Any]:
    """The figures a manifest carries: overall agreement and the worst cell type."""
    measured = {n: r["agreement"]["rate"] for n, r in cmp["per_class"].items() if r["n"]}
    worst = min(measured, key=lambda n: measured[n]) if measured else None
    return {
        "type_and_blast_agreement": cmp["agreement"]["rate"],
        "type_agreement": cmp["type_agreement"]["rate"],
        "per_class_agreement": measured,
        "lowest_class_agreement": {"class": worst, "agreement": measured[worst]} if worst else None,
    }


def _pct(r: dict[str, Any]) -> str:
    if r["rate"] is None:
        return "n/a"
    return f"{r['rate']:.4f} ({r['ci95'][0]:.3f}-{r['ci95'][1]:.3f})"


def _arrow(before: dict[str, Any], after: dict[str, Any]) -> str:
    x, y = before["rate"], after["rate"]
    return "n/a" if x is None or y is None else f"{x:.3f} → {y:.3f}"


def class_rows(cmp: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Per cell type: n, agreement, recall float -> int8, called blast float -> int8."""
    header = [
        "cell type",
        "n",
        "agreement (95 % CI)",
        "same type",
        "same blast decision",
        "recall float → int8",
        "called blast float → int8",
    ]
    rows = [
        [
            name + (" (blast)" if r["is_blast"] else ""),
            str(r["n"]),
            _pct(r["agreement"]),
            _pct(r["type_agreement"]),
            _pct(r["blast_agreement"]),
            _arrow(r["recall_float"], r["recall_int8"]),
            _arrow(r["called_blast_float"], r["called_blast_int8"]),
        ]
        for name, r in cmp["per_class"].items()
    ]
    return header, rows


def confusion_rows(cmp: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    names = cmp["classes"]
    matrix = cmp["confusion"]["matrix"]
    return ["float \\ int8", *names], [[n, *map(str, r)] for n, r in zip(names, matrix, strict=True)]


def summary_line(cmp: dict[str, Any]) -> str:
    head = headline(cmp)
    worst = head["lowest_class_agreement"]
    lowest = f"; lowest per class {worst['agreement']:.4f} ({worst['class']})" if worst else ""
    recall = f"{cmp['blast_recall_float']['rate']:.4f} → {cmp['blast_recall_int8']['rate']:.4f}"
    missing = f"; no held-out {', '.join(cmp['not_in_eval_set'])}" if cmp["not_in_eval_set"] else ""
    return (
        f"Per cell type (int8 vs float): same type and blast decision on {_pct(cmp['agreement'])} of cells, "
        f"same type {_pct(cmp['type_agreement'])}{lowest}; blast recall {recall}{missing}."
    )
