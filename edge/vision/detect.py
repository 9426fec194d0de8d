"""White-cell detection in whole microscope fields, shared by ``leukoedge classify --field`` and the daemon.

White-cell nuclei are the most strongly stained objects of a Romanowsky-stained smear: their
blue-to-green contrast (see :mod:`leukoedge.vision.segment`) stands far above the red cells and the glass.
The detector thresholds that stain channel on a frame downscaled to about 3 pixels per micrometre
(Otsu's threshold, never below a floor so that a frame of red cells alone yields nothing), bridges
gaps of up to 1.5 um so that the lobes of one segmented nucleus make one cell, and keeps the
components whose size and compactness are those of a nucleus. All sizes are physical
(micrometres): the scale comes from the configuration or, when that is not given, from the red
cells of the frames themselves (:mod:`leukoedge.vision.ruler`).

"Cell diameter" everywhere in leukoedge means the extent of this stained region (the mean of its
bounding box's width and height), measured by :func:`stained_regions`; crop geometry is measured
on the training images with the same function, so crops of fields and training images agree.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from leukoedge.errors import ConfigError
from leukoedge.vision.ruler import DEFAULT_MIN_STAIN, estimate_px_per_um
from leukoedge.vision.segment import (
    STAIN_RANGE,
    check_rgb,
    dilate,
    downscale,
    label_runs,
    otsu_threshold,
    run_owner,
    runs,
    stain_image,
)

__all__ = ["CellDetector", "Detection", "DetectorConfig", "Region", "estimate_px_per_um", "stained_regions"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DetectorConfig:
    """Physical parameters of white-cell detection; sizes in micrometres, stain in ln(B/G) units.

    ``px_per_um=None`` measures the scale from the red cells of the frames (a running median over
    the last ``calibration_window`` frames where the red cells could be measured).
    """

    px_per_um: float | None = None
    #: Scale used when no scale is given and none could be measured yet (no red cells in view).
    fallback_px_per_um: float = 12.0
    #: Smallest and largest stained region kept, as the diameter of a disc of the same area.
    min_cell_um: float = 3.0
    max_cell_um: float = 25.0
    #: Least share of its bounding box a region fills: a lobed nucleus fills about half of it,
    #: a loose chain of platelets bridged by the lobe merging far less.
    min_fill: float = 0.3
    #: Lowest stain contrast taken as nucleus (Otsu's threshold is used when it is higher).
    min_stain: float = DEFAULT_MIN_STAIN
    #: Gaps up to this wide between stained pieces are bridged: the lobes of one neutrophil.
    merge_gap_um: float = 1.5
    #: A region closer than this to the frame border is flagged as cut by the edge.
    edge_margin_um: float = 1.0
    #: Detection works on a frame downscaled to about this many pixels per micrometre.
    work_px_per_um: float = 3.0
    calibration_window: int = 15
    #: The first ``calibration_window`` frames are all measured, then one in this many (a few ms each).
    recalibrate_every: int = 100

    def validate(self) -> DetectorConfig:
        problems = []
        if self.px_per_um is not None and not self.px_per_um > 0:
            problems.append(("px_per_um", f"must be > 0, got {self.px_per_um}"))
        if not 0 < self.min_cell_um < self.max_cell_um:
            problems.append(("min_cell_um", "must be > 0 and below max_cell_um"))
        for name in ("fallback_px_per_um", "work_px_per_um", "merge_gap_um"):
            if not getattr(self, name) > 0:
                problems.append((name, f"must be > 0, got {getattr(self, name)}"))
        if self.calibration_window < 1 or self.recalibrate_every < 1:
            problems.append(("calibration_window", "calibration_window and recalibrate_every must be >= 1"))
        if problems:
            raise ConfigError("invalid detector configuration", problems)
        return self


@dataclass(frozen=True)
class Detection:
    """One white cell in frame pixels: box (x0, y0, x1, y1 exclusive), centre (x, y), diameter.

    ``whole`` is whether the whole cell is in the frame, decided by
    :class:`~leukoedge.vision.field.FieldAnalyzer` (None until it has been).
    """

    bbox: tuple[int, int, int, int]
    center: tuple[float, float]
    diameter: float
    touches_edge: bool
    score: float
    whole: bool | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "bbox": list(self.bbox),
            "center": [round(self.center[0], 1), round(self.center[1], 1)],
            "diameter": round(self.diameter, 1),
            "touches_edge": self.touches_edge,
            "score": round(self.score, 3),
        }


@dataclass(frozen=True)
class Region:
    """A stained region in the coordinates of the image it was found in (not yet a Detection)."""

    x0: float
    y0: float
    x1: float
    y1: float
    area: float
    contrast: float

    @property
    def diameter(self) -> float:
        return 0.5 * ((self.x1 - self.x0) + (self.y1 - self.y0))

    @property
    def center(self) -> tuple[float, float]:
        return 0.5 * (self.x0 + self.x1), 0.5 * (self.y0 + self.y1)


def _odd(n: float) -> int:
    k = max(1, int(round(n)))
    return k if k % 2 else k + 1


def _run_stats(
    mask: np.ndarray, stain_sums: np.ndarray, merged: tuple[np.ndarray, np.ndarray, np.ndarray], n: int
) -> tuple[np.ndarray, ...]:
    """Box (x0, y0, x1, y1), area and stain sum of a mask's pixels within each merged component."""
    m_rows, m_xs, m_labels = merged
    rows, xs, xe = runs(mask)
    lab = m_labels[run_owner((rows, xs), (m_rows, m_xs), mask.shape[1])]
    x0 = np.full(n, 1 << 30)
    y0 = np.full(n, 1 << 30)
    x1 = np.zeros(n, dtype=np.int64)
    y1 = np.zeros(n, dtype=np.int64)
    np.minimum.at(x0, lab, xs)
    np.minimum.at(y0, lab, rows)
    np.maximum.at(x1, lab, xe)
    np.maximum.at(y1, lab, rows + 1)
    area = np.bincount(lab, weights=xe - xs, minlength=n)
    total = np.bincount(lab, weights=stain_sums[rows, xe] - stain_sums[rows, xs], minlength=n)
    return x0, y0, x1, y1, area, total


def stained_regions(
    rgb: np.ndarray, work_px_per_um: float, config: DetectorConfig, factor: int = 1
) -> list[Region]:
    """Nucleus-sized stained regions of an image, in full-resolution pixels.

    Two thresholds: Otsu's (when above the floor) outlines the nuclei, and the floor
    ``min_stain`` finds pale nuclei that a frame of darker cells pushed below Otsu's level; a
    component is measured on its Otsu pixels when it has any, else on its floor pixels.
    ``factor`` is the integer downscale applied first; ``work_px_per_um`` the scale after it.
    """
    small = downscale(rgb, factor)
    stain = stain_image(small).stain
    t_lo = config.min_stain
    t_hi = max(t_lo, otsu_threshold(stain, *STAIN_RANGE))
    mask_lo = stain > t_lo
    if not mask_lo.any():
        return []
    bridge = _odd(config.merge_gap_um * work_px_per_um)
    m_rows, m_xs, _, m_labels = label_runs(dilate(mask_lo, bridge) if bridge > 1 else mask_lo)
    n = int(m_labels.max()) + 1
    stain_sums = np.zeros((stain.shape[0], stain.shape[1] + 1), dtype=np.float64)
    np.cumsum(stain, axis=1, out=stain_sums[:, 1:])
    merged = (m_rows, m_xs, m_labels)
    lo = _run_stats(mask_lo, stain_sums, merged, n)
    if t_hi > t_lo:
        hi = _run_stats(stain > t_hi, stain_sums, merged, n)
        use_hi = hi[4] > 0
        x0, y0, x1, y1, area, total = (np.where(use_hi, a, b) for a, b in zip(hi, lo, strict=True))
        threshold = np.where(use_hi, t_hi, t_lo)
    else:
        x0, y0, x1, y1, area, total = lo
        threshold = np.full(n, t_lo)
    min_area = math.pi / 4 * (config.min_cell_um * work_px_per_um) ** 2
    max_area = math.pi / 4 * (config.max_cell_um * work_px_per_um) ** 2
    fill = area / np.maximum((x1 - x0) * (y1 - y0), 1)
    # A cell cut by the border shows only part of its nucleus: judge it by half the usual bounds.
    h, w = stain.shape
    cut = (x0 <= 0) | (y0 <= 0) | (x1 >= w) | (y1 >= h)
    relax = np.where(cut, 0.5, 1.0)
    ok = (area >= min_area * relax) & (area <= max_area) & (fill >= config.min_fill * relax)
    regions = []
    f = float(factor)
    for k in np.nonzero(ok)[0].tolist():
        contrast = float(total[k] / area[k] - threshold[k])
        box = (float(x0[k]) * f, float(y0[k]) * f, float(x1[k]) * f, float(y1[k]) * f)
        regions.append(Region(*box, float(area[k]) * f * f, contrast))
    return regions


class CellDetector:
    """Finds white cells in RGB frames. Keeps a running scale estimate; not thread-safe.

    ``score`` of a detection is its mean stain contrast above the threshold, relative to the
    floor and capped at 1: low values are faint objects, the first to doubt.
    """

    def __init__(self, config: DetectorConfig | None = None) -> None:
        self.config = (config or DetectorConfig()).validate()
        self._scales: deque[float] = deque(maxlen=self.config.calibration_window)
        self._frames = 0

    @property
    def px_per_um(self) -> float:
        """The scale in use: configured, else the median of recent measurements, else the fallback."""
        if self.config.px_per_um is not None:
            return float(self.config.px_per_um)
        if self._scales:
            return float(np.median(self._scales))
        return float(self.config.fallback_px_per_um)

    @property
    def measured_px_per_um(self) -> float | None:
        """The scale when it is known (configured or measured on red cells), else None, never the fallback.

        Crops are cut to the training images' physical size only with a known scale; a guessed
        one would make them wrong in a way nobody sees (see :mod:`leukoedge.vision.crops`).
        """
        if self.config.px_per_um is not None:
            return float(self.config.px_per_um)
        if self._scales:
            return float(np.median(self._scales))
        return None

    def calibrate(self, frame: np.ndarray) -> float | None:
        """Measure the scale on one frame and add it to the running estimate."""
        scale = estimate_px_per_um(frame, self.config.min_stain)
        if scale is not None:
            self._scales.append(scale)
        return scale

    def reset_calibration(self) -> None:
        self._scales.clear()
        self._frames = 0

    def _wants_calibration(self) -> bool:
        if self.config.px_per_um is not None:
            return False
        # Every frame at first, then now and then (a frame without red cells is measured again later).
        if self._frames < self.config.calibration_window:
            return True
        return self._frames % self.config.recalibrate_every == 0

    def detect(self, frame_rgb: np.ndarray) -> list[Detection]:
        """White cells of an H x W x 3 uint8 RGB frame, largest stain contrast first."""
        frame = check_rgb(frame_rgb)
        if self._wants_calibration():
            self.calibrate(frame)
        self._frames += 1
        scale = self.px_per_um
        factor = max(1, int(scale / self.config.work_px_per_um))
        regions = stained_regions(frame, scale / factor, self.config, factor)
        h, w = frame.shape[:2]
        margin = self.config.edge_margin_um * scale
        out = []
        for r in regions:
            x0, y0 = int(r.x0), int(r.y0)
            x1, y1 = min(w, int(math.ceil(r.x1))), min(h, int(math.ceil(r.y1)))
            edge = x0 <= margin or y0 <= margin or x1 >= w - margin or y1 >= h - margin
            score = float(min(1.0, max(0.0, r.contrast) / max(self.config.min_stain, 1e-6)))
            center = (float(r.center[0]), float(r.center[1]))
            out.append(Detection((x0, y0, x1, y1), center, float(r.diameter), bool(edge), score))
        out.sort(key=lambda d: -d.score)
        return out
