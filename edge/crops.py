"""Model inputs cut from whole fields, at the geometry of the training images.

A model scores a cell the same from a single-cell image and from a field only when both crops
look alike: cell centred, cell the same share of the crop. The training images define that share;
:func:`measure_crop_geometry` measures it with the field detector's own segmentation (so "cell
diameter" means the same stained-region extent in both places) and :func:`extract_crops` cuts
squares of side ``diameter / cell_fraction`` around detections, resized by
:func:`leukoedge.images.to_model_input`, the one resize path of the package.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import numpy as np
from PIL import Image

from leukoedge.contract import INPUT_SIZE, RBC_DIAMETER_UM, CropGeometry
from leukoedge.detect import CellDetector, Detection, DetectorConfig
from leukoedge.errors import DataError, ImageError
from leukoedge.images import to_model_input
from leukoedge.segment import check_rgb

logger = logging.getLogger(__name__)

#: The training cell must lie this close to the image centre (share of the side) to be measured.
_CENTRE_TOLERANCE = 0.2


def crop_square(frame: np.ndarray, center: tuple[float, float], side: float) -> np.ndarray:
    """A side x side square of the frame centred on ``center``; beyond the border the edge pixels repeat."""
    s = max(1, int(round(side)))
    h, w = frame.shape[:2]
    x0 = int(round(center[0] - s / 2.0))
    y0 = int(round(center[1] - s / 2.0))
    if x0 >= 0 and y0 >= 0 and x0 + s <= w and y0 + s <= h:
        return frame[y0 : y0 + s, x0 : x0 + s]
    ys = np.clip(np.arange(y0, y0 + s), 0, h - 1)
    xs = np.clip(np.arange(x0, x0 + s), 0, w - 1)
    return frame[ys[:, None], xs[None, :]]


def _shrink_like_jpeg_draft(square: np.ndarray, size: int) -> np.ndarray:
    """Box-reduce by the largest of 2, 4, 8 that keeps ``size`` pixels, as ``load_cell``'s JPEG draft does.

    Training images are decoded at a reduced DCT scale before the final resize; doing the same
    here keeps field crops as sharp as training inputs (and saves most of the resize time).
    """
    side = min(square.shape[:2])
    factor = 1
    while factor < 8 and side // (factor * 2) >= size:
        factor *= 2
    if factor == 1:
        return square
    return np.asarray(Image.fromarray(np.ascontiguousarray(square), "RGB").reduce(factor))


def crop_side(detection: Detection, geometry: CropGeometry, px_per_um: float | None = None) -> float:
    """Crop side in frame pixels: from the cell's diameter, or from the scale when ``px_per_um`` is given.

    With a known scale and a geometry that recorded ``rbc_fraction``, the crop covers the same
    number of micrometres as a training image (same magnification relative to the red cells);
    otherwise the cell's own diameter sets it, as the contract's ``crop_side`` does.
    """
    if px_per_um is not None and geometry.rbc_fraction:
        return RBC_DIAMETER_UM * px_per_um / geometry.rbc_fraction
    return geometry.crop_side(detection.diameter)


def extract_crops(
    frame: np.ndarray,
    detections: Sequence[Detection],
    geometry: CropGeometry,
    size: int = INPUT_SIZE,
    px_per_um: float | None = None,
) -> np.ndarray:
    """N x size x size x 3 uint8 model inputs, one per detection, in the detections' order."""
    frame = check_rgb(frame)
    out = np.empty((len(detections), size, size, 3), dtype=np.uint8)
    for i, det in enumerate(detections):
        square = crop_square(frame, det.center, crop_side(det, geometry, px_per_um))
        out[i] = to_model_input(_shrink_like_jpeg_draft(square, size), size)
    return out


def central_detection(image: np.ndarray, detector: CellDetector) -> Detection | None:
    """The detection nearest the image centre, if one lies within the centre tolerance."""
    h, w = image.shape[:2]
    best: Detection | None = None
    best_d = _CENTRE_TOLERANCE * min(h, w)
    for det in detector.detect(image):
        d = float(np.hypot(det.center[0] - w / 2.0, det.center[1] - h / 2.0))
        if d <= best_d:
            best, best_d = det, d
    return best


def measure_crop_geometry(images: Iterable[np.ndarray], config: DetectorConfig | None = None) -> CropGeometry:
    """Cell and red-cell fractions of single-cell training images (one white cell centred in each).

    ``cell_fraction`` is the median of (stained-region diameter / image side) over the images
    where the central cell was found; ``rbc_fraction`` the median red-cell diameter / side,
    from the scale measured on each image. Images that are not RGB arrays are skipped and counted.
    """
    detector = CellDetector(config)
    fractions: list[float] = []
    rbc: list[float] = []
    skipped = 0
    for image in images:
        try:
            image = check_rgb(image)
        except ImageError as e:
            logger.warning("crop geometry: skipping an image: %s", e)
            skipped += 1
            continue
        side = float(min(image.shape[:2]))
        scale = detector.calibrate(image) if detector.config.px_per_um is None else detector.px_per_um
        if scale is not None:
            rbc.append(RBC_DIAMETER_UM * scale / side)
        det = central_detection(image, detector)
        if det is None or det.touches_edge:
            skipped += 1
            continue
        fractions.append(det.diameter / side)
    if not fractions:
        raise DataError(f"no central white cell found in any of {skipped} images")
    p10, p50, p90 = np.percentile(fractions, [10, 50, 90])
    if skipped:
        logger.info("crop geometry: central cell found in %d images, not in %d", len(fractions), skipped)
    return CropGeometry(
        cell_fraction=float(p50),
        cell_fraction_p10=float(p10),
        cell_fraction_p90=float(p90),
        rbc_fraction=float(np.median(rbc)) if rbc else None,
        measured_on=len(fractions),
    )
