"""What a session's counts mean: blast percentage, the differential by cell type, their uncertainty.

One place computes these so the CLI, the export, the HTTP API and the live page agree to the digit.
The blast percentage comes with a Wilson score 95 % interval (honest at small counts and near 0 or
100 %, where the normal approximation is not). It is compared with the 20 % blast threshold the WHO
classification uses for acute myeloid leukaemia as *information*: a count from this instrument is
not a diagnosis.

The differential is the count of each cell type (the ``label`` of each counted cell: a type of a
differential model, ``malignant``/``non_malignant`` of a binary one) with its share of the classified
cells and a Wilson interval. Cells the model abstained on (label ``unclassified``) are counted and shown
apart: they are in neither the numerator nor the denominator of any percentage, so a cell the model
cannot judge is never silently a blast or a normal cell.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from leukoedge.contract import CLASS_NAMES, DIFFERENTIAL_CLASSES, UNCLASSIFIED
from leukoedge.metrics import wilson_interval

#: Cell types in the order they are shown; a type outside it follows, by name.
TYPE_ORDER: tuple[str, ...] = (*DIFFERENTIAL_CLASSES, *reversed(CLASS_NAMES))

#: The WHO classification's blast threshold for AML (blasts in blood or marrow), in percent.
WHO_BLAST_THRESHOLD_PCT = 20.0
#: A manual differential counts 100 cells at least, 200 when blasts are near a threshold.
DIFFERENTIAL_MINIMUM = 100
DIFFERENTIAL_TARGET = 200

WHO_NOTE = (
    "The WHO classification uses 20 % blasts in blood or marrow as one criterion for AML. "
    "This comparison is research information, not a diagnosis."
)


#: How each comparison reads in reports.
COMPARISON_TEXT = {
    "above": "above the WHO 20 % threshold (the whole 95 % CI)",
    "below": "below the WHO 20 % threshold (the whole 95 % CI)",
    "inconclusive": "the 95 % CI spans the WHO 20 % threshold",
    "no cells": "no cells counted yet",
}


def who_comparison(blasts: int, cells: int) -> str:
    """'above', 'below' or 'inconclusive' (the 95 % interval spans 20 %), or 'no cells'."""
    if cells <= 0:
        return "no cells"
    lo, hi = wilson_interval(blasts, cells)
    threshold = WHO_BLAST_THRESHOLD_PCT / 100
    if lo >= threshold:
        return "above"
    if hi < threshold:
        return "below"
    return "inconclusive"


def differential_progress(cells: int) -> dict[str, Any]:
    """How far a 100-200 cell differential is: counts, fraction of the target, and a status word."""
    if cells >= DIFFERENTIAL_TARGET:
        status = "complete"
    elif cells >= DIFFERENTIAL_MINIMUM:
        status = "minimum reached"
    else:
        status = "collecting"
    return {
        "counted": cells,
        "minimum": DIFFERENTIAL_MINIMUM,
        "target": DIFFERENTIAL_TARGET,
        "progress": min(1.0, cells / DIFFERENTIAL_TARGET),
        "status": status,
    }


def share(count: int, total: int) -> dict[str, Any]:
    """``count`` of ``total`` as a percentage with its Wilson 95 % interval (both None when total is 0)."""
    lo, hi = wilson_interval(count, total)
    return {
        "count": count,
        "pct": 100.0 * count / total if total else None,
        "ci95_pct": [100.0 * lo, 100.0 * hi] if total else None,
    }


def type_order_key(name: str) -> tuple[int, str]:
    """Sort key that shows cell types in :data:`TYPE_ORDER`, unknown ones after them by name."""
    return (TYPE_ORDER.index(name) if name in TYPE_ORDER else len(TYPE_ORDER), name)


def cell_type_counts(by_type: Mapping[str, int]) -> dict[str, Any]:
    """The differential: each cell type's count and % of the classified cells, unclassified apart.

    ``by_type`` maps each counted cell's label to its count (types with no cells may be left out).
    """
    unclassified = int(by_type.get(UNCLASSIFIED, 0))
    counts = {str(t): int(n) for t, n in by_type.items() if t != UNCLASSIFIED and int(n) > 0}
    classified = sum(counts.values())
    total = classified + unclassified
    return {
        "classified": classified,
        "types": [{"type": t, **share(counts[t], classified)} for t in sorted(counts, key=type_order_key)],
        "unclassified": share(unclassified, total),
    }


def blast_summary(blasts: int, cells: int, by_type: Mapping[str, int] | None = None) -> dict[str, Any]:
    """The tallies with blast % (None without cells), its 95 % CI in percent, the WHO comparison and,
    given each label's count, the differential by cell type (``cell_types``).

    Cells labelled :data:`UNCLASSIFIED` stay in ``cells`` but out of the blast percentage.
    """
    types = cell_type_counts(by_type if by_type is not None else {})
    judged = cells - types["unclassified"]["count"]
    lo, hi = wilson_interval(blasts, judged)
    return {
        "cells": cells,
        "blasts": blasts,
        "non_blasts": judged - blasts,
        "unclassified": types["unclassified"]["count"],
        "blast_pct": 100.0 * blasts / judged if judged else None,
        "blast_ci95_pct": [100.0 * lo, 100.0 * hi] if judged else None,
        "who_threshold_pct": WHO_BLAST_THRESHOLD_PCT,
        "who_comparison": who_comparison(blasts, judged),
        "who_note": WHO_NOTE,
        "differential": differential_progress(cells),
        "cell_types": types,
    }


def describe(summary: dict[str, Any]) -> str:
    """One line for people: '37 cells, 9 suspected blasts: 24.3 % (95 % CI 13.4-40.1 %), ...'."""
    cells, blasts = summary["cells"], summary["blasts"]
    if not cells:
        return "no cells counted yet"
    if summary["blast_pct"] is None:
        return f"{cells} cells, all unclassified"
    lo, hi = summary["blast_ci95_pct"]
    comparison = COMPARISON_TEXT[summary["who_comparison"]]
    diff = summary["differential"]
    unclassified = summary.get("unclassified", 0)
    apart = f" ({unclassified} unclassified, not in the %)" if unclassified else ""
    return (
        f"{cells} cells{apart}, {blasts} suspected blasts: {summary['blast_pct']:.1f} % "
        f"(95 % CI {lo:.1f}-{hi:.1f} %), {comparison}; differential {diff['status']} "
        f"({cells}/{diff['target']})"
    )


def describe_types(summary: dict[str, Any]) -> str:
    """The differential in one line: 'lymphocyte 12 (32.4 %), neutrophil 20 (54.1 %), ...'."""
    types = summary.get("cell_types") or {}
    parts = [f"{t['type']} {t['count']} ({t['pct']:.1f} %)" for t in types.get("types", [])]
    unclassified = (types.get("unclassified") or {}).get("count", 0)
    if unclassified:
        parts.append(f"unclassified {unclassified} (apart)")
    return ", ".join(parts) or "no cells counted yet"
