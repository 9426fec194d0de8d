"""Morphology of the synthetic cells: blasts, neutrophils, lymphocytes, monocytes and red cells.

Each white cell is drawn from its own seed, in a patch around its centre, as optical density
(see :mod:`leukoedge.synth.stain`), so the same cell looks the same whichever window of a slide
is rendered. Sizes are in microns and scale with pixels per micron.

The features follow the haematology atlas description of each kind:

- blast (myeloblast): large cell, round or oval nucleus filling most of it (high N:C ratio),
  fine even chromatin, 1-3 paler nucleoli, a thin rim of basophilic (blue) cytoplasm that is
  often wider on one side;
- neutrophil (segmented): 3-5 dark, clumped lobes joined by thin strands, lots of pale
  pink-lilac granular cytoplasm;
- lymphocyte: about the size of a red cell, round dense dark nucleus, scant sky-blue cytoplasm;
- monocyte: the largest, kidney-shaped or folded nucleus with lacy chromatin, abundant grey-blue
  cytoplasm with a few vacuoles.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from leukoedge.contract import CLASS_NAMES, POSITIVE_CLASS, RBC_DIAMETER_UM
from leukoedge.errors import SynthError
from leukoedge.synth.shapes import (
    Patch,
    add_patch,
    make_patch,
    radial_profile,
    smooth_noise,
    soft_blob,
    soft_ellipse,
    soft_segment,
)
from leukoedge.synth.stain import Stain

#: The white-cell kinds the synthetic microscope draws.
KINDS: tuple[str, ...] = ("blast", "neutrophil", "lymphocyte", "monocyte")
_NEGATIVE = next(c for c in CLASS_NAMES if c != POSITIVE_CLASS)
#: kind -> class label of the model (blasts are the positive class).
KIND_LABELS: dict[str, str] = {k: (POSITIVE_CLASS if k == "blast" else _NEGATIVE) for k in KINDS}
#: kind -> folder code of the TCIA AML-Cytomorphology release (MYO = myeloblast, NGS = segmented
#: neutrophil, LYT = typical lymphocyte, MON = monocyte).
TCIA_CODES: dict[str, str] = {"blast": "MYO", "neutrophil": "NGS", "lymphocyte": "LYT", "monocyte": "MON"}
#: kind -> (min, max) cell diameter in microns.
DIAMETER_UM: dict[str, tuple[float, float]] = {
    "blast": (12.0, 16.5),
    "neutrophil": (12.5, 15.0),
    "lymphocyte": (7.2, 9.5),
    "monocyte": (14.0, 18.0),
}


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise SynthError(f"unknown cell kind {kind!r}; choose from {', '.join(KINDS)}")
    return kind


@dataclass(frozen=True)
class WhiteCell:
    """One white cell of a scene: where it is (scene pixels), how big, and the seed of its looks."""

    id: int
    kind: str
    cx: float
    cy: float
    diameter_px: float
    seed: int


@dataclass(frozen=True)
class RedCell:
    """One red cell (or, with ``platelet``, a platelet): a disc with a paler centre."""

    cx: float
    cy: float
    a: float
    b: float
    angle: float
    pallor: float
    density: float
    platelet: bool = False


def sample_white_cell(
    rng: np.random.Generator, kind: str, cx: float, cy: float, px_per_um: float, cell_id: int = 0
) -> WhiteCell:
    lo, hi = DIAMETER_UM[check_kind(kind)]
    diameter = float(rng.uniform(lo, hi)) * px_per_um
    return WhiteCell(cell_id, kind, float(cx), float(cy), diameter, int(rng.integers(0, 2**31 - 1)))


def sample_red_cell(rng: np.random.Generator, cx: float, cy: float, px_per_um: float) -> RedCell:
    r = 0.5 * RBC_DIAMETER_UM * px_per_um * rng.uniform(0.92, 1.08)
    squash = rng.uniform(0.0, 0.08) if rng.random() < 0.85 else rng.uniform(0.08, 0.2)
    return RedCell(
        float(cx),
        float(cy),
        float(r * (1 + squash / 2)),
        float(r * (1 - squash / 2)),
        float(rng.uniform(0, np.pi)),
        float(rng.uniform(0.35, 0.75)),
        float(rng.uniform(0.85, 1.1)),
    )


def sample_platelet(rng: np.random.Generator, cx: float, cy: float, px_per_um: float) -> RedCell:
    r = rng.uniform(0.6, 1.3) * px_per_um
    b = r * rng.uniform(0.6, 1.0)
    angle, density = rng.uniform(0, np.pi), rng.uniform(0.5, 1.0)
    return RedCell(float(cx), float(cy), float(r), float(b), float(angle), 0.0, float(density), platelet=True)


def draw_red_cell(
    canvas: np.ndarray, ox: int, oy: int, cell: RedCell, stain: Stain, px_per_um: float
) -> None:
    """Add one red cell (thick rim, pale centre, soft edge) to an optical-density canvas."""
    reach = max(cell.a, cell.b) + 2
    h, w = canvas.shape[:2]
    if not (ox - reach < cell.cx < ox + w + reach and oy - reach < cell.cy < oy + h + reach):
        return
    p = make_patch(cell.cx, cell.cy, reach)
    c, s = np.float32(np.cos(cell.angle)), np.float32(np.sin(cell.angle))
    u = (p.x * c + p.y * s) / np.float32(cell.a)
    v = (-p.x * s + p.y * c) / np.float32(cell.b)
    d2 = u * u + v * v
    edge = max(0.8, 0.12 * px_per_um) / min(cell.a, cell.b)
    d = np.sqrt(d2)
    disc = np.clip((1.0 - d) / edge + 0.5, 0.0, 1.0)
    if cell.platelet:
        add_patch(canvas, ox, oy, p.x0, p.y0, (disc * cell.density)[:, :, None] * stain.od["platelet"])
        return
    # Biconcave disc: a flat pale centre and a thicker, darker rim.
    hollow = np.clip(1.0 - d2 / 0.5, 0.0, 1.0)
    rim = (d - 0.8) / 0.13
    thickness = 1.0 - cell.pallor * hollow * hollow + 0.2 * np.exp(-rim * rim)
    add_patch(canvas, ox, oy, p.x0, p.y0, (disc * thickness * cell.density)[:, :, None] * stain.od["rbc"])


@dataclass
class _Ctx:
    """What every kind's drawing function needs: patch, radius, scale, stain, random stream."""

    rng: np.random.Generator
    patch: Patch
    radius: float
    ppu: float
    stain: Stain

    @property
    def edge(self) -> float:
        return max(0.8, 0.1 * self.ppu)

    def noise(self, feature_um: float) -> np.ndarray:
        return smooth_noise(self.rng, self.patch.shape, feature_um * self.ppu)

    def outline(self, irregularity: float, lumpiness_um: float) -> np.ndarray:
        """Soft mask of the cell's outer membrane."""
        wobble = self.noise(2.0) * np.float32(lumpiness_um * self.ppu)
        prof = radial_profile(self.rng, irregularity)
        return soft_blob(self.patch.x, self.patch.y, self.radius, self.edge, prof, wobble)

    def membrane(self, cell: np.ndarray, width_um: float) -> np.ndarray:
        """Thin shell just inside the outline (a darker cytoplasm border)."""
        inner = soft_blob(self.patch.x, self.patch.y, self.radius - width_um * self.ppu, self.edge * 3)
        return cell * (1.0 - inner)

    def compose(self, cyto: np.ndarray, cyto_od: str, nuc: np.ndarray, nuc_od: str) -> np.ndarray:
        od = cyto[:, :, None] * self.stain.od[cyto_od]
        od += nuc[:, :, None] * self.stain.od[nuc_od]
        return od


def _eccentric(ctx: _Ctx, inner_radius: float, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates relative to a nucleus centre pushed off the cell centre in a random direction."""
    angle = ctx.rng.uniform(0, 2 * np.pi)
    off = (ctx.radius - inner_radius) * ctx.rng.uniform(lo, hi)
    return ctx.patch.x - np.float32(off * np.cos(angle)), ctx.patch.y - np.float32(off * np.sin(angle))


def _spot(x: np.ndarray, y: np.ndarray, rho: float, phi: float, radius: float, edge: float) -> np.ndarray:
    """Soft disc of ``radius`` at polar position (rho, phi) of the given coordinates."""
    return soft_blob(x - np.float32(rho * np.cos(phi)), y - np.float32(rho * np.sin(phi)), radius, edge)


def _blast(ctx: _Ctx) -> tuple[np.ndarray, np.ndarray]:
    rng = ctx.rng
    cell = ctx.outline(rng.uniform(0.03, 0.18), 0.15)
    # Most blasts are nearly all nucleus; some show a crescent of cytoplasm on one side.
    rn = ctx.radius * (rng.uniform(0.82, 0.94) if rng.random() < 0.8 else rng.uniform(0.72, 0.82))
    nx, ny = _eccentric(ctx, rn, 0.15, 0.9)
    wobble = ctx.noise(3.0) * np.float32(0.15 * ctx.ppu)
    nuc = soft_blob(nx, ny, rn, ctx.edge, radial_profile(rng, rng.uniform(0.04, 0.14)), wobble) * cell
    if rng.random() < 0.25:  # a shallow cleft, as in some myeloblasts
        phi = rng.uniform(0, 2 * np.pi)
        nuc *= 1.0 - _spot(nx, ny, rn * 1.05, phi, rn * rng.uniform(0.2, 0.35), ctx.edge * 2)
    chromatin = 1.0 + 0.10 * ctx.noise(0.3) + 0.07 * ctx.noise(1.0)
    for _ in range(int(rng.choice([1, 2, 3], p=[0.4, 0.4, 0.2]))):
        rho, phi = rn * 0.55 * np.sqrt(rng.random()), rng.uniform(0, 2 * np.pi)
        r = rng.uniform(0.45, 0.85) * ctx.ppu
        spot = _spot(nx, ny, rho, phi, r, ctx.edge * 2)
        chromatin *= 1.0 - rng.uniform(0.3, 0.5) * spot
    cyto = (cell + 0.6 * ctx.membrane(cell, 0.5)) * (1.0 - nuc)
    return ctx.compose(cyto, "cyto_blast", nuc * chromatin, "nucleus_blast"), cell


def _neutrophil(ctx: _Ctx) -> tuple[np.ndarray, np.ndarray]:
    rng, x, y, ppu = ctx.rng, ctx.patch.x, ctx.patch.y, ctx.ppu
    cell = ctx.outline(0.04, 0.1)
    scale = ctx.radius / (6.0 * ppu)
    n = int(rng.choice([3, 4, 5], p=[0.4, 0.4, 0.2]))
    rho = ctx.radius * rng.uniform(0.45, 0.55)
    step = min(rng.uniform(1.15, 1.5), 5.2 / (n - 1)) * rng.choice([-1, 1])
    start = rng.uniform(0, 2 * np.pi)
    size = ppu * scale / np.sqrt(n / 3.0)
    centres = []
    nuc = np.zeros(ctx.patch.shape, dtype=np.float32)
    for i in range(n):
        t = start + step * i + rng.normal(0, 0.1)
        rr = rho * rng.uniform(0.85, 1.1)
        cx, cy = rr * np.cos(t), rr * np.sin(t)
        centres.append((cx, cy))
        a, b = rng.uniform(2.2, 2.9) * size, rng.uniform(1.6, 2.1) * size
        lobe = soft_ellipse(
            x - np.float32(cx), y - np.float32(cy), a, b, t + np.pi / 2 + rng.normal(0, 0.3), ctx.edge * 4
        )
        np.maximum(nuc, lobe, out=nuc)
    for p, q in zip(centres[:-1], centres[1:], strict=True):
        strand = soft_segment(x, y, p, q, rng.uniform(0.15, 0.3) * ppu, ctx.edge)
        np.maximum(nuc, strand, out=nuc)
    nuc = np.clip((nuc - 0.5) * 4.0 + 0.5 + 0.6 * ctx.noise(0.8), 0.0, 1.0) * cell
    chromatin = 1.0 + 0.16 * ctx.noise(0.5) + 0.06 * ctx.noise(0.25)
    granules = np.maximum(ctx.noise(0.18) - 0.5, 0.0) * np.float32(0.25)
    cyto = cell * (1.0 + 0.15 * ctx.noise(1.5) + 0.3 * ctx.membrane(cell, 0.3)) * (1.0 - nuc)
    od = ctx.compose(cyto, "cyto_neutrophil", nuc * chromatin, "nucleus_neutrophil")
    od += (granules * cell * (1.0 - nuc))[:, :, None] * ctx.stain.od["granule"]
    return od, cell


def _lymphocyte(ctx: _Ctx) -> tuple[np.ndarray, np.ndarray]:
    rng = ctx.rng
    cell = ctx.outline(0.04, 0.08)
    rn = ctx.radius * rng.uniform(0.78, 0.9)
    nx, ny = _eccentric(ctx, rn, 0.3, 1.0)
    nuc = soft_blob(nx, ny, rn, ctx.edge, radial_profile(rng, 0.07)) * cell
    chromatin = 1.0 + 0.2 * ctx.noise(0.8) + 0.06 * ctx.noise(0.3)
    cyto = (cell + 0.3 * ctx.membrane(cell, 0.4)) * (1.0 - nuc)
    return ctx.compose(cyto, "cyto_lymphocyte", nuc * chromatin, "nucleus_lymphocyte"), cell


def _monocyte(ctx: _Ctx) -> tuple[np.ndarray, np.ndarray]:
    rng, r, ppu = ctx.rng, ctx.radius, ctx.ppu
    cell = ctx.outline(0.08, 0.25)
    a, b = r * rng.uniform(0.55, 0.68), r * rng.uniform(0.4, 0.5)
    angle = rng.uniform(0, 2 * np.pi)
    nx, ny = _eccentric(ctx, a, 0.1, 0.5)
    ex, ey = np.cos(angle + np.pi / 2), np.sin(angle + np.pi / 2)
    nuc = soft_ellipse(nx, ny, a, b, angle, ctx.edge)
    notch_at = b * rng.uniform(0.95, 1.3)
    notch_r = r * rng.uniform(0.18, 0.3)
    notch = soft_blob(nx - np.float32(notch_at * ex), ny - np.float32(notch_at * ey), notch_r, ctx.edge * 2)
    nuc = np.clip(nuc * (1.0 - notch) + 0.6 * ctx.noise(1.2) * nuc * (1 - nuc), 0.0, 1.0) * cell
    chromatin = 1.0 + 0.18 * ctx.noise(0.45) + 0.08 * ctx.noise(1.2)
    cyto = cell * (1.0 + 0.12 * ctx.noise(0.5) + 0.25 * ctx.membrane(cell, 0.4))
    for _ in range(int(rng.integers(0, 5))):
        rho, phi = r * rng.uniform(0.5, 0.85), rng.uniform(0, 2 * np.pi)
        vac = _spot(ctx.patch.x, ctx.patch.y, rho, phi, rng.uniform(0.3, 0.7) * ppu, ctx.edge)
        cyto *= 1.0 - 0.7 * vac
    cyto *= 1.0 - nuc
    return ctx.compose(cyto, "cyto_monocyte", nuc * chromatin, "nucleus_monocyte"), cell


_DRAW: dict[str, Callable[[_Ctx], tuple[np.ndarray, np.ndarray]]] = {
    "blast": _blast,
    "neutrophil": _neutrophil,
    "lymphocyte": _lymphocyte,
    "monocyte": _monocyte,
}


def draw_white_cell(
    canvas: np.ndarray | None, ox: int, oy: int, cell: WhiteCell, stain: Stain, px_per_um: float
) -> list[int]:
    """Add a white cell to an optical-density canvas whose top-left is scene pixel (ox, oy).

    Returns the cell's bounding box ``[x0, y0, x1, y1]`` in scene pixels (x1, y1 exclusive), taken
    from the drawn outline, whether or not the cell overlaps the canvas. ``canvas=None`` only
    computes the box.
    """
    radius = cell.diameter_px / 2
    patch = make_patch(cell.cx, cell.cy, radius * 1.25 + 2)
    ctx = _Ctx(np.random.default_rng(cell.seed), patch, radius, px_per_um, stain)
    od, mask = _DRAW[cell.kind](ctx)
    if canvas is not None:
        add_patch(canvas, ox, oy, patch.x0, patch.y0, od)
    rows = np.flatnonzero(mask.max(axis=1) >= 0.5)
    cols = np.flatnonzero(mask.max(axis=0) >= 0.5)
    if rows.size == 0:
        x, y = int(round(cell.cx)), int(round(cell.cy))
        return [x, y, x + 1, y + 1]
    return [
        patch.x0 + int(cols[0]),
        patch.y0 + int(rows[0]),
        patch.x0 + int(cols[-1]) + 1,
        patch.y0 + int(rows[-1]) + 1,
    ]
