"""One field's way from image to model inputs: detect, decide which cells are whole, cut their crops.

``classify --field``, the daemon and the pipeline benchmark all run this, so the benchmark times
the pipeline that counts and a field scores the same on the command line as under the microscope.
It comes in two steps because the daemon crops only the tracks that are due a classification:
:meth:`FieldAnalyzer.detect` returns every detection with ``whole`` set, :meth:`FieldAnalyzer.crop`
cuts crops for the detections it is given, at the scale the detector measured on the red cells.

Whether a cell is whole (clear of the frame border) is decided by one of two rules: ``extent``
measures the cell's extent, nucleus and cytoplasm (:mod:`leukoedge.vision.cellextent`); ``margin``,
the older rule, asks the stained region to keep ``edge_margin`` diameters from the border.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

import numpy as np

from leukoedge.contract import InputContract
from leukoedge.vision.cellextent import whole_flags
from leukoedge.vision.crops import extract_crops
from leukoedge.vision.detect import CellDetector, Detection

logger = logging.getLogger(__name__)

#: The whole-cell rules :class:`FieldAnalyzer` knows.
EDGE_RULES = ("extent", "margin")


def margin_whole(d: Detection, margin: float, width: int, height: int) -> bool:
    """The ``margin`` rule: not touching the edge, and ``margin`` diameters of room around the box."""
    if d.touches_edge:
        return False
    m = margin * float(d.diameter)
    x0, y0, x1, y1 = d.bbox
    return x0 >= m and y0 >= m and x1 <= width - m and y1 <= height - m


def to_main(det: Detection, ratio: tuple[float, float]) -> Detection:
    """A detection mapped from the detection image to the full-resolution image (main = det * ratio)."""
    sx, sy = ratio
    if sx == 1.0 and sy == 1.0:
        return det
    x0, y0, x1, y1 = det.bbox
    cx, cy = det.center
    bbox = (int(x0 * sx), int(y0 * sy), int(np.ceil(x1 * sx)), int(np.ceil(y1 * sy)))
    return dataclasses.replace(
        det, bbox=bbox, center=(cx * sx, cy * sy), diameter=det.diameter * (sx + sy) / 2
    )


class FieldAnalyzer:
    """Detection, the whole-cell test and crops for one stream of fields. Not thread-safe."""

    def __init__(
        self,
        detector: CellDetector,
        contract: InputContract,
        edge_rule: str = "extent",
        edge_margin: float = 0.0,
    ) -> None:
        if edge_rule not in EDGE_RULES:
            raise ValueError(f"edge_rule must be one of {EDGE_RULES}, got {edge_rule!r}")
        self.detector = detector
        self.contract = contract
        self.edge_rule = edge_rule
        self.edge_margin = edge_margin

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        """Every white cell of the field, each with ``whole`` decided by the configured rule."""
        detections = self.detector.detect(rgb)
        if self.edge_rule == "extent":
            flags = whole_flags(rgb, detections)
        else:
            h, w = rgb.shape[:2]
            flags = [margin_whole(d, self.edge_margin, w, h) for d in detections]
        return [dataclasses.replace(d, whole=bool(f)) for d, f in zip(detections, flags, strict=True)]

    def crop(
        self, image: np.ndarray, detections: Sequence[Detection], ratio: tuple[float, float] = (1.0, 1.0)
    ) -> tuple[list[Detection], np.ndarray]:
        """Detections mapped onto ``image`` (``ratio`` times the detection image) and their model crops.

        The detector's scale (configured, or measured on red cells) keeps crops at the training
        images' size in micrometres; without one, crops fall back to sizing by the cell.
        """
        size = self.contract.size
        if not detections:
            return [], np.empty((0, size, size, 3), np.uint8)
        mapped = [to_main(d, ratio) for d in detections]
        measured = self.detector.measured_px_per_um
        px_per_um = measured * (ratio[0] + ratio[1]) / 2 if measured else None
        return mapped, extract_crops(image, mapped, self.contract.crop, size, px_per_um)

    def analyze(self, rgb: np.ndarray) -> tuple[list[Detection], np.ndarray]:
        """All detections, and the model crops of the whole ones, in order."""
        detections = self.detect(rgb)
        _, crops = self.crop(rgb, [d for d in detections if d.whole])
        return detections, crops
