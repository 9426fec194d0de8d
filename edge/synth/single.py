"""Single-cell images like a scanner's crops: one white cell centred on a bed of red cells."""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from leukoedge.contract import RBC_DIAMETER_UM
from leukoedge.errors import SynthError
from leukoedge.synth.cells import KIND_LABELS, TCIA_CODES, WhiteCell, check_kind, sample_white_cell
from leukoedge.synth.field import Scene, cell_truth, place_red_cells, render_region
from leukoedge.synth.stain import finish, sample_optics, sample_stain, transmit

#: Pixels per micron of the AML-LMU 400 x 400 crops (a red cell is about a quarter of the width).
CELL_PX_PER_UM_400 = 13.3


def default_px_per_um(size: int) -> float:
    """The scale at which a ``size`` x ``size`` crop frames a cell like the AML-LMU images do."""
    return CELL_PX_PER_UM_400 * size / 400.0


def render_cell(
    kind: str,
    seed: int | np.random.Generator = 0,
    size: int = 400,
    px_per_um: float | None = None,
    stain: str = "mgg",
    rbc_coverage: float | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Render one white cell of ``kind`` near the centre of a ``size`` x ``size`` image.

    Without ``px_per_um`` the scale is that of the AML-LMU crops, varied by +-10 % per image as the
    real crops vary. Returns (RGB uint8 size x size x 3, truth) with truth = {"kind", "label",
    "tcia_code", "width", "height", "px_per_um", "center", "diameter_px", "bbox", "stain"}.
    """
    check_kind(kind)
    if not 16 <= int(size) <= 4096:
        raise SynthError(f"cell image size {size} is out of range (16 to 4096)")
    size = int(size)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    ppu = float(px_per_um) if px_per_um else default_px_per_um(size) * float(rng.uniform(0.9, 1.12))
    # Optics resolve about 0.2 um: above 8 px/um, render at half size and upscale (4x less work).
    work = size // 2 if ppu > 8.0 and size >= 64 else size
    factor = size / work
    scene = Scene(work, work, ppu / factor, sample_stain(rng, stain))
    jitter = rng.uniform(-0.03, 0.03, size=2) * work
    cell = sample_white_cell(rng, kind, work / 2 + jitter[0], work / 2 + jitter[1], scene.px_per_um)
    scene.white.append(WhiteCell(0, kind, cell.cx, cell.cy, cell.diameter_px, cell.seed))
    place_red_cells(rng, scene, rbc_coverage if rbc_coverage is not None else float(rng.uniform(0.3, 0.6)))
    optics = sample_optics(rng, scene.px_per_um, camera=False)
    rgb = finish(transmit(render_region(scene, 0, 0, work, work), scene.stain), optics, rng)
    if work != size:
        rgb = np.asarray(Image.fromarray(rgb).resize((size, size), Image.Resampling.BICUBIC), dtype=np.uint8)
    seen = cell_truth(scene.white[0], scene.boxes[0], 0, 0, work, work) or {}
    box = [min(size, int(round(v * factor))) for v in seen.get("bbox", [])] or None
    truth = {
        "kind": kind,
        "label": KIND_LABELS[kind],
        "tcia_code": TCIA_CODES[kind],
        "width": size,
        "height": size,
        "px_per_um": round(ppu, 4),
        "rbc_diameter_px": round(RBC_DIAMETER_UM * ppu, 2),
        "center": [round(cell.cx * factor, 2), round(cell.cy * factor, 2)],
        "diameter_px": round(cell.diameter_px * factor, 2),
        "bbox": box,
        "stain": stain,
    }
    return rgb, truth
