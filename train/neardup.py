"""Near-duplicate grouping for thumbnail sheets, and the LMU differential data set as one CSV manifest.

The LMU thumbnails come from class sheets (12 columns x 5 rows) in which small classes were
balanced by resampling: rotated or zoomed copies of one cell sit next to each other in sheet order.
Copies of one cell must never straddle a split, or the test figures measure memory.

How cells are grouped: thumbnails are walked in sheet order (row by row), and two neighbours join
one group when the colour histograms of their stained pixels agree (histogram intersection of hue,
saturation and value of the darkest 15 % of pixels by optical density, at or above
:data:`LINK_THRESHOLD`). The descriptor ignores rotation, flips, shifts and moderate zoom, which is
how the copies differ. Only neighbours are compared, so an error merges two distinct neighbours
(a larger group, harmless) rather than linking cells across the sheet. Classes whose cells are
all distinct (LYT, MON, EOS, MYO, NGS in the LMU sheets) keep one group per image.

Measured on lmu-thumbs: distinct neighbouring lymphocytes give intersections mostly 0.1-0.75;
copies 0.7-0.98. At 0.7 the 10 resampled classes fall into 3-22 groups each.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from leukoedge.errors import DataError
from leukoedge.vision.images import is_image_path

logger = logging.getLogger(__name__)

#: Neighbours whose stain histograms intersect at least this much are copies of one cell.
LINK_THRESHOLD = 0.7
#: The LMU thumbnail classes published balanced by resampling (README of lmu-thumbs).
RESAMPLED_CODES = ("BAS", "EBO", "KSC", "LYA", "MMZ", "MOB", "MYB", "NGB", "PMB", "PMO")
#: Thumbnail classes that may show cells also in aml-lmu; left out so no cell is on both sides.
OVERLAPPING_CODES = ("MYO", "NGS")
_SHEET_POS = re.compile(r"r(\d+)c(\d+)")


def sheet_position(path: str) -> tuple[int, int]:
    """(row, column) of a ``..._rRcC.png`` thumbnail; DataError when the name carries none."""
    m = _SHEET_POS.search(os.path.basename(path))
    if m is None:
        raise DataError(f"{path}: no sheet position (rRcC) in the file name")
    return int(m.group(1)), int(m.group(2))


def stain_histogram(rgb: np.ndarray) -> np.ndarray:
    """Normalised HSV histogram (8 x 6 x 6) of the darkest 15 % of pixels by optical density."""
    from PIL import Image

    x = np.asarray(rgb, dtype=np.float32) / 255.0
    density = -np.log(np.clip(x, 1 / 255, 1.0)).sum(axis=-1)
    mask = density > np.percentile(density, 85)
    hsv = np.asarray(Image.fromarray(np.asarray(rgb, np.uint8)).convert("HSV"), dtype=np.float32) / 255.0
    hist = np.histogramdd(hsv[mask], bins=(8, 6, 6), range=((0.6, 1.0), (0, 1), (0, 1)))[0].ravel()
    return hist / max(hist.sum(), 1.0)


def group_sheet_runs(paths: Sequence[str], threshold: float = LINK_THRESHOLD) -> list[int]:
    """Group ids (0, 1, ...) for ``paths`` taken in sheet order: neighbours that match share one."""
    from leukoedge.vision.images import decode_image

    ordered = sorted(range(len(paths)), key=lambda i: sheet_position(paths[i]))
    groups = [0] * len(paths)
    previous: np.ndarray | None = None
    current = -1
    for i in ordered:
        hist = stain_histogram(decode_image(paths[i]))
        if previous is None or float(np.minimum(previous, hist).sum()) < threshold:
            current += 1
        groups[i] = current
        previous = hist
    return groups


def lmu_differential_rows(
    aml_lmu: str | os.PathLike, thumbs: str | os.PathLike, seed: int = 0
) -> list[dict[str, str]]:
    """Rows (path, label, group, split) of aml-lmu plus lmu-thumbs, split group-aware.

    aml-lmu's val folder is the test split (as for the binary model) and val is carved from its
    train folder; the thumbnails (without MYO and NGS, which may repeat aml-lmu cells) are carved
    25 % test, 20 % val, whole near-duplicate groups at a time, stratified by code.
    """
    from leukoedge.train.records import Record
    from leukoedge.train.splits import carve

    aml, th = Path(aml_lmu), Path(thumbs)
    rows: list[dict[str, str]] = []
    train_part: list[Record] = []
    for folder, split in (("val", "test"), ("train", None)):
        for code_dir in sorted((aml / folder).glob("*")):
            for p in sorted(f for f in code_dir.glob("*") if is_image_path(f)):
                rec = Record(
                    str(p), code_dir.name, f"aml-lmu/{folder}/{code_dir.name}/{p.name}", code_dir.name
                )
                if split:
                    rows.append(_row(rec, split))
                else:
                    train_part.append(rec)
    if not rows or not train_part:
        raise DataError(f"{aml}: expected train/ and val/ class folders of the aml-lmu layout")
    _add(rows, carve(train_part, {"val": 0.15}, seed))
    thumb_recs = []
    for code_dir in sorted(d for d in th.glob("*") if d.is_dir() and d.name not in OVERLAPPING_CODES):
        paths = sorted(str(p) for p in code_dir.glob("*") if is_image_path(p))
        ids = group_sheet_runs(paths) if code_dir.name in RESAMPLED_CODES else range(len(paths))
        thumb_recs += [
            Record(p, code_dir.name, f"thumbs/{code_dir.name}-{g}", code_dir.name)
            for p, g in zip(paths, ids, strict=True)
        ]
    if not thumb_recs:
        raise DataError(f"{th}: no thumbnail class folders")
    for code in sorted({r.label for r in thumb_recs}):
        n_groups = len({r.group for r in thumb_recs if r.label == code})
        if n_groups < 3:
            logger.warning("%s: only %d near-duplicate groups, too few to be in every split", code, n_groups)
    _add(rows, carve(thumb_recs, {"test": 0.25, "val": 0.20}, seed))
    return rows


def _row(rec, split: str) -> dict[str, str]:
    return {"path": rec.path, "label": rec.label, "group": rec.group or "", "split": split}


def _add(rows: list[dict[str, str]], parts: dict) -> None:
    for split, recs in parts.items():
        rows += [_row(r, split) for r in recs]


def write_manifest(rows: Sequence[dict[str, str]], out: str | os.PathLike) -> Path:
    """Write rows as a CSV manifest (``path,label,group,split``) that ``leukoedge train`` reads."""
    from leukoedge.atomic import write_atomic

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = [["path", "label", "group", "split"]]
    lines += [[os.path.abspath(r["path"]), r["label"], r["group"], r["split"]] for r in rows]
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(lines)
    write_atomic(out, buf.getvalue().encode())
    return out
