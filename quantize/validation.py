"""What a differential bundle's manifest says about its validation, and what it was not validated on.

The per-class figures come from the training run's metrics.json (the float model on the run's own
validation and test splits, Wilson 95 % intervals); quantization copies them, it does not measure
them again (the quantization report compares int8 with float on the test split). The limits are
what a reader of ``leukoedge models`` must know before trusting a count: the microscopes, image
resolutions and cell types the figures do not cover.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from leukoedge.contract import InputContract

logger = logging.getLogger(__name__)

#: Groups the LMU differential manifest gives thumbnail-sheet cells (see leukoedge.train.neardup).
THUMBNAIL_GROUP_PREFIX = "thumbs/"
#: A class with fewer test images than this gets a limit naming how few.
FEW_IMAGES = 30
BLAST_KEYS = ("sensitivity", "specificity", "roc_auc", "balanced_accuracy")


def _rate(block: Any) -> dict[str, Any] | None:
    if not isinstance(block, dict) or "rate" not in block:
        return None
    return {"k": block.get("k"), "n": block.get("n"), "rate": block.get("rate"), "ci95": block.get("ci95")}


def _split_figures(split: dict[str, Any]) -> dict[str, Any] | None:
    diff = split.get("differential") if isinstance(split, dict) else None
    if not isinstance(diff, dict) or not isinstance(diff.get("per_type"), dict):
        return None
    per_type = {}
    for name, row in diff["per_type"].items():
        per_type[name] = {
            "n": row.get("n"),
            "is_blast": row.get("is_blast"),
            "recall": _rate(row.get("recall")),
            "called_blast": _rate(row.get("called_blast")),
            **({"specificity": _rate(row["specificity"])} if "specificity" in row else {}),
        }
    ci = split.get("ci95") if isinstance(split.get("ci95"), dict) else {}
    blast = {k: split.get(k) for k in BLAST_KEYS if isinstance(split.get(k), int | float)}
    blast_ci = {k: ci[k] for k in BLAST_KEYS if k in ci}
    return {
        "n": sum(int(r.get("n") or 0) for r in per_type.values()),
        "balanced_accuracy": diff.get("balanced_accuracy"),
        "accuracy": diff.get("accuracy"),
        "blast_vs_rest": {**blast, **({"ci95": blast_ci} if blast_ci else {})},
        "per_type": per_type,
    }


def differential_validation(metrics: dict[str, Any]) -> dict[str, Any] | None:
    """Per-class figures of the float model on the run's validation and test splits, or None."""
    out: dict[str, Any] = {}
    for split in ("val", "test"):
        figures = _split_figures(metrics.get(split) or {})
        if figures is not None:
            out[split] = figures
    if not out:
        logger.warning("the run's metrics.json has no per-class (differential) figures to record")
        return None
    op = metrics.get("operating_threshold")
    rule = op.get("rule") if isinstance(op, dict) else None
    return {
        "source": "metrics.json of the training run (float model), Wilson 95 % intervals, at the "
        f"contract's threshold ({rule or 'as recorded'}, chosen on validation)",
        **out,
    }


def thumbnail_only_classes(records: Sequence[Any]) -> list[str]:
    """Cell types (or, within a type, source classes) whose images all come from thumbnail sheets.

    Thumbnails are lower resolution than the scans; a type whose images are all thumbnails is named
    alone, a type with some scanned images names its thumbnail-only source classes, e.g.
    ``blast (MOB)``.
    """
    by_type: dict[str, dict[str, list[bool]]] = {}
    for r in records:
        thumb = str(r.group or "").startswith(THUMBNAIL_GROUP_PREFIX)
        by_type.setdefault(r.label, {}).setdefault(str(r.source_class), []).append(thumb)
    out = []
    for cell_type, sources in sorted(by_type.items()):
        only = sorted(s for s, flags in sources.items() if all(flags))
        if len(only) == len(sources):
            out.append(cell_type)
        elif only:
            out.append(f"{cell_type} ({', '.join(only)})")
    return out


def differential_limits(
    contract: InputContract, records: Sequence[Any], validation: dict[str, Any] | None
) -> list[str]:
    """What the model has not been validated on, in words a reader of ``leukoedge models`` acts on."""
    limits = [
        "Not validated on other microscopes, cameras or stains: every training and test image comes "
        "from one scanner and stain (LMU, May-Gruenwald-Giemsa, 100x oil).",
        "Not validated on smear fields: the figures are for single-cell images; on a field the "
        "detector's crops must match the training crops (scale, centring).",
        f"Cell types outside {', '.join(contract.class_names)} (for example plasma cells, hairy cells, "
        "megakaryocytes, artefacts) are forced into one of these types.",
    ]
    thumbs = thumbnail_only_classes(records)
    if thumbs:
        limits.append(
            f"Not validated on full-resolution cells of {', '.join(thumbs)}: their images are thumbnail "
            "cuts (about 108 px, a quarter of the full resolution); full-resolution cells of these types "
            "may score differently."
        )
    test = (validation or {}).get("test") or {}
    few = [
        f"{name} ({row.get('n') or 0})"
        for name, row in (test.get("per_type") or {}).items()
        if (row.get("n") or 0) < FEW_IMAGES
    ]
    if few:
        limits.append(
            f"Few test images for {', '.join(few)}: their per-class figures have wide intervals (see "
            "metrics.validation)."
        )
    if not validation:
        limits.append("No per-class validation figures were recorded for this model.")
    return limits
