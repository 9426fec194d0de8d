"""Stain segmentation primitives for smear images: numpy and Pillow only, sized for a Raspberry Pi.

White-cell nuclei take up the basic (blue) dye of Romanowsky stains (May-Gruenwald-Giemsa, Wright)
and absorb green far more than blue, while red cells and the background do not. The stain channel
here is therefore the blue-to-green optical-density contrast, ``ln(B/G)`` minus the same for the
background colour, so it is independent of exposure and of the camera's white balance. Everything
else in this module (Otsu's threshold, binary morphology, run-based connected components, the
octagonal distance depth) works on small binary masks of a downscaled image.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from PIL import Image

from leukoedge.errors import ImageError

logger = logging.getLogger(__name__)

#: Range of the stain channel searched by Otsu's method (ln units of the B/G ratio).
STAIN_RANGE = (-0.5, 1.5)
#: ln(v) for every 8-bit value (0 counted as 1): optical densities by table look-up.
_LN = np.log(np.maximum(np.arange(256, dtype=np.float32), 1.0)).astype(np.float32)


def check_rgb(frame: object) -> np.ndarray:
    """The frame as an H x W x 3 uint8 array, or an :class:`ImageError` that says what is wrong."""
    if not isinstance(frame, np.ndarray):
        raise ImageError(f"expected a numpy H x W x 3 uint8 RGB array, got {type(frame).__name__}")
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ImageError(f"expected an H x W x 3 RGB array, got shape {frame.shape}")
    if frame.dtype != np.uint8:
        raise ImageError(f"expected uint8 RGB pixels (0-255), got dtype {frame.dtype}")
    if frame.shape[0] < 8 or frame.shape[1] < 8:
        raise ImageError(f"frame of {frame.shape[1]}x{frame.shape[0]} pixels is too small to search")
    return frame


def downscale(frame: np.ndarray, factor: int) -> np.ndarray:
    """Box-average the frame by an integer factor (Pillow's ``reduce``: fast, and it averages noise)."""
    if factor <= 1:
        return frame
    img = Image.fromarray(np.ascontiguousarray(frame), "RGB")
    return np.asarray(img.reduce(factor))


@dataclass(frozen=True)
class StainImage:
    """The stain and darkness channels of one (downscaled) image and its background colour."""

    stain: np.ndarray  # ln(B/G) - ln(B0/G0): > 0 where blue dye dominates (nuclei)
    density: np.ndarray  # ln(G0/G): green optical density, > 0 wherever anything absorbs (all cells)
    background: tuple[float, float, float]


def glass_colour(rgb: np.ndarray, step: int = 2) -> tuple[float, float, float]:
    """Median colour of the brightest tenth (by green) of every ``step``-th pixel: the empty glass.

    The median, not the mean, so a few saturated or dust pixels among the brightest do not shift the
    reference that every optical density is measured against; a sparse ``step`` is enough where only
    a rough reference is needed (the whole-cell test samples every 16th pixel).
    """
    sample = rgb[::step, ::step]
    g = sample[..., 1]
    hist = np.bincount(g.ravel(), minlength=256)
    cum = np.cumsum(hist[::-1])
    level = 255 - int(np.searchsorted(cum, 0.1 * g.size))
    bright = sample[g >= level]
    med = np.median(bright, axis=0)
    return float(med[0]), float(med[1]), float(med[2])


def stain_image(rgb: np.ndarray) -> StainImage:
    bg = glass_colour(rgb)
    ln_g = _LN[rgb[..., 1]]
    ln_b = _LN[rgb[..., 2]]
    ln_g0 = float(np.log(max(bg[1], 1.0)))
    ln_b0 = float(np.log(max(bg[2], 1.0)))
    stain = (ln_b - ln_g) - (ln_b0 - ln_g0)
    density = ln_g0 - ln_g
    return StainImage(stain, density, bg)


def otsu_threshold(values: np.ndarray, lo: float, hi: float, bins: int = 128) -> float:
    """Otsu's threshold of ``values`` over the range [lo, hi] (values outside are clipped)."""
    idx = np.clip(((values - lo) * (bins / (hi - lo))).astype(np.int32), 0, bins - 1)
    hist = np.bincount(idx.ravel(), minlength=bins).astype(np.float64)
    w0 = np.cumsum(hist)
    total = w0[-1]
    if total == 0:
        return hi
    centres = np.arange(bins, dtype=np.float64)
    m0 = np.cumsum(hist * centres)
    w1 = total - w0
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (m0[-1] * w0 - total * m0) ** 2 / (w0 * w1)
    between[~np.isfinite(between)] = 0.0
    k = int(np.argmax(between))
    return lo + (k + 1) * (hi - lo) / bins


def _spread(mask: np.ndarray, radius: int, grow: bool) -> np.ndarray:
    """Separable binary dilation (grow) or erosion of a mask by a (2r+1) square, by shifted copies.

    Shifting boolean arrays is several times faster than Pillow's rank filters at these sizes.
    Pixels beyond the border count as background for dilation and as foreground for erosion.
    """
    op = np.logical_or if grow else np.logical_and
    out = mask.copy()
    for axis in (0, 1):
        src = out.copy()
        n = src.shape[axis]
        for k in range(1, min(radius, n - 1) + 1):
            if axis == 0:
                op(out[k:], src[:-k], out=out[k:])
                op(out[:-k], src[k:], out=out[:-k])
            else:
                op(out[:, k:], src[:, :-k], out=out[:, k:])
                op(out[:, :-k], src[:, k:], out=out[:, :-k])
    return out


def dilate(mask: np.ndarray, size: int) -> np.ndarray:
    """Binary dilation by a size x size square (size odd; 1 returns the mask)."""
    if size <= 1:
        return mask
    return _spread(mask, size // 2, grow=True)


def erode(mask: np.ndarray, size: int) -> np.ndarray:
    """Binary erosion by a size x size square (size odd; 1 returns the mask)."""
    if size <= 1:
        return mask
    return _spread(mask, size // 2, grow=False)


def _erode_cross(mask: np.ndarray) -> np.ndarray:
    out = mask.copy()
    out[1:] &= mask[:-1]
    out[:-1] &= mask[1:]
    out[:, 1:] &= mask[:, :-1]
    out[:, :-1] &= mask[:, 1:]
    out[0] = out[-1] = False
    out[:, 0] = out[:, -1] = False
    return out


def octagon_depth(mask: np.ndarray, limit: int) -> np.ndarray:
    """How many alternating cross/square erosions each pixel survives: a near-isotropic distance map.

    Alternating the two 3x3 elements grows an octagon, so the depth of a disc's centre is close to
    its radius whatever its orientation (the square alone would give radius / sqrt 2 on diagonals).
    """
    depth = np.zeros(mask.shape, dtype=np.int16)
    current = mask
    for i in range(limit):
        current = _erode_cross(current) if i % 2 == 0 else erode(current, 3)
        if not current.any():
            break
        depth += current
    return depth


def runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Horizontal runs of True pixels: (row, x_start, x_end exclusive), in raster order."""
    m = mask.view(np.int8) if mask.dtype == np.bool_ else mask.astype(np.int8)
    edges = np.diff(m, axis=1, prepend=0, append=0)
    sr, sc = np.nonzero(edges == 1)
    _, ec = np.nonzero(edges == -1)
    return sr, sc, ec


def label_runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """8-connected labelling of a sparse binary mask by union-find over its runs.

    Returns the runs (row, x_start, x_end) and each run's component label (0..n-1). Cost grows with
    the number of runs, not pixels, which is what makes it cheap on a mask of a few nuclei.
    """
    rows, xs, xe = runs(mask)
    n = len(rows)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    row_list = rows.tolist()
    xs_list = xs.tolist()
    xe_list = xe.tolist()
    prev_start = prev_end = 0  # run index range of the previous row
    i = 0
    while i < n:
        r = row_list[i]
        j = i
        while j < n and row_list[j] == r:
            j += 1
        if prev_end > prev_start and row_list[prev_start] == r - 1:
            p = prev_start
            for k in range(i, j):
                while p < prev_end and xe_list[p] < xs_list[k]:  # ends before k starts (8-conn)
                    p += 1
                q = p
                while q < prev_end and xs_list[q] <= xe_list[k]:
                    a, b = find(k), find(q)
                    if a != b:
                        parent[max(a, b)] = min(a, b)
                    q += 1
        prev_start, prev_end = i, j
        i = j
    roots = np.array([find(k) for k in range(n)], dtype=np.int64)
    _, labels = np.unique(roots, return_inverse=True)
    return rows, xs, xe, labels.reshape(-1)


def paint_runs(shape: tuple[int, int], rows: np.ndarray, xs: np.ndarray, xe: np.ndarray) -> np.ndarray:
    """A binary mask with the given runs set (vectorised: a +1/-1 edge image and a running sum)."""
    h, w = shape
    edges = np.zeros((h, w + 1), dtype=np.int32)
    np.add.at(edges, (rows, xs), 1)
    np.add.at(edges, (rows, xe), -1)
    return np.cumsum(edges, axis=1)[:, :w] > 0


def run_owner(
    inner: tuple[np.ndarray, np.ndarray], outer: tuple[np.ndarray, np.ndarray], width: int
) -> np.ndarray:
    """For runs (rows, starts) of a mask, the index of the run of a superset mask that contains each."""
    keys = inner[0].astype(np.int64) * (width + 1) + inner[1]
    outer_keys = outer[0].astype(np.int64) * (width + 1) + outer[1]
    return np.searchsorted(outer_keys, keys, side="right") - 1


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """The mask with every enclosed gap filled (background not connected to the image border)."""
    rows, xs, xe, labels = label_runs(~mask)
    if len(rows) == 0:
        return mask
    h, w = mask.shape
    n = int(labels.max()) + 1
    outside = np.zeros(n, dtype=bool)
    border = (rows == 0) | (rows == h - 1) | (xs == 0) | (xe == w)
    outside[labels[border]] = True
    hole = ~outside[labels]
    if not hole.any():
        return mask
    return mask | paint_runs(mask.shape, rows[hole], xs[hole], xe[hole])
