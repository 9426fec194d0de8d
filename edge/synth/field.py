"""Scenes of many cells, and whole camera fields rendered from them.

A :class:`Scene` is a list of white cells, red cells and platelets at fixed scene coordinates
plus one stain. Any window of it can be rendered (:func:`render_region`); a camera field is a
scene the size of the frame, and a stage slide (:mod:`leukoedge.synth.stage`) is a big scene
rendered once in strips.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from leukoedge.contract import RBC_DIAMETER_UM
from leukoedge.errors import SynthError
from leukoedge.synth.cells import (
    KIND_LABELS,
    KINDS,
    RedCell,
    WhiteCell,
    check_kind,
    draw_red_cell,
    draw_white_cell,
    sample_platelet,
    sample_red_cell,
    sample_white_cell,
)
from leukoedge.synth.stain import Stain, finish, sample_optics, sample_stain, transmit, vignette_map

logger = logging.getLogger(__name__)

#: Default scale of whole fields: a red cell is 75 pixels, a neutrophil about 120.
FIELD_PX_PER_UM = 10.0


@dataclass
class Scene:
    """Cells at fixed scene coordinates (pixels) with one stain."""

    width: int
    height: int
    px_per_um: float
    stain: Stain
    white: list[WhiteCell] = field(default_factory=list)
    red: list[RedCell] = field(default_factory=list)
    boxes: dict[int, list[int]] = field(default_factory=dict)


def place_white_cells(
    rng: np.random.Generator, scene: Scene, kinds: Sequence[str], inside: bool, first_id: int = 0
) -> None:
    """Put white cells at random non-overlapping places; ``inside`` keeps each wholly in the scene."""
    gap = 1.0 * scene.px_per_um
    for kind in kinds:
        for _ in range(200):
            cell = sample_white_cell(rng, kind, 0, 0, scene.px_per_um, first_id + len(scene.white))
            r = cell.diameter_px / 2 * 1.15 if inside else 0.0
            if 2 * r >= min(scene.width, scene.height):
                break
            cx, cy = rng.uniform(r, scene.width - r), rng.uniform(r, scene.height - r)
            if all(
                np.hypot(cx - o.cx, cy - o.cy) > (cell.diameter_px + o.diameter_px) / 2 + gap
                for o in scene.white
            ):
                scene.white.append(
                    WhiteCell(cell.id, kind, float(cx), float(cy), cell.diameter_px, cell.seed)
                )
                break
        else:
            logger.warning("no room for another %s in a %dx%d scene", kind, scene.width, scene.height)


def place_red_cells(rng: np.random.Generator, scene: Scene, coverage: float) -> None:
    """Scatter red cells to cover about ``coverage`` of the area, some touching or overlapping.

    Red cells keep out of white cells (a little overlap at the rims is allowed), and a spatial
    grid keeps placement linear in the number of cells, so big slides lay out quickly.
    """
    ppu = scene.px_per_um
    r = 0.5 * RBC_DIAMETER_UM * ppu
    target = int(coverage * (scene.width + 2 * r) * (scene.height + 2 * r) / (np.pi * r * r))
    grid: dict[tuple[int, int], list[tuple[float, float]]] = {}
    step = 2 * r
    candidates = rng.uniform(0, 1, size=(target * 4, 3))
    for u, v, w in candidates:
        if len(scene.red) >= target:
            break
        cx, cy = -r + u * (scene.width + 2 * r), -r + v * (scene.height + 2 * r)
        spacing = 2 * r * (0.65 + 0.3 * w if w < 0.2 else 0.97 + 0.15 * w)
        if any(np.hypot(cx - o.cx, cy - o.cy) < o.diameter_px / 2 + 0.8 * r for o in scene.white):
            continue
        gx, gy = int(cx // step), int(cy // step)
        near = (p for dx in (-1, 0, 1) for dy in (-1, 0, 1) for p in grid.get((gx + dx, gy + dy), ()))
        if any((cx - px) ** 2 + (cy - py) ** 2 < spacing * spacing for px, py in near):
            continue
        grid.setdefault((gx, gy), []).append((cx, cy))
        scene.red.append(sample_red_cell(rng, cx, cy, ppu))
    for _ in range(int(len(scene.red) / 15 * rng.uniform(0.3, 1.5))):
        scene.red.append(sample_platelet(rng, rng.uniform(0, scene.width), rng.uniform(0, scene.height), ppu))


def render_region(scene: Scene, x0: int, y0: int, width: int, height: int) -> np.ndarray:
    """Optical density (height x width x 3, float32) of a window of the scene.

    Also records each white cell's bounding box in ``scene.boxes`` (scene coordinates).
    """
    canvas = np.zeros((height, width, 3), dtype=np.float32)
    ppu = scene.px_per_um
    for rbc in scene.red:
        draw_red_cell(canvas, x0, y0, rbc, scene.stain, ppu)
    for cell in scene.white:
        reach = cell.diameter_px * 0.65 + 2
        hit = x0 - reach < cell.cx < x0 + width + reach and y0 - reach < cell.cy < y0 + height + reach
        if hit or cell.id not in scene.boxes:
            scene.boxes[cell.id] = draw_white_cell(canvas if hit else None, x0, y0, cell, scene.stain, ppu)
    return canvas


def cell_truth(
    cell: WhiteCell, box: list[int], ox: int, oy: int, width: int, height: int
) -> dict[str, Any] | None:
    """Ground truth of one white cell seen through a window at (ox, oy); None when not visible.

    ``bbox`` is clipped to the window, ``bbox_full`` is not; both are [x0, y0, x1, y1] in window
    pixels with x1, y1 exclusive. ``cut_by_edge`` says the window cuts the cell.
    """
    fx0, fy0, fx1, fy1 = box[0] - ox, box[1] - oy, box[2] - ox, box[3] - oy
    cx0, cy0, cx1, cy1 = max(fx0, 0), max(fy0, 0), min(fx1, width), min(fy1, height)
    if cx0 >= cx1 or cy0 >= cy1:
        return None
    full_area = (fx1 - fx0) * (fy1 - fy0)
    return {
        "id": cell.id,
        "kind": cell.kind,
        "label": KIND_LABELS[cell.kind],
        "bbox": [cx0, cy0, cx1, cy1],
        "bbox_full": [fx0, fy0, fx1, fy1],
        "center": [round(cell.cx - ox, 2), round(cell.cy - oy, 2)],
        "diameter_px": round(cell.diameter_px, 2),
        "cut_by_edge": bool(fx0 < 0 or fy0 < 0 or fx1 > width or fy1 > height),
        "visible_fraction": round((cx1 - cx0) * (cy1 - cy0) / full_area, 4),
    }


def _check_size(width: int, height: int) -> None:
    if width < 16 or height < 16 or width * height > 64_000_000:
        raise SynthError(f"image size {width}x{height} is out of range (16 to 64 Mpixel)")


def render_field(
    width: int = 640,
    height: int = 480,
    seed: int | np.random.Generator = 0,
    n_cells: int = 3,
    kinds: Sequence[str] | None = None,
    px_per_um: float = FIELD_PX_PER_UM,
    allow_edge_cells: bool = True,
    rbc_coverage: float | None = None,
    stain: str = "mgg",
    camera: bool = True,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Render one camera field with white cells of known kinds and places among many red cells.

    ``kinds`` gives the kind of each white cell in order (then ``n_cells`` is ignored); by default
    ``n_cells`` kinds are drawn uniformly from :data:`KINDS`. With ``allow_edge_cells`` a cell's
    centre may lie anywhere in the frame, so some cells are cut by the edge (flagged in the truth).
    ``camera`` adds vignetting, colour cast, defocus and sensor noise drawn from the seed.

    Returns (RGB uint8 H x W x 3, truth) with truth = {"width", "height", "px_per_um",
    "rbc_diameter_px", "stain", "optics", "cells": [{"id", "kind", "label", "bbox", "bbox_full",
    "center", "diameter_px", "cut_by_edge", "visible_fraction"}]}.
    """
    _check_size(width, height)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    if kinds is None:
        kinds = [KINDS[i] for i in rng.integers(0, len(KINDS), size=n_cells)]
    kinds = [check_kind(k) for k in kinds]
    scene = Scene(width, height, float(px_per_um), sample_stain(rng, stain))
    place_white_cells(rng, scene, kinds, inside=not allow_edge_cells)
    place_red_cells(rng, scene, rbc_coverage if rbc_coverage is not None else float(rng.uniform(0.3, 0.6)))
    optics = sample_optics(rng, px_per_um, camera=camera)
    od = render_region(scene, 0, 0, width, height)
    rgb = finish(transmit(od, scene.stain, vignette_map(height, width, optics)), optics, rng)
    cells = [cell_truth(c, scene.boxes[c.id], 0, 0, width, height) for c in scene.white]
    truth = {
        "width": width,
        "height": height,
        "px_per_um": float(px_per_um),
        "rbc_diameter_px": round(RBC_DIAMETER_UM * px_per_um, 2),
        "stain": stain,
        "optics": optics.to_dict(),
        "cells": [c for c in cells if c is not None],
    }
    return rgb, truth
