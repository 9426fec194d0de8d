"""Labelled single-cell data sets: class folders, the TCIA AML-Cytomorphology_LMU release, CSV manifests.

Every loader gives the same :class:`Record` list, with the label already mapped onto the two
contract classes and the mapping kept, so a run can write down exactly what "malignant" meant.
Labels come from class folders, TCIA codes or a manifest, never from file names: a folder of
unlabelled images is refused with a message, not turned into a one-class data set that a model
then "classifies" perfectly. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import csv
import logging
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from leukoedge.contract import CLASS_NAMES
from leukoedge.errors import DataError
from leukoedge.train.labels import (
    DEFAULT_TCIA_MAPPING,
    IGNORE,
    TCIA_CODES,
    LabelResolver,
    format_mapping,
    parse_mapping,
)
from leukoedge.vision.images import IMAGE_SUFFIXES, is_image_path

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
#: Folder names read as pre-made splits, and the split each one names.
SPLIT_FOLDERS = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val",
    "test": "test", "testing": "test",
}  # fmt: skip
#: A class below this share of the images is reported (logged and listed in the summary).
MINORITY_WARN_FRACTION = 0.05
ANNOTATIONS_FILE = "annotations.dat"
_NO_LABELS_HINT = (
    "Labels must come from class folders, TCIA codes or a CSV manifest, never from file names. "
    "To label unlabelled images with a trained model use `leukoedge classify`."
)


@dataclass(frozen=True)
class Record:
    """One labelled image. ``label`` is a contract class; ``source_class`` the name it came from."""

    path: str
    label: str
    group: str | None = None
    source_class: str | None = None
    split: str | None = None

    @property
    def y(self) -> int:
        """1 for the positive (malignant) class, 0 otherwise: the model's target."""
        return CLASS_NAMES.index(self.label)


@dataclass
class Dataset:
    """What a loader found: the records, the label mapping applied, and what was left out."""

    root: str
    layout: str
    records: list[Record]
    mapping: dict[str, str]
    warnings: list[str] = field(default_factory=list)
    excluded: dict[str, int] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)

    @property
    def class_counts(self) -> dict[str, int]:
        return label_counts(self.records)

    @property
    def source_counts(self) -> dict[str, int]:
        return dict(sorted(Counter(str(r.source_class) for r in self.records).items()))

    @property
    def split_counts(self) -> dict[str, dict[str, int]]:
        """Class counts per pre-made split folder (empty when the data came unsplit)."""
        splits = sorted({r.split for r in self.records if r.split})
        return {s: label_counts(r for r in self.records if r.split == s) for s in splits}

    @property
    def has_groups(self) -> bool:
        return any(r.group is not None for r in self.records)

    def summary(self) -> dict[str, Any]:
        """A JSON-able description for a run's outputs: where the data came from and how it was labelled."""
        groups = {r.group for r in self.records if r.group is not None}
        return {
            "root": self.root,
            "layout": self.layout,
            "n_images": len(self.records),
            "class_counts": self.class_counts,
            "source_class_counts": self.source_counts,
            "split_counts": self.split_counts,
            "n_groups": len(groups) if groups else None,
            "mapping": dict(self.mapping),
            "mapping_text": format_mapping(self.mapping),
            "excluded": dict(self.excluded),
            "n_missing_files": len(self.missing),
            "missing_files": self.missing[:20],
            "warnings": list(self.warnings),
        }


def label_counts(items: Iterable[Record | str | int]) -> dict[str, int]:
    """Images per contract class (both classes always present, zeros included)."""
    counts = dict.fromkeys(CLASS_NAMES, 0)
    for item in items:
        label = item.label if isinstance(item, Record) else item
        if not isinstance(label, str):
            label = CLASS_NAMES[int(label)]
        counts[label] += 1
    return counts


def class_balance_warnings(records: Sequence[Record], where: str = "data set") -> list[str]:
    """Messages for classes that are missing or below :data:`MINORITY_WARN_FRACTION`; each is logged."""
    counts = label_counts(records)
    total = sum(counts.values())
    messages = []
    for label, n in counts.items():
        if total and n == 0:
            messages.append(f"{where}: no {label} images among {total:,}")
        elif total and n / total < MINORITY_WARN_FRACTION:
            messages.append(
                f"{where}: only {n:,} of {total:,} images ({n / total:.1%}) are {label}, under "
                f"{MINORITY_WARN_FRACTION:.0%}: accuracy will hide how this class does; read its own recall"
            )
    for message in messages:
        logger.warning(message)
    return messages


def require_two_classes(records: Sequence[Record], purpose: str = "training") -> dict[str, int]:
    """Refuse data that cannot teach a classifier: no images, or every image of one class.

    Returns the class counts when both classes are present.
    """
    counts = label_counts(records)
    total = sum(counts.values())
    if total == 0:
        raise DataError(f"cannot use this data for {purpose}: it has no labelled images. {_NO_LABELS_HINT}")
    present = [label for label, n in counts.items() if n]
    if len(present) < 2:
        raise DataError(
            f"cannot use this data for {purpose}: all {total:,} images have label {present[0]!r}: a "
            f"classifier cannot learn from one class, and its accuracy on one class means nothing. "
            + _NO_LABELS_HINT
        )
    return counts


def require_evaluable(labels: Iterable[Record | str | int], set_name: str = "test set") -> dict[str, int]:
    """Refuse to report classification metrics on a set that lacks one of the classes.

    Sensitivity, specificity, AUC and threshold choice all need both classes; on a one-class set
    "accuracy" only measures how often the model says that one class. ``labels`` may be records,
    class names or 0/1 targets. Returns the class counts.
    """
    counts = label_counts(labels)
    total = sum(counts.values())
    missing = [label for label, n in counts.items() if n == 0]
    if total == 0:
        raise DataError(f"cannot report metrics on the {set_name}: it has no images")
    if missing:
        present = next(label for label, n in counts.items() if n)
        raise DataError(
            f"cannot report metrics on the {set_name}: all {total:,} images are {present} and none are "
            f"{missing[0]}; sensitivity, specificity, AUC and a threshold need both classes. A one-class "
            f"set can only give the rate at which the model calls its images {missing[0]}."
        )
    return counts


def detect_layout(path: str | os.PathLike) -> str:
    """``csv`` for a .csv file, ``tcia`` for folders named by TCIA codes (under split folders or not),
    else ``folders``."""
    p = Path(path)
    if p.is_file():
        if p.suffix.lower() == ".csv":
            return "csv"
        raise DataError(f"{p}: a data set is a folder or a .csv manifest, not a {p.suffix or 'plain'} file")
    if not p.is_dir():
        raise DataError(f"{p}: no such file or folder")
    names = {name for _, classes in _split_dirs(p) for name in _subdirs(classes)}
    return "tcia" if names & set(TCIA_CODES) else "folders"


def load_dataset(
    path: str | os.PathLike, layout: str = "auto", mapping: dict[str, str] | str | None = None
) -> Dataset:
    """Load a labelled data set; see the module docstring for the layouts.

    ``mapping`` (a dict or a string for :func:`~leukoedge.train.labels.parse_mapping`) maps
    source class names onto the contract classes; without one, contract class names, TCIA codes
    (default: MYO and MOB malignant) and unambiguous folder names (blast, normal, lymphocyte, ...)
    are understood. One-class data loads (an external set of normal cells is useful for false
    positives); training calls :func:`require_two_classes`.
    """
    if layout not in LAYOUTS:
        raise DataError(f"unknown data layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    if isinstance(mapping, str):
        mapping = parse_mapping(mapping)
    root = Path(os.path.abspath(path))
    found = detect_layout(root) if layout == "auto" else layout
    if found == "csv" and not root.is_file():
        raise DataError(f"{root}: layout 'csv' needs a .csv manifest file")
    if found != "csv" and not root.is_dir():
        raise DataError(f"{root}: layout {found!r} needs a folder")
    resolver = LabelResolver(mapping)
    if found == "csv":
        raw, missing, warnings = _scan_csv(root)
    else:
        raw, warnings = _scan_folders(root, tcia=found == "tcia")
        missing = []
    if not raw:
        raise DataError(
            f"{root}: no images found (looked for {', '.join(sorted(IMAGE_SUFFIXES))}). {_NO_LABELS_HINT}"
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


def _subdirs(folder: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def _split_dirs(root: Path) -> list[tuple[str | None, Path]]:
    """(split, folder holding class folders): the split folders if ``root`` has them, else root itself."""
    names = _subdirs(root)
    splits = [n for n in names if n.lower() in SPLIT_FOLDERS]
    if not splits:
        return [(None, root)]
    others = [n for n in names if n.lower() not in SPLIT_FOLDERS]
    if others:
        raise DataError(
            f"{root} mixes split folders ({', '.join(splits)}) with other folders ({', '.join(others)}); "
            "put every class folder under a split folder, or none"
        )
    return [(SPLIT_FOLDERS[n.lower()], root / n) for n in splits]


def _scan_folders(root: Path, tcia: bool) -> tuple[list[Record], list[str]]:
    """Unlabelled records (source_class = folder name) from ``[split/]class/[group/]image`` folders."""
    raw: list[Record] = []
    warnings: list[str] = []
    for split, folder in _split_dirs(root):
        loose = [e.name for e in os.scandir(folder) if e.is_file() and is_image_path(e.name)]
        classes = _subdirs(folder)
        if loose and not classes:
            raise DataError(
                f"{folder}: {len(loose):,} images lie directly in this folder, with no class folders, "
                f"so they have no labels (e.g. {sorted(loose)[0]}). {_NO_LABELS_HINT}"
            )
        if loose:
            warnings.append(f"{folder}: ignored {len(loose):,} images outside the class folders")
            logger.warning(warnings[-1])
        annotations = _read_tcia_annotations(folder, root) if tcia else {}
        for name in classes:
            raw += _scan_class(folder / name, name, split, annotations)
    return raw, warnings


def _scan_class(
    folder: Path, name: str, split: str | None, annotations: dict[str, tuple[str, str | None]]
) -> list[Record]:
    """Images of one class folder; a first-level subfolder (e.g. per patient) becomes the group."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel = Path(dirpath).relative_to(folder).parts
        group = rel[0] if rel else None
        for fname in sorted(filenames):
            if fname.startswith(".") or not is_image_path(fname):
                continue
            source, group_here = name, group
            if fname in annotations:
                source, annotated_group = annotations[fname]
                group_here = annotated_group or group
            out.append(Record(os.path.join(dirpath, fname), "", group_here, source, split))
    return out


def _read_tcia_annotations(folder: Path, root: Path) -> dict[str, tuple[str, str | None]]:
    """``{image file name: (code, group)}`` from an annotations.dat, or {} when absent or unreadable.

    The release's file lists an image name and its cell-type code(s) per line, separated by
    whitespace or semicolons. The first code read is the label. A header row naming a ``group``
    or ``patient`` column supplies groups. Anything unparseable is ignored with a warning: the
    class folders already carry the labels.
    """
    for candidate in (folder / ANNOTATIONS_FILE, root / ANNOTATIONS_FILE):
        if candidate.is_file():
            break
    else:
        return {}
    try:
        lines = candidate.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as e:
        logger.warning("%s: cannot read (%s); labels come from the class folders", candidate, e)
        return {}
    out: dict[str, tuple[str, str | None]] = {}
    group_col: int | None = None
    bad = 0
    for i, line in enumerate(lines):
        tokens = [t for t in re.split(r"[;,\s]+", line.strip()) if t]
        if not tokens or tokens[0].startswith("#"):
            continue
        codes = [t.upper() for t in tokens[1:] if t.upper() in TCIA_CODES]
        if i == 0 and not codes:
            lowered = [t.lower() for t in tokens]
            group_col = next(
                (lowered.index(k) for k in ("group", "patient", "patient_id") if k in lowered), None
            )
            continue
        if not codes:
            bad += 1
            continue
        group = tokens[group_col] if group_col is not None and group_col < len(tokens) else None
        out[os.path.basename(tokens[0].replace("\\", "/"))] = (codes[0], group)
    if not out:
        logger.warning(
            "%s: no line could be read as 'image code'; labels come from the class folders", candidate
        )
    elif bad:
        logger.warning("%s: ignored %d unreadable lines", candidate, bad)
    return out


def _scan_csv(path: Path) -> tuple[list[Record], list[str], list[str]]:
    """Records from a ``path,label[,group][,split]`` CSV; relative paths are relative to its folder."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path}: cannot read the CSV manifest: {e}") from e
    if not rows:
        raise DataError(f"{path}: empty CSV manifest; expected a header row 'path,label[,group]'")
    header = [h.strip().lower() for h in rows[0]]
    if "path" not in header or "label" not in header:
        raise DataError(f"{path}: the header row must name 'path' and 'label' columns, found {rows[0]}")
    col = {name: header.index(name) for name in ("path", "label", "group", "split") if name in header}
    raw, missing, problems = [], [], []
    for line_no, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        cells = {name: (row[i].strip() if i < len(row) else "") for name, i in col.items()}
        if not cells["path"] or not cells["label"]:
            problems.append(f"line {line_no}: empty path or label")
            continue
        split = cells.get("split") or None
        if split is not None and split.lower() not in SPLIT_FOLDERS:
            problems.append(f"line {line_no}: unknown split {split!r}")
            continue
        image = Path(cells["path"]) if os.path.isabs(cells["path"]) else path.parent / cells["path"]
        if not image.is_file():
            missing.append(str(image))
            continue
        split = SPLIT_FOLDERS[split.lower()] if split else None
        raw.append(Record(os.path.abspath(image), "", cells.get("group") or None, cells["label"], split))
    if problems:
        raise DataError(f"{path}: {len(problems)} bad rows: " + "; ".join(problems[:10]))
    warnings = []
    if missing:
        warnings.append(
            f"{path}: {len(missing):,} listed files do not exist and were left out (e.g. {missing[0]})"
        )
        logger.warning(warnings[-1])
    return raw, missing, warnings
