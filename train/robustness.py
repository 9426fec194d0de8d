"""How the blast decision holds when held-out images look like another microscope's.

Each perturbation family changes the test split's model inputs the way microscopes differ, at a few
strengths, and the blast decision is scored again at the run's operating threshold (never
re-chosen): blast sensitivity and the mean specificity over the normal types present (for a
binary model, the specificity). Strength 0 is the unperturbed split.

- ``stain``: the stain's colour, each channel's optical density scaled by (1 + s, 1, 1 - s)
  (a redder or bluer May-Gruenwald-Giemsa);
- ``blur``: a Gaussian of s pixels of the model input (focus, a cheaper objective);
- ``scale``: zoom by s about the centre, the border reflected (magnification, camera pixels, a
  ruler reading off);
- ``jpeg``: JPEG compression at quality s.

Perturbations work on the 64 px model inputs with numpy and Pillow, deterministically.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

#: family -> strengths; the first is no change.
FAMILIES: dict[str, tuple[float, ...]] = {
    "stain": (0.0, 0.1, 0.2, 0.3, -0.1, -0.2, -0.3),
    "blur": (0.0, 0.5, 1.0, 1.5, 2.0),
    "scale": (1.0, 0.8, 0.9, 1.1, 1.2),
    "jpeg": (100.0, 80.0, 60.0, 40.0, 20.0),
}


def _stain(x: np.ndarray, s: float) -> np.ndarray:
    od = -np.log(np.clip(x.astype(np.float64), 1.0, 255.0) / 255.0)
    out = 255.0 * np.exp(-od * np.array([1 + s, 1.0, 1 - s]))
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def _each(x: np.ndarray, fn: Callable[[Image.Image], Image.Image]) -> np.ndarray:
    return np.stack([np.asarray(fn(Image.fromarray(img)).convert("RGB")) for img in x])


def _blur(x: np.ndarray, s: float) -> np.ndarray:
    return _each(x, lambda im: im.filter(ImageFilter.GaussianBlur(s)))


def _zoom(x: np.ndarray, s: float) -> np.ndarray:
    size = x.shape[1]
    pad = size // 2
    padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")
    half = size / (2.0 * s)
    c = padded.shape[1] / 2.0
    box = (c - half, c - half, c + half, c + half)
    return _each(padded, lambda im: im.resize((size, size), Image.BILINEAR, box=box))


def _jpeg(x: np.ndarray, q: float) -> np.ndarray:
    def once(im: Image.Image) -> Image.Image:
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=int(q))
        return Image.open(io.BytesIO(buf.getvalue()))

    return _each(x, once)


PERTURB: dict[str, Callable[[np.ndarray, float], np.ndarray]] = {
    "stain": _stain,
    "blur": _blur,
    "scale": _zoom,
    "jpeg": _jpeg,
}
_IDENTITY = {"stain": 0.0, "blur": 0.0, "scale": 1.0, "jpeg": 100.0}


def perturb(x: np.ndarray, family: str, strength: float) -> np.ndarray:
    """The images of ``x`` (N x size x size x 3 uint8) perturbed; strength 0 / 1 / 100 returns them."""
    if strength == _IDENTITY[family]:
        return x
    return PERTURB[family](x, strength)


def robustness(
    p_blast: Callable[[np.ndarray], np.ndarray],
    x: np.ndarray,
    y: np.ndarray,
    blast_indices: Sequence[int],
    threshold: float,
    families: dict[str, tuple[float, ...]] | None = None,
) -> dict[str, Any]:
    """Blast sensitivity and mean normal-type specificity per family and strength."""
    y = np.asarray(y, dtype=np.int64)
    is_blast = np.isin(y, list(blast_indices))
    normal_types = [int(k) for k in np.unique(y[~is_blast])]
    out: dict[str, Any] = {"threshold": float(threshold), "n": int(len(y)), "families": {}}
    for family, strengths in (families or FAMILIES).items():
        rows = []
        for s in strengths:
            p = p_blast(perturb(x, family, s))
            called = p >= threshold
            rows.append(
                {
                    "strength": float(s),
                    "sensitivity": float(called[is_blast].mean()) if is_blast.any() else None,
                    "specificity": float(np.mean([(~called[y == k]).mean() for k in normal_types]))
                    if normal_types
                    else None,
                }
            )
        out["families"][family] = sorted(rows, key=lambda r: r["strength"])
    return out


def robustness_figure(result: dict[str, Any]) -> Any:
    """One panel per family: sensitivity and mean specificity against strength."""
    from leukoedge.train.plots import _figure

    families = result["families"]
    fig = _figure(3.2 * len(families), 3.0)
    for i, (family, rows) in enumerate(families.items(), start=1):
        ax = fig.add_subplot(1, len(families), i)
        xs = [r["strength"] for r in rows]
        ax.plot(xs, [r["sensitivity"] for r in rows], marker="o", ms=3, label="blast sensitivity")
        ax.plot(xs, [r["specificity"] for r in rows], marker="s", ms=3, label="mean specificity")
        ax.axvline(_IDENTITY[family], ls=":", c="grey")
        ax.set(title=family, xlabel="strength", ylim=(0, 1.02))
        if i == 1:
            ax.set_ylabel("at the operating threshold")
            ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return fig
