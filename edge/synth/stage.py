"""A moving microscope stage over a virtual slide: camera frames with stable cell ids.

The slide is rendered once (in strips, so memory stays at the slide's 8-bit size plus one
strip); each frame is a window of it, times a fixed vignetting and colour cast, plus sensor
noise taken from a pre-drawn noise tile at a frame-dependent offset. A frame costs a crop, a
multiply, an add and a clip in 16-bit integers: well under a millisecond at 640 x 480, so the
sequence can feed a daemon faster than real time.

The stage pans in straight lines between random points, pauses, and pans again, always by whole
pixels, so a cell's frame position moves by exactly the stage motion and every cell stays in
view for many consecutive frames.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from leukoedge.errors import SynthError
from leukoedge.synth.cells import KINDS, check_kind
from leukoedge.synth.field import (
    FIELD_PX_PER_UM,
    Scene,
    cell_truth,
    place_red_cells,
    place_white_cells,
    render_region,
)
from leukoedge.synth.stain import Optics, finish, sample_optics, sample_stain, transmit, vignette_map

logger = logging.getLogger(__name__)

_STRIP = 256
#: Fixed-point scale of the per-frame gain and noise (7 fractional bits keeps 255 * gain in 16 bits).
_SHIFT = 7
_FIX = 1 << _SHIFT
#: Noise is added with this bias (in 8-bit levels) so that unsigned arithmetic can hold it.
_BIAS = 16
_NOISE_PAD = 61


class StageSequence:
    """Frames from a camera over a moving stage, with per-frame ground truth.

    ``frame(i)`` returns (RGB uint8 height x width x 3, truth) with truth = {"frame", "width",
    "height", "px_per_um", "stage": [x, y] (the frame's top-left on the slide), "moving",
    "cells": [{"id", "kind", "label", "bbox", "bbox_full", "center", "diameter_px",
    "cut_by_edge", "visible_fraction"}]}; cell ids are stable over the whole sequence.
    Frames are defined for every i >= 0 (the path is extended as needed); ``n_frames`` only sets
    the length used by ``len()`` and iteration (None: iterate forever).
    """

    def __init__(
        self,
        width: int = 640,
        height: int = 480,
        seed: int = 0,
        *,
        slide_width: int | None = None,
        slide_height: int | None = None,
        n_cells: int | None = None,
        kind_weights: Mapping[str, float] | None = None,
        px_per_um: float = FIELD_PX_PER_UM,
        speed_px_per_frame: float = 8.0,
        pause_frames: int | tuple[int, int] = (15, 45),
        n_frames: int | None = 600,
        camera: bool = True,
        noise: bool = True,
        stain: str = "mgg",
        rbc_coverage: float | None = None,
    ) -> None:
        slide_width = int(slide_width or 4 * width)
        slide_height = int(slide_height or 4 * height)
        if width < 16 or height < 16 or slide_width < width or slide_height < height:
            raise SynthError(f"slide {slide_width}x{slide_height} must hold the {width}x{height} frame")
        if slide_width * slide_height > 100_000_000:
            raise SynthError(f"slide {slide_width}x{slide_height} is larger than 100 Mpixel")
        if speed_px_per_frame <= 0:
            raise SynthError("speed_px_per_frame must be positive")
        self.width, self.height, self.seed = int(width), int(height), int(seed)
        self.px_per_um = float(px_per_um)
        self.speed = float(speed_px_per_frame)
        self.pause_frames = (
            (pause_frames, pause_frames) if isinstance(pause_frames, int) else tuple(pause_frames)
        )
        if not 0 <= self.pause_frames[0] <= self.pause_frames[1]:
            raise SynthError(
                f"pause_frames {pause_frames} must be a count or a (min, max) range of counts >= 0"
            )
        self.n_frames = n_frames
        rng = np.random.default_rng(self.seed)
        self.scene = Scene(slide_width, slide_height, self.px_per_um, sample_stain(rng, stain))
        if n_cells is None:
            n_cells = max(1, round(1.5 * slide_width * slide_height / (width * height)))
        place_white_cells(rng, self.scene, _draw_kinds(rng, n_cells, kind_weights), inside=True)
        place_red_cells(
            rng, self.scene, rbc_coverage if rbc_coverage is not None else float(rng.uniform(0.3, 0.6))
        )
        self.optics = sample_optics(rng, self.px_per_um, camera=camera)
        self.slide = _render_slide(self.scene, self.optics)
        self._gain = np.round(vignette_map(self.height, self.width, self.optics) * _FIX).astype(np.uint16)
        self._noise = _noise_tile(rng, self.height, self.width, self.optics.noise_sigma) if noise else None
        self._path_rng = np.random.default_rng([self.seed, 1])
        self._path: list[tuple[int, int, bool]] = []
        self._path.append((*self._random_point(), False))

    # -- the stage path -------------------------------------------------------------------------
    def _random_point(self) -> tuple[int, int]:
        r = self._path_rng
        return int(r.integers(0, self.scene.width - self.width + 1)), int(
            r.integers(0, self.scene.height - self.height + 1)
        )

    def _extend_path(self, upto: int) -> None:
        while len(self._path) <= upto:
            x0, y0, _ = self._path[-1]
            x1, y1 = self._random_point()
            steps = max(1, int(np.ceil(np.hypot(x1 - x0, y1 - y0) / self.speed)))
            for k in range(1, steps + 1):
                self._path.append(
                    (round(x0 + (x1 - x0) * k / steps), round(y0 + (y1 - y0) * k / steps), True)
                )
            lo, hi = self.pause_frames
            pause = int(self._path_rng.integers(lo, hi + 1))
            self._path.extend((x1, y1, False) for _ in range(pause))

    def stage_position(self, i: int) -> tuple[int, int]:
        """Top-left corner of frame ``i`` on the slide, in slide pixels."""
        if i < 0:
            raise IndexError(f"frame index {i} is negative")
        self._extend_path(i)
        x, y, _ = self._path[i]
        return x, y

    # -- frames and truth -----------------------------------------------------------------------
    def truth(self, i: int) -> dict[str, Any]:
        """Ground truth of frame ``i`` without rendering it."""
        x, y = self.stage_position(i)
        cells = (
            cell_truth(c, self.scene.boxes[c.id], x, y, self.width, self.height) for c in self.scene.white
        )
        return {
            "frame": int(i),
            "width": self.width,
            "height": self.height,
            "px_per_um": self.px_per_um,
            "stage": [x, y],
            "moving": self._path[i][2],
            "cells": [c for c in cells if c is not None],
        }

    def image(self, i: int) -> np.ndarray:
        """Frame ``i`` as RGB uint8 (height x width x 3)."""
        x, y = self.stage_position(i)
        crop = self.slide[y : y + self.height, x : x + self.width]
        acc = np.multiply(crop, self._gain, dtype=np.uint16)
        if self._noise is None:
            acc >>= _SHIFT
            np.minimum(acc, 255, out=acc)
            return acc.astype(np.uint8)
        # A cheap integer hash of the frame index picks where in the noise tile this frame's noise lies.
        h = (i * 2654435761 + self.seed * 40503) & 0xFFFFFFFF
        nx, ny = h % _NOISE_PAD, (h >> 8) % _NOISE_PAD
        acc += self._noise[ny : ny + self.height, nx : nx + self.width]
        acc >>= _SHIFT
        np.clip(acc, _BIAS, 255 + _BIAS, out=acc)
        acc -= _BIAS
        return acc.astype(np.uint8)

    def frame(self, i: int) -> tuple[np.ndarray, dict[str, Any]]:
        """Frame ``i`` and its ground truth."""
        return self.image(i), self.truth(i)

    def __len__(self) -> int:
        if self.n_frames is None:
            raise TypeError("this sequence is endless (n_frames=None)")
        return int(self.n_frames)

    def __iter__(self) -> Iterator[tuple[np.ndarray, dict[str, Any]]]:
        i = 0
        while self.n_frames is None or i < self.n_frames:
            yield self.frame(i)
            i += 1

    def slide_truth(self) -> dict[str, Any]:
        """Every white cell on the slide, in slide coordinates, plus the slide's settings."""
        cells = [
            cell_truth(c, self.scene.boxes[c.id], 0, 0, self.scene.width, self.scene.height)
            for c in self.scene.white
        ]
        return {
            "width": self.width,
            "height": self.height,
            "slide_width": self.scene.width,
            "slide_height": self.scene.height,
            "px_per_um": self.px_per_um,
            "seed": self.seed,
            "speed_px_per_frame": self.speed,
            "pause_frames": list(self.pause_frames),
            "optics": self.optics.to_dict(),
            "cells": [c for c in cells if c is not None],
        }


def _draw_kinds(rng: np.random.Generator, n: int, weights: Mapping[str, float] | None) -> list[str]:
    weights = dict(weights) if weights else {k: 1.0 for k in KINDS}
    names = [check_kind(k) for k in weights]
    p = np.array([float(weights[k]) for k in names], dtype=np.float64)
    if p.min() < 0 or p.sum() <= 0:
        raise SynthError(f"kind weights {weights} must be non-negative with a positive sum")
    return [names[i] for i in rng.choice(len(names), size=n, p=p / p.sum())]


def _render_slide(scene: Scene, optics: Optics) -> np.ndarray:
    """The slide as 8-bit RGB, rendered in strips with a margin so blur has no seams."""
    slide = np.empty((scene.height, scene.width, 3), dtype=np.uint8)
    margin = int(np.ceil(3 * optics.blur_px)) + 2
    blur_only = Optics(blur_px=optics.blur_px)
    for y0 in range(0, scene.height, _STRIP):
        y1 = min(y0 + _STRIP, scene.height)
        top, bottom = max(0, y0 - margin), min(scene.height, y1 + margin)
        od = render_region(scene, 0, top, scene.width, bottom - top)
        rgb = finish(transmit(od, scene.stain), blur_only, None)
        slide[y0:y1] = rgb[y0 - top : y0 - top + (y1 - y0)]
    logger.debug("rendered a %dx%d slide with %d white cells", scene.width, scene.height, len(scene.white))
    return slide


def _noise_tile(rng: np.random.Generator, height: int, width: int, sigma: float) -> np.ndarray:
    """Biased fixed-point sensor noise, a little larger than a frame, drawn once per sequence."""
    noise = rng.standard_normal((height + _NOISE_PAD, width + _NOISE_PAD, 3), dtype=np.float32)
    noise = np.clip(noise * np.float32(sigma), -(_BIAS - 1), _BIAS - 1)
    return np.round((noise + _BIAS) * _FIX).astype(np.uint16)
