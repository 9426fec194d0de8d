"""A white cell is whole when its cytoplasm, not only its nucleus, is clear of the frame border."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from leukoedge.errors import ImageError
from leukoedge.synth import StageSequence
from leukoedge.vision.cellextent import ExtentConfig, cell_extent, extent_mask, whole_flags
from leukoedge.vision.detect import CellDetector
from leukoedge.vision.segment import glass_colour

W, H = 640, 480
GLASS = (235, 227, 224)
CYTOPLASM = (190, 160, 210)  # lilac
NUCLEUS = (120, 30, 170)
RED_CELL = (205, 160, 185)  # salmon pink


@dataclass(frozen=True)
class Det:
    bbox: tuple[int, int, int, int]
    center: tuple[float, float]
    diameter: float
    touches_edge: bool = False


def _disc(img: np.ndarray, cx: float, cy: float, r: float, colour: tuple[int, int, int]) -> None:
    yy, xx = np.mgrid[: img.shape[0], : img.shape[1]]
    img[(xx + 0.5 - cx) ** 2 + (yy + 0.5 - cy) ** 2 <= r * r] = colour


def _cell(img: np.ndarray, cx: float, cy: float, r_cell: float, r_nucleus: float) -> Det:
    """Paint a white cell (lilac cytoplasm, purple nucleus); its detection is the nucleus."""
    _disc(img, cx, cy, r_cell, CYTOPLASM)
    _disc(img, cx, cy, r_nucleus, NUCLEUS)
    box = (
        int(cx - r_nucleus),
        int(cy - r_nucleus),
        int(np.ceil(cx + r_nucleus)),
        int(np.ceil(cy + r_nucleus)),
    )
    return Det(box, (cx, cy), 2 * r_nucleus)


def _glass() -> np.ndarray:
    img = np.empty((H, W, 3), np.uint8)
    img[:] = GLASS
    return img


@pytest.mark.parametrize(("gap", "whole"), [(6, True), (3, True), (-1, False), (-8, False)])
def test_the_cytoplasm_decides_not_the_nucleus(gap, whole):
    """A large-nucleus cell just clear of the edge is whole; one whose rim the edge cuts is not."""
    img = _glass()
    r_cell = 60.0
    det = _cell(img, W - gap - r_cell, 200.0, r_cell, 45.0)
    assert whole_flags(img, [det]) == [whole]
    # the nucleus is clear of the edge in every case, and nearer than 0.25 of its diameter:
    # a margin around the stained region can't tell these cells apart
    assert 7 <= W - det.bbox[2] < 0.25 * det.diameter


def test_red_cells_and_touching_white_cells_do_not_extend_the_cell():
    img = _glass()
    _disc(img, 600.0, 100.0, 50.0, RED_CELL)  # a red cell between the white cell and the edge
    a = _cell(img, 510.0, 100.0, 55.0, 35.0)
    b = _cell(img, 300.0, 445.0, 50.0, 30.0)  # cut by the bottom edge, touching c
    c = _cell(img, 300.0, 345.0, 52.0, 35.0)
    assert whole_flags(img, [a, b, c]) == [True, False, True]
    x0, y0, x1, y1 = cell_extent(img, a.bbox, a.diameter, glass_colour(img))
    assert abs(x1 - 565) <= 2 and abs(x0 - 455) <= 2  # the cytoplasm, not the red cell


def test_flagged_and_far_detections_need_no_measurement():
    img = _glass()
    far = _cell(img, 320.0, 240.0, 40.0, 30.0)
    cut = Det((0, 10, 40, 60), (20.0, 35.0), 45.0, touches_edge=True)
    assert whole_flags(img, [far, cut]) == [True, False]
    assert whole_flags(img, []) == []


def test_colour_test_tells_cytoplasm_from_red_cells_and_glass():
    img = np.array([[GLASS, CYTOPLASM, NUCLEUS, RED_CELL]], np.uint8).repeat(8, axis=0).repeat(8, axis=1)
    mask = extent_mask(img, glass_colour(img, step=1))
    assert mask[:, 8:24].all() and not mask[:, :8].any() and not mask[:, 24:].any()


def test_bad_frames_get_a_clear_error():
    with pytest.raises(ImageError):
        whole_flags(np.zeros((H, W), np.uint8), [])


def test_agrees_with_the_synthetic_truth_near_the_edge():
    """On a rendered moving stage, cells near the edge are judged whole or cut as the truth says.

    Cells within 2 px of the border either way are left out: a blurred rim one pixel inside or
    outside the frame looks the same.
    """
    sequence = StageSequence(W, H, seed=3, n_cells=48, n_frames=None)
    detector = CellDetector()
    config = ExtentConfig()
    agree = total = 0
    for i in range(0, 600, 5):
        rgb, truth = sequence.frame(i)
        dets = detector.detect(rgb)
        for d, whole in zip(dets, whole_flags(rgb, dets, config), strict=True):
            cells = [c for c in truth["cells"] if _inside(d.center, c["bbox"])]
            if len(cells) != 1 or d.touches_edge:
                continue
            fx0, fy0, fx1, fy1 = cells[0]["bbox_full"]
            gap = min(fx0, fy0, W - fx1, H - fy1)
            if abs(gap) <= 2 or gap > 40:
                continue
            total += 1
            agree += whole == (gap >= 0)
    assert total >= 60
    assert agree >= 0.95 * total, (agree, total)


def _inside(p: tuple[float, float], box: list[int]) -> bool:
    return box[0] <= p[0] <= box[2] and box[1] <= p[1] <= box[3]
