"""The same cell scores the same from its single-cell image and from a whole field, with a trained model.

The model is the binary LeukoNet bundle kept as a test fixture, whose bounds these were measured
with; the differential bundled model differs more between the two crops (mean |p_blast difference|
about 0.076 on these cells against 0.05 here), a gap the crop geometry work has yet to close.

A held-out aml-lmu image is shrunk (a camera at another magnification) and placed at a random
offset in a 640x480 frame whose surroundings are its own mirror image (so the red-cell ruler
still has red cells); the detector finds the cell, :func:`extract_crops` cuts it and the bundled
int8 model scores it. The field label must match the label of ``load_cell`` on the original file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support.model import BINARY_BUNDLE

from leukoedge.contract import RBC_DIAMETER_UM, CropGeometry
from leukoedge.errors import ConfigError
from leukoedge.inference.bundle import load_bundle
from leukoedge.inference.classifier import CellClassifier
from leukoedge.synth import render_field
from leukoedge.vision.crops import crop_mode, crop_side, extract_crops
from leukoedge.vision.detect import CellDetector, Detection, DetectorConfig
from leukoedge.vision.images import decode_image, load_cell

FRAME_W, FRAME_H = 640, 480


@pytest.fixture(scope="module")
def classifier() -> CellClassifier:
    return CellClassifier(load_bundle(BINARY_BUNDLE))


@pytest.fixture(scope="module")
def val_cells(aml_dir: Path) -> list[tuple[np.ndarray, float, bool]]:
    """20 MYO + 20 NGS held-out images: (decoded image, single-image p_malignant, is malignant)."""
    files: list[tuple[Path, bool]] = []
    for cls in ("MYO", "NGS"):
        names = sorted((aml_dir / "val" / cls).glob("*.jpg"))
        pick = np.random.default_rng(0).choice(len(names), size=20, replace=False)
        files += [(names[i], cls == "MYO") for i in sorted(pick)]
    bundle = load_bundle(BINARY_BUNDLE)
    p = CellClassifier(bundle).predict_proba(np.stack([load_cell(f) for f, _ in files]))
    return [(decode_image(f), float(pi), y) for (f, y), pi in zip(files, p, strict=True)]


def _embed(
    image: np.ndarray, shrink: float, rng: np.random.Generator
) -> tuple[np.ndarray, tuple[float, float]]:
    """The image shrunk by ``shrink`` inside a mirror-padded 640x480 frame; also the image centre there."""
    if shrink != 1.0:
        side = round(image.shape[1] * shrink), round(image.shape[0] * shrink)
        image = np.asarray(Image.fromarray(image).resize(side, Image.Resampling.LANCZOS))
    h, w = image.shape[:2]
    ox, oy = int(rng.integers(0, FRAME_W - w + 1)), int(rng.integers(0, FRAME_H - h + 1))
    frame = np.pad(image, ((oy, FRAME_H - h - oy), (ox, FRAME_W - w - ox), (0, 0)), mode="symmetric")
    return frame, (ox + w / 2, oy + h / 2)


def _nearest(detections: list[Detection], centre: tuple[float, float], within: float) -> Detection | None:
    dist = [float(np.hypot(d.center[0] - centre[0], d.center[1] - centre[1])) for d in detections]
    if not dist or min(dist) > within:
        return None
    return detections[int(np.argmin(dist))]


def _training_px_per_um(geometry: CropGeometry, image_side: int = 400) -> float:
    """The training images' scale as the red-cell ruler measured it (median over the training set)."""
    assert geometry.rbc_fraction
    return geometry.rbc_fraction * image_side / RBC_DIAMETER_UM


@pytest.mark.parametrize("shrink", [1.0, 0.77])
def test_field_crops_score_like_single_cell_images(classifier, val_cells, shrink):
    # Measured on all 400 val images: label agreement 0.990 (shrink 1.0) and 0.987 (0.77), mean |dp|
    # 0.015 and 0.017; field accuracy 0.992 and 0.990 against 0.9925 from the single images.
    # Cell-mode crops of the same fields agree on 0.949 and 0.942 only.
    geometry, threshold = classifier.contract.crop, classifier.threshold
    px_per_um = _training_px_per_um(geometry) * shrink
    rng = np.random.default_rng(1)
    crops, single, truth, cell_mode = [], [], [], []
    for image, p_single, malignant in val_cells:
        frame, centre = _embed(image, shrink, rng)
        detector = CellDetector(DetectorConfig(px_per_um=px_per_um))
        det = _nearest(detector.detect(frame), centre, 0.3 * 400 * shrink)
        if det is None:
            continue
        crops.append(extract_crops(frame, [det], geometry, px_per_um=detector.measured_px_per_um)[0])
        cell_mode.append(extract_crops(frame, [det], geometry)[0])
        single.append(p_single)
        truth.append(malignant)
    assert len(crops) >= 36  # the detector finds the cell in nearly every field
    p_field = classifier.predict_proba(np.stack(crops))
    single_arr = np.array(single)
    agree = np.mean((p_field >= threshold) == (single_arr >= threshold))
    assert agree >= 0.9
    assert np.mean(np.abs(p_field - single_arr)) <= 0.05
    assert np.mean((p_field >= threshold) == np.array(truth)) >= 0.9
    # Scale mode is closer to the single-image scores than cell mode on the same detections.
    p_cell = classifier.predict_proba(np.stack(cell_mode))
    assert np.mean(np.abs(p_field - single_arr)) < np.mean(np.abs(p_cell - single_arr))


def test_self_calibrated_scale_keeps_labels(classifier, val_cells):
    # With the scale measured on each frame's own red cells (no configured scale), the mirror seams
    # of these frames bias the ruler by about +10 %; on all 400 val images labels still agreed on
    # 0.957 (shrink 1.0). One frame per detector here, where the daemon takes a running median.
    geometry, threshold = classifier.contract.crop, classifier.threshold
    rng = np.random.default_rng(2)
    p_field, single = [], []
    for image, p_single, _ in val_cells:
        frame, centre = _embed(image, 1.0, rng)
        detector = CellDetector()
        det = _nearest(detector.detect(frame), centre, 120)
        if det is None or detector.measured_px_per_um is None:
            continue
        crop = extract_crops(frame, [det], geometry, px_per_um=detector.measured_px_per_um)
        p_field.append(classifier.predict_proba(crop)[0])
        single.append(p_single)
    assert len(p_field) >= 34  # 36 of 40 here: mirror seams merge a border-touching cell with its image
    assert np.mean((np.array(p_field) >= threshold) == (np.array(single) >= threshold)) >= 0.85


def test_small_cells_stay_small_in_scale_mode(classifier):
    # Synthetic lymphocytes (7-9 um) scored from fields, 20 seeds: 1.00 correct in scale mode with the
    # detector's own red-cell scale, 0.05 in cell mode (enlarged to blast size). Neutrophils and blasts
    # stay right in both. Synthetic cells exercise the geometry only, not the model's accuracy.
    geometry, threshold = classifier.contract.crop, classifier.threshold
    scale_crops, cell_crops = [], []
    for seed in range(1000, 1010):
        frame, truth = render_field(seed=seed, kinds=["lymphocyte"], allow_edge_cells=False)
        cell = truth["cells"][0]
        detector = CellDetector()
        det = _nearest(detector.detect(frame), tuple(cell["center"]), 0.5 * cell["diameter_px"])
        assert det is not None and detector.measured_px_per_um is not None
        scale_crops.append(extract_crops(frame, [det], geometry, px_per_um=detector.measured_px_per_um)[0])
        cell_crops.append(extract_crops(frame, [det], geometry, mode="cell")[0])
    benign_scale = np.mean(classifier.predict_proba(np.stack(scale_crops)) < threshold)
    benign_cell = np.mean(classifier.predict_proba(np.stack(cell_crops)) < threshold)
    assert benign_scale >= 0.8
    assert benign_scale > benign_cell


# -- the mode rules -----------------------------------------------------------------------------


def test_auto_mode_uses_the_scale_whenever_it_is_known():
    geometry = CropGeometry(cell_fraction=0.4, rbc_fraction=0.25)
    det = Detection((0, 0, 40, 40), (20.0, 20.0), 40.0, False, 1.0)
    assert crop_mode(geometry, 10.0) == "scale"
    assert crop_side(det, geometry, 10.0) == pytest.approx(RBC_DIAMETER_UM * 10.0 / 0.25)
    assert crop_mode(geometry, None) == "cell"
    assert crop_side(det, geometry) == pytest.approx(100.0)
    assert crop_side(det, geometry, 10.0, mode="cell") == pytest.approx(100.0)
    assert crop_mode(CropGeometry(cell_fraction=0.4), 10.0) == "cell"  # no rbc_fraction recorded


def test_impossible_or_unknown_modes_are_refused():
    geometry = CropGeometry(cell_fraction=0.4)
    with pytest.raises(ConfigError, match="rbc_fraction"):
        crop_mode(geometry, 10.0, mode="scale")
    with pytest.raises(ConfigError, match="px_per_um"):
        crop_mode(CropGeometry(rbc_fraction=0.25), None, mode="scale")
    with pytest.raises(ConfigError, match="not one of"):
        crop_mode(geometry, None, mode="nucleus")


def test_measured_scale_is_none_until_red_cells_are_measured():
    detector = CellDetector()
    assert detector.measured_px_per_um is None  # the fallback scale is a guess, not a measurement
    detector.detect(np.full((480, 640, 3), (214, 210, 205), dtype=np.uint8))
    assert detector.measured_px_per_um is None
    frame, truth = render_field(seed=3, n_cells=1)
    detector.detect(frame)
    assert detector.measured_px_per_um == pytest.approx(truth["px_per_um"], rel=0.2)
    assert CellDetector(DetectorConfig(px_per_um=7.0)).measured_px_per_um == 7.0
