"""Detection scoring against annotated boxes (Pascal VOC folders such as the BCCD frames).

A detection hits an annotated white cell when their boxes overlap with IoU >= 0.3 or when the
detection's centre lies inside the annotated box: the detector outlines the stained nucleus, while
annotators draw the whole cell, so centre-in-box is the fair test of "found this cell".
"""

from __future__ import annotations

import logging
import os
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from leukoedge.errors import DataError
from leukoedge.vision.detect import CellDetector, Detection, DetectorConfig
from leukoedge.vision.images import decode_image

logger = logging.getLogger(__name__)

Box = tuple[float, float, float, float]


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _matches(det: Detection, box: Sequence[float], min_iou: float) -> bool:
    cx, cy = det.center
    inside = box[0] <= cx <= box[2] and box[1] <= cy <= box[3]
    return inside or iou(det.bbox, box) >= min_iou


def match_detections(
    detections: Sequence[Detection], boxes: Sequence[Sequence[float]], iou: float = 0.3
) -> tuple[list[int], list[int], list[int]]:
    """Greedy one-to-one matching: (hit box indices, missed box indices, false-positive detection indices).

    Detections are taken in the given order (the detector sorts them by score); each claims the
    first unclaimed box it matches, so two detections of one cell count one hit and one false one.
    """
    claimed: set[int] = set()
    false_pos = []
    for i, det in enumerate(detections):
        for j, box in enumerate(boxes):
            if j not in claimed and _matches(det, box, iou):
                claimed.add(j)
                break
        else:
            false_pos.append(i)
    hits = sorted(claimed)
    misses = [j for j in range(len(boxes)) if j not in claimed]
    return hits, misses, false_pos


def read_voc_boxes(xml_path: str | os.PathLike, name: str = "WBC") -> list[Box]:
    """The boxes of class ``name`` in one Pascal VOC annotation file (x0, y0, x1, y1)."""
    try:
        root = ET.parse(xml_path).getroot()
    except (OSError, ET.ParseError) as e:
        raise DataError(f"{xml_path}: cannot read Pascal VOC annotation: {e}") from e
    boxes = []
    for obj in root.iter("object"):
        if (obj.findtext("name") or "").strip() != name:
            continue
        bb = obj.find("bndbox")
        if bb is None:
            continue
        boxes.append(tuple(float(bb.findtext(k) or 0) for k in ("xmin", "ymin", "xmax", "ymax")))
    return boxes  # type: ignore[return-value]


def voc_pairs(folder: str | os.PathLike) -> list[tuple[Path, Path]]:
    """(image, annotation) pairs of a VOC folder with JPEGImages/ and Annotations/."""
    folder = Path(folder)
    images = folder / "JPEGImages"
    notes = folder / "Annotations"
    if not images.is_dir() or not notes.is_dir():
        raise DataError(f"{folder}: expected JPEGImages/ and Annotations/ folders (Pascal VOC)")
    pairs = [(p, notes / (p.stem + ".xml")) for p in sorted(images.iterdir()) if p.suffix.lower() == ".jpg"]
    pairs = [(img, xml) for img, xml in pairs if xml.exists()]
    if not pairs:
        raise DataError(f"{folder}: no annotated images")
    return pairs


def evaluate_on_voc(
    folder: str | os.PathLike, config: DetectorConfig | None = None, iou_min: float = 0.3
) -> dict[str, Any]:
    """Recall of annotated white cells and false detections per frame on a VOC folder.

    Each frame gets a fresh detector, so the scale is measured on that frame alone (as for
    ``classify --field`` on unrelated fields).
    """
    frames = []
    n_boxes = n_hits = n_false = 0
    seconds = 0.0
    for image_path, xml_path in voc_pairs(folder):
        boxes = read_voc_boxes(xml_path)
        frame = decode_image(image_path)
        detector = CellDetector(config)
        start = time.perf_counter()
        dets = detector.detect(frame)
        seconds += time.perf_counter() - start
        hits, misses, false_pos = match_detections(dets, boxes, iou_min)
        n_boxes += len(boxes)
        n_hits += len(hits)
        n_false += len(false_pos)
        frames.append(
            {
                "image": image_path.name,
                "boxes": len(boxes),
                "hits": len(hits),
                "misses": [list(boxes[j]) for j in misses],
                "false_detections": [dets[i].to_dict() for i in false_pos],
                "px_per_um": round(detector.px_per_um, 2),
            }
        )
    n = len(frames)
    return {
        "frames": n,
        "boxes": n_boxes,
        "hits": n_hits,
        "recall": n_hits / n_boxes if n_boxes else float("nan"),
        "false_detections": n_false,
        "false_per_frame": n_false / n,
        "mean_detect_ms": 1000.0 * seconds / n,
        "per_frame": frames,
    }
