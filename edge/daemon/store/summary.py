"""What a session's counts mean: blast percentage, its uncertainty, and how far the differential is.

One place computes these so the CLI, the export, the HTTP API and the live page agree to the digit.
The blast percentage comes with a Wilson score 95 % interval (honest at small counts and near 0 or
100 %, where the normal approximation is not). It is compared with the 20 % blast threshold the WHO
classification uses for acute myeloid leukaemia as *information*: a count from this instrument is
not a diagnosis.
"""

from __future__ import annotations

from typing import Any

from leukoedge.metrics import wilson_interval

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


def blast_summary(blasts: int, cells: int) -> dict[str, Any]:
    """The tallies with blast % (None without cells), its 95 % CI in percent, and the WHO comparison."""
    lo, hi = wilson_interval(blasts, cells)
    return {
        "cells": cells,
        "blasts": blasts,
        "non_blasts": cells - blasts,
        "blast_pct": 100.0 * blasts / cells if cells else None,
        "blast_ci95_pct": [100.0 * lo, 100.0 * hi] if cells else None,
        "who_threshold_pct": WHO_BLAST_THRESHOLD_PCT,
        "who_comparison": who_comparison(blasts, cells),
        "who_note": WHO_NOTE,
        "differential": differential_progress(cells),
    }


def describe(summary: dict[str, Any]) -> str:
    """One line for people: '37 cells, 9 suspected blasts: 24.3 % (95 % CI 13.4-40.1 %), ...'."""
    cells, blasts = summary["cells"], summary["blasts"]
    if not cells:
        return "no cells counted yet"
    lo, hi = summary["blast_ci95_pct"]
    comparison = COMPARISON_TEXT[summary["who_comparison"]]
    diff = summary["differential"]
    return (
        f"{cells} cells, {blasts} suspected blasts: {summary['blast_pct']:.1f} % "
        f"(95 % CI {lo:.1f}-{hi:.1f} %), {comparison}; differential {diff['status']} "
        f"({cells}/{diff['target']})"
    )
