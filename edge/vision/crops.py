"""Model inputs cut from whole fields, at the geometry of the training images.

A model scores a cell the same from a single-cell image and from a field only when both crops
look alike: cell centred, cell the same share of the crop. Two ways to size the crop:

- **scale mode** (the default whenever the field's scale is known and the model's geometry has
  ``rbc_fraction``): the crop covers as many micrometres as a training image, ``7.5 um *
  px_per_um / rbc_fraction`` pixels, whatever the cell. Small cells stay small, as in training.
- **cell mode** (the fallback when no scale is known): the crop side is the cell's own stained
  diameter divided by ``cell_fraction``, so every cell fills the crop like a median training cell.
  This blows small cells up: a lymphocyte (7-9 um) then looks like a blast (12-16 um) to the model,
  and most synthetic lymphocytes were called malignant this way; in scale mode none were.

The scale comes from the configuration or from the red cells of the frames
(:attr:`leukoedge.vision.detect.CellDetector.measured_px_per_um`); callers should pass it whenever it is
known. The bundled model tolerates a scale about 10 % off (labels unchanged on 99 % of cells);
25 % off changes 2 %, 30-40 % off about 10 %. Crops are centred on the detected nucleus:
centring on the whole cell (the stained cytoplasm around it) was tried and moved crops further
from the training images' centres.
:func:`measure_crop_geometry` measures the geometry with the field detector's own segmentation,
and every crop is resized by :func:`leukoedge.vision.images.to_model_input`, the one resize path.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import numpy as np
from PIL import Image

from leukoedge.contract import INPUT_SIZE, RBC_DIAMETER_UM, CropGeometry
from leukoedge.errors import ConfigError, DataError, ImageError
from leukoedge.vision.detect import CellDetector, Detection, DetectorConfig
from leukoedge.vision.images import to_model_input
from leukoedge.vision.segment import check_rgb

logger = logging.getLogger(__name__)

#: How the crop side is chosen: see the module docstring and :func:`crop_mode`.
CROP_CUT_MODES = ("auto", "scale", "cell")

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


def crop_mode(geometry: CropGeometry, px_per_um: float | None = None, mode: str = "auto") -> str:
    """The mode that sizes crops: "scale" when the scale and ``rbc_fraction`` are known, else "cell".

    ``mode="auto"`` picks scale mode whenever it can, because it keeps a cell's size relative to
    the crop as in training; ``"scale"`` insists on it and ``"cell"`` forces the cell's own size.
    """
    if mode not in CROP_CUT_MODES:
        raise ConfigError(f"crop mode {mode!r} is not one of {', '.join(CROP_CUT_MODES)}", [("mode", mode)])
    can_scale = px_per_um is not None and px_per_um > 0 and bool(geometry.rbc_fraction)
    if mode == "scale" and not can_scale:
        why = "no scale (px_per_um) was given" if not px_per_um else "the geometry has no rbc_fraction"
        raise ConfigError(f"scale-mode crops need a scale and a measured rbc_fraction: {why}")
    if mode == "cell" or not can_scale:
        return "cell"
    return "scale"


def crop_side(
    detection: Detection, geometry: CropGeometry, px_per_um: float | None = None, mode: str = "auto"
) -> float:
    """Crop side in frame pixels: from the scale when it is known (scale mode), else the cell's diameter.

    In scale mode the crop covers the same number of micrometres as a training image (same
    magnification relative to the red cells); in cell mode the cell's own diameter sets it, as
    the contract's ``crop_side`` does. See :func:`crop_mode`.
    """
    if crop_mode(geometry, px_per_um, mode) == "scale" and px_per_um and geometry.rbc_fraction:
        return RBC_DIAMETER_UM * px_per_um / geometry.rbc_fraction
    return geometry.crop_side(detection.diameter)


def extract_crops(
    frame: np.ndarray,
    detections: Sequence[Detection],
    geometry: CropGeometry,
    size: int = INPUT_SIZE,
    px_per_um: float | None = None,
    mode: str = "auto",
) -> np.ndarray:
    """N x size x size x 3 uint8 model inputs, one per detection, in the detections' order.

    Pass the field's scale as ``px_per_um`` whenever it is known (configured, or measured on the
    red cells): crops are then cut in scale mode, which scores a cell from a field as its
    single-cell image scores. Without it they fall back to cell mode (see the module docstring).
    """
    frame = check_rgb(frame)
    mode = crop_mode(geometry, px_per_um, mode)
    if mode == "cell" and detections:
        logger.debug("cell-mode crops: no scale known, small cells are enlarged to the training cell size")
    out = np.empty((len(detections), size, size, 3), dtype=np.uint8)
    for i, det in enumerate(detections):
        square = crop_square(frame, det.center, crop_side(det, geometry, px_per_um, mode))
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
