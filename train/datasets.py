"""Labelled single-cell data sets: class folders, the TCIA AML-Cytomorphology_LMU release, CSV manifests.

Every loader gives the same :class:`Record` list, with the label already mapped onto the two
contract classes and the mapping kept, so a run can write down exactly what "malignant" meant.
Labels come from class folders, TCIA codes or a manifest, never from file names: a folder of
unlabelled images is refused with a message, not turned into a one-class data set that a model
then "classifies" perfectly. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from pathlib import Path

from leukoedge.errors import DataError
from leukoedge.train.labels import (
    DEFAULT_TCIA_MAPPING,
    IGNORE,
    TASKS,
    TCIA_CODES,
    DifferentialResolver,
    LabelResolver,
    format_mapping,
    parse_differential_mapping,
    parse_mapping,
)
from leukoedge.train.layouts import detect_layout, scan_csv, scan_folders
from leukoedge.train.records import (
    MINORITY_WARN_FRACTION,
    NO_LABELS_HINT,
    Dataset,
    Record,
    class_balance_warnings,
    label_counts,
    require_evaluable,
    require_two_classes,
)
from leukoedge.vision.images import IMAGE_SUFFIXES

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_TCIA_MAPPING",
    "LAYOUTS",
    "MINORITY_WARN_FRACTION",
    "TCIA_CODES",
    "Dataset",
    "Record",
    "class_balance_warnings",
    "detect_layout",
    "format_mapping",
    "label_counts",
    "load_dataset",
    "parse_mapping",
    "require_evaluable",
    "require_two_classes",
]

LAYOUTS = ("auto", "folders", "tcia", "csv")


def load_dataset(
    path: str | os.PathLike,
    layout: str = "auto",
    mapping: dict[str, str] | str | None = None,
    task: str = "binary",
) -> Dataset:
    """Load a labelled data set; see the module docstring for the layouts.

    ``mapping`` (a dict or a string for :func:`~leukoedge.train.labels.parse_mapping`) maps
    source class names onto the contract classes; without one, contract class names, TCIA codes
    (default: MYO and MOB malignant) and unambiguous folder names (blast, normal, lymphocyte, ...)
    are understood. One-class data loads (an external set of normal cells is useful for false
    positives); training calls :func:`require_two_classes`.

    With ``task="differential"`` labels are white-cell types: ``mapping`` (a string, a TOML/JSON
    file or a dict, see :func:`~leukoedge.train.labels.parse_differential_mapping`) overrides the
    default TCIA code -> type mapping.
    """
    if layout not in LAYOUTS:
        raise DataError(f"unknown data layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    if task not in TASKS:
        raise DataError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    if task == "differential":
        resolver: LabelResolver = DifferentialResolver(
            parse_differential_mapping(mapping) if mapping else None
        )
    else:
        resolver = LabelResolver(parse_mapping(mapping) if isinstance(mapping, str) else mapping)
    root = Path(os.path.abspath(path))
    found = detect_layout(root) if layout == "auto" else layout
    if found == "csv" and not root.is_file():
        raise DataError(f"{root}: layout 'csv' needs a .csv manifest file")
    if found != "csv" and not root.is_dir():
        raise DataError(f"{root}: layout {found!r} needs a folder")
    if found == "csv":
        raw, missing, warnings = scan_csv(root)
    else:
        raw, warnings = scan_folders(root, tcia=found == "tcia")
        missing = []
    if not raw:
        raise DataError(
            f"{root}: no images found (looked for {', '.join(sorted(IMAGE_SUFFIXES))}). {NO_LABELS_HINT}"
        )
    records, excluded = _label(raw, resolver, str(root))
    dataset = Dataset(
        root=str(root),
        layout=found,
        records=records,
        mapping=resolver.effective(include_tcia=found == "tcia"),
        warnings=warnings,
        excluded=excluded,
        missing=missing,
    )
    if not records:
        raise DataError(
            f"{root}: every image was excluded by the label mapping ({format_mapping(dataset.mapping)})"
        )
    dataset.warnings += class_balance_warnings(records, where=root.name or str(root))
    logger.info("loaded %s (%s): %s", root, found, dataset.class_counts)
    return dataset


def _label(raw: list[Record], resolver: LabelResolver, where: str) -> tuple[list[Record], dict[str, int]]:
    """Map each raw record's source class; unknown names are listed together in one error."""
    records, excluded = [], Counter()
    for rec in raw:
        label = resolver(str(rec.source_class))
        if label == IGNORE:
            excluded[str(rec.source_class)] += 1
        elif label is not None:
            records.append(Record(rec.path, label, rec.group, rec.source_class, rec.split))
    if resolver.unknown:
        raise resolver.unknown_error(where)
    records.sort(key=lambda r: r.path)
    return records, dict(sorted(excluded.items()))
