"""The red-cell ruler: pixels per micrometre of a smear image, measured on its red cells.

Red cells are the one object of known size in every peripheral-blood field (about
:data:`~leukoedge.contract.RBC_DIAMETER_UM` across). Their mask (green optical density above Otsu's
threshold, nuclei left out, central pallor filled) is turned into a near-isotropic distance map;
the depth distribution of a set of discs fixes their radius (see :func:`_ruler_diameter`), even
where red cells touch or overlap, which defeats counting them one by one.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from leukoedge.contract import RBC_DIAMETER_UM
from leukoedge.vision.segment import (
    STAIN_RANGE,
    check_rgb,
    dilate,
    downscale,
    erode,
    fill_holes,
    octagon_depth,
    otsu_threshold,
    stain_image,
)

logger = logging.getLogger(__name__)

#: Red cells are measured at about this many pixels across (the depth constants hold there).
_RULER_TARGET_PX = 24.0
#: The detector's default nucleus floor, in ln(B/G) units.
DEFAULT_MIN_STAIN = 0.35


def _ruler_mask(rgb: np.ndarray, min_stain: float) -> np.ndarray:
    """Red cells: pixels darker than the glass (Otsu on green density), nuclei removed, gaps filled."""
    st = stain_image(rgb)
    nuclei = dilate(st.stain > max(min_stain, otsu_threshold(st.stain, *STAIN_RANGE)), 5)
    dens_t = otsu_threshold(st.density[~nuclei], -0.2, 1.5)
    cells = st.density > max(dens_t, 0.05)
    cells = fill_holes(cells & ~nuclei)
    return erode(dilate(cells, 3), 3) & ~nuclei


def _interpolated_quantile(values: np.ndarray, q: float) -> float:
    """Quantile of integer values read as a continuous variable (each integer k spans k +- 0.5).

    Depths are whole erosion steps; interpolating inside the step keeps the ruler from snapping
    to a few discrete scales.
    """
    counts = np.bincount(values.astype(np.intp))
    cdf = np.cumsum(counts) / values.size
    k = int(np.searchsorted(cdf, q))
    below = float(cdf[k - 1]) if k > 0 else 0.0
    return k - 0.5 + (q - below) * values.size / max(int(counts[k]), 1)


def _ruler_diameter(rgb: np.ndarray, min_stain: float) -> tuple[float, float]:
    """Typical red-cell diameter in pixels of ``rgb``, and how many red cells' worth of area it rests on.

    For discs of radius R, the fraction of their area deeper than d is (1 - d/R)^2, so a quarter of
    it lies deeper than R/2: the 75th percentile of the depth map is half the radius. A disc of
    radius r has an octagonal depth of about 0.88 r - 0.5 (measured on drawn discs).
    """
    mask = _ruler_mask(rgb, min_stain)
    h, w = mask.shape
    depth = octagon_depth(mask, limit=max(h, w) // 2)
    values = depth[depth > 0]
    if values.size == 0:
        return 0.0, 0.0
    half_depth = _interpolated_quantile(values, 0.75)
    radius = (half_depth + 0.5) / 0.88 / 0.5
    return 2.0 * radius, values.size / (math.pi * radius * radius)


def estimate_px_per_um(frame: np.ndarray, min_stain: float = DEFAULT_MIN_STAIN) -> float | None:
    """Pixels per micrometre of a smear image, from the size of its red cells; None when there are too few.

    Red cells are about ``RBC_DIAMETER_UM`` across, so they are a ruler in every field of a
    peripheral smear. ``min_stain`` is the detector's nucleus floor (nuclei are left out of the ruler).
    """
    frame = check_rgb(frame)
    factor = max(1, min(frame.shape[:2]) // 120)
    diameter, n = _ruler_diameter(downscale(frame, factor), min_stain)
    # The depth constants hold for red cells about _RULER_TARGET_PX across: measure again there.
    better = max(1, int(round(diameter * factor / _RULER_TARGET_PX)))
    if diameter > 0 and better != factor:
        factor = better
        diameter, n = _ruler_diameter(downscale(frame, factor), min_stain)
    if n < 3 or diameter < 4:
        logger.debug("no red-cell ruler in this frame (%.1f cells, diameter %.1f)", n, diameter)
        return None
    return diameter * factor / RBC_DIAMETER_UM
