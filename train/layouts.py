"""Reading labelled images off disk: class folders (optionally under split folders), the TCIA
AML-Cytomorphology_LMU release with its annotations file, and CSV manifests.

Scanners return raw :class:`~leukoedge.train.records.Record` lists whose ``source_class`` is the name
found on disk; :func:`leukoedge.train.datasets.load_dataset` maps those names onto the contract
classes. Labels come from folders, codes or a manifest, never from file names.
"""

from __future__ import annotations

import csv
import logging
import os
import re
from pathlib import Path

from leukoedge.errors import DataError
from leukoedge.train.labels import TCIA_CODES
from leukoedge.train.records import NO_LABELS_HINT, Record
from leukoedge.vision.images import is_image_path

logger = logging.getLogger(__name__)

#: Folder names read as pre-made splits, and the split each one names.
SPLIT_FOLDERS = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val",
    "test": "test", "testing": "test",
}  # fmt: skip
ANNOTATIONS_FILE = "annotations.dat"


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


def scan_folders(root: Path, tcia: bool) -> tuple[list[Record], list[str]]:
    """Unlabelled records (source_class = folder name) from ``[split/]class/[group/]image`` folders."""
    raw: list[Record] = []
    warnings: list[str] = []
    for split, folder in _split_dirs(root):
        loose = [e.name for e in os.scandir(folder) if e.is_file() and is_image_path(e.name)]
        classes = _subdirs(folder)
        if loose and not classes:
            raise DataError(
                f"{folder}: {len(loose):,} images lie directly in this folder, with no class folders, "
                f"so they have no labels (e.g. {sorted(loose)[0]}). {NO_LABELS_HINT}"
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


def scan_csv(path: Path) -> tuple[list[Record], list[str], list[str]]:
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
