"""The representative (calibration) data set for full-integer quantization.

int8 activation ranges are set by what the converter sees here, so the images must look like
what the device will see: training-split images only (never validation or test), stratified by
class, drawn with a seed, decoded by :func:`leukoedge.vision.images.load_cell` exactly as the edge
decodes them, and fed as raw 0-255 pixels (float32, because the converter wants float).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from leukoedge.contract import CLASS_NAMES
from leukoedge.errors import DataError, ImageError
from leukoedge.vision.images import load_cell

logger = logging.getLogger(__name__)

#: Fewest calibration images accepted: fewer give activation ranges that depend on a handful of cells.
MIN_CALIBRATION = 20
DEFAULT_CALIBRATION = 300


@dataclass
class CalibrationSet:
    """The calibration images, where they came from, and how they were drawn."""

    x: np.ndarray
    paths: list[str]
    labels: list[str]
    seed: int
    errors: list[tuple[str, str]] = field(default_factory=list)
    #: True when one pixel was set to 255 so the uint8 input range is exactly 0-255 (scale 1.0).
    range_anchored: bool = False
    pool_size: int = 0
    #: The classes the calibration is stratified over: the run's contract class names.
    classes: tuple[str, ...] = CLASS_NAMES

    @property
    def class_counts(self) -> dict[str, int]:
        return {c: self.labels.count(c) for c in self.classes}

    def generator(self) -> Callable[[], Iterator[list[np.ndarray]]]:
        """The converter's ``representative_dataset``: one float32 1x64x64x3 image per step."""
        x = self.x

        def gen() -> Iterator[list[np.ndarray]]:
            for i in range(len(x)):
                yield [x[i : i + 1].astype(np.float32)]

        return gen

    def to_manifest(self) -> dict[str, Any]:
        return {
            "split": "train",
            "seed": self.seed,
            "n": len(self.paths),
            "pool_size": self.pool_size,
            "class_counts": self.class_counts,
            "preprocessing": "leukoedge.vision.images.load_cell -> uint8 RGB -> float32 0-255",
            "range_anchored": self.range_anchored,
            "unreadable": [{"path": p, "error": e} for p, e in self.errors],
            "files": [{"path": p, "label": lab} for p, lab in zip(self.paths, self.labels, strict=True)],
        }


def stratified_sample(
    records: Sequence[Any], n: int, seed: int, classes: Sequence[str] = CLASS_NAMES
) -> list[Any]:
    """``n`` records (or all, if fewer) in proportion to each class, drawn with ``seed``.

    Every class with images gets at least one, so a rare cell type still sets its activation ranges.
    """
    rng = np.random.default_rng(seed)
    by_class = {c: sorted((r for r in records if r.label == c), key=lambda r: r.path) for c in classes}
    total = sum(len(v) for v in by_class.values())
    if total == 0:
        return []
    n = min(n, total)
    quota = {c: max(1 if v else 0, round(n * len(v) / total)) for c, v in by_class.items()}
    chosen = []
    for c, recs in by_class.items():
        k = min(quota[c], len(recs))
        chosen += [recs[i] for i in sorted(rng.choice(len(recs), size=k, replace=False))]
    return chosen


def check_calibration_labels(
    labels: Sequence[str], what: str = "representative set", classes: Sequence[str] = CLASS_NAMES
) -> None:
    """Refuse a calibration set that is too small or lacks any of ``classes`` (naming the first)."""
    counts = {c: list(labels).count(c) for c in classes}
    if len(labels) < MIN_CALIBRATION:
        raise DataError(
            f"the {what} has {len(labels)} readable images; int8 calibration needs at least "
            f"{MIN_CALIBRATION} (default {DEFAULT_CALIBRATION}) from the training split"
        )
    missing = [c for c, k in counts.items() if k == 0]
    if missing:
        raise DataError(
            f"the {what} has no {missing[0]} images ({counts}); calibrating without a class sets "
            f"activation ranges that clip it. Use training data with every class of the model "
            f"({', '.join(classes)})"
        )


def build_calibration_set(
    records: Sequence[Any],
    n: int = DEFAULT_CALIBRATION,
    seed: int = 0,
    classes: Sequence[str] = CLASS_NAMES,
) -> CalibrationSet:
    """Draw, decode and check the calibration images from training-split ``records``.

    ``classes`` are the model's contract class names; the draw is stratified over them and a set
    missing any of them is refused.
    """
    if n < MIN_CALIBRATION:
        raise DataError(f"--calibration-samples {n} is below the minimum of {MIN_CALIBRATION}")
    chosen = stratified_sample(records, n, seed, classes)
    images, paths, labels, errors = [], [], [], []
    for rec in chosen:
        try:
            images.append(load_cell(rec.path))
        except ImageError as e:
            errors.append((rec.path, str(e)))
            logger.warning("calibration image skipped: %s", e)
            continue
        paths.append(rec.path)
        labels.append(rec.label)
    check_calibration_labels(labels, classes=classes)
    x = np.stack(images).astype(np.uint8)
    calib = CalibrationSet(x, paths, labels, seed, errors, pool_size=len(records), classes=tuple(classes))
    anchor_input_range(calib)
    return calib


def anchor_input_range(calib: CalibrationSet) -> None:
    """Make the calibrated input range exactly 0-255, so the uint8 input has scale 1.0, zero point 0.

    The converter sets the input scale to (largest calibration pixel) / 255; when no image
    reaches 255 (dim slides), one pixel of the first image is set to white. That pixel is the only
    change, and it is recorded in the calibration manifest.
    """
    if int(calib.x.max()) < 255:
        calib.x[0, 0, 0, :] = 255
        calib.range_anchored = True
        logger.info("no calibration pixel reached 255; anchored the input range with one white pixel")
