"""Write synthetic images and their ground truth to disk.

- :func:`write_cell_dataset`: single-cell images in class folders that the training loaders read
  as they read the real data (TCIA codes MYO/NGS/LYT/MON, or malignant/non_malignant folders),
  optionally under train/val/test, plus one ``synth_manifest.json`` with every image's truth.
- :func:`write_fields`: camera fields, each with a ``.json`` of the same name beside it.
- :func:`write_sequence`: the frames of a stage sequence and one ``sequence.json``.

Each image's seed derives from (seed, kind, index) or (seed, index), so asking for more images
keeps the ones already written identical.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from leukoedge.errors import DataError, SynthError
from leukoedge.synth.cells import KIND_LABELS, KINDS, TCIA_CODES, check_kind
from leukoedge.synth.field import FIELD_PX_PER_UM, render_field
from leukoedge.synth.single import render_cell
from leukoedge.synth.stage import StageSequence

logger = logging.getLogger(__name__)

#: Image formats the writers produce, by the name a user gives.
FORMATS = {"png": ("PNG", ".png"), "jpeg": ("JPEG", ".jpg"), "jpg": ("JPEG", ".jpg")}
#: Dataset layouts: class folders named by TCIA code or by model label, or one flat folder with a
#: ``.json`` of truth beside each image.
LAYOUTS = ("tcia", "folders", "flat")
#: The split used when ``splits=True``.
DEFAULT_SPLITS = {"train": 0.7, "val": 0.15, "test": 0.15}
MANIFEST_NAME = "synth_manifest.json"

Progress = Callable[[int], None] | None


def _format(fmt: str) -> tuple[str, str]:
    try:
        return FORMATS[fmt.lower()]
    except KeyError:
        raise SynthError(f"unknown image format {fmt!r}; choose from {', '.join(FORMATS)}") from None


def save_image(rgb: np.ndarray, path: str | os.PathLike, fmt: str = "png", quality: int = 92) -> Path:
    """Write an RGB array as PNG or JPEG (fixed encoder settings, so output is reproducible)."""
    pil_format, _ = _format(fmt)
    path = Path(path)
    options: dict[str, Any] = {"quality": int(quality)} if pil_format == "JPEG" else {"compress_level": 3}
    try:
        Image.fromarray(rgb).save(path, format=pil_format, **options)
    except OSError as e:
        raise DataError(f"{path}: cannot write image: {e}") from e
    return path


def write_json(data: Any, path: str | os.PathLike) -> Path:
    path = Path(path)
    try:
        path.write_text(json.dumps(data, indent=1) + "\n")
    except OSError as e:
        raise DataError(f"{path}: cannot write JSON: {e}") from e
    return path


def _mkdir(path: Path) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"{path}: cannot create folder: {e}") from e
    return path


def _split_names(n: int, splits: Mapping[str, float] | None) -> list[str | None]:
    """Split of each of n images, in order; every split gets at least one image when n allows."""
    if not splits:
        return [None] * n
    fracs = np.array(list(splits.values()), dtype=np.float64)
    if fracs.min() < 0 or fracs.sum() <= 0:
        raise SynthError(f"split fractions {dict(splits)} must be non-negative with a positive sum")
    floor = (fracs > 0).astype(int) if n >= int((fracs > 0).sum()) else np.zeros(len(fracs), dtype=int)
    bounds = np.round(np.cumsum(fracs / fracs.sum()) * (n - floor.sum())).astype(int) + np.cumsum(floor)
    sizes = np.diff(np.concatenate([[0], bounds]))
    return [name for name, k in zip(splits, sizes, strict=True) for _ in range(int(k))]


def write_cell_dataset(
    out_dir: str | os.PathLike,
    n_per_kind: int,
    seed: int = 0,
    size: int = 400,
    layout: str = "tcia",
    kinds: Sequence[str] = KINDS,
    splits: Mapping[str, float] | bool | None = None,
    fmt: str = "png",
    quality: int = 92,
    px_per_um: float | None = None,
    stain: str = "mgg",
    progress: Progress = None,
) -> dict[str, Any]:
    """Write ``n_per_kind`` single-cell images of each kind into class folders under ``out_dir``.

    ``layout="tcia"`` names folders by TCIA code (blast -> MYO, neutrophil -> NGS, lymphocyte ->
    LYT, monocyte -> MON); ``layout="folders"`` by label (malignant, non_malignant);
    ``layout="flat"`` puts all images in one folder with a ``.json`` of truth beside each. ``splits``
    (True for 70/15/15, or a mapping such as {"train": 0.8, "val": 0.2}) puts the folders under
    split folders. Returns the manifest (also written to ``synth_manifest.json``): settings,
    ``counts`` per folder, and ``images`` with each file's path and truth.
    """
    if layout not in LAYOUTS:
        raise SynthError(f"unknown layout {layout!r}; choose from {', '.join(LAYOUTS)}")
    if n_per_kind < 1:
        raise SynthError("n_per_kind must be at least 1")
    kinds = [check_kind(k) for k in kinds]
    _, suffix = _format(fmt)
    split_map = DEFAULT_SPLITS if splits is True else (splits or None)
    root = _mkdir(Path(out_dir))
    images: list[dict[str, Any]] = []
    counts: dict[str, int] = {}
    for kind in kinds:
        folder = {"tcia": TCIA_CODES[kind], "folders": KIND_LABELS[kind], "flat": ""}[layout]
        stem = TCIA_CODES[kind] if layout == "tcia" else kind
        for i, split in enumerate(_split_names(n_per_kind, split_map)):
            rng = np.random.default_rng([seed, KINDS.index(kind), i])
            rgb, truth = render_cell(kind, rng, size=size, px_per_um=px_per_um, stain=stain)
            rel = Path(split or "") / folder / f"{stem}_{i:05d}{suffix}"
            path = save_image(rgb, _mkdir(root / rel.parent) / rel.name, fmt, quality)
            if layout == "flat":
                write_json({"image": rel.name, **truth}, path.with_suffix(".json"))
            images.append({"path": rel.as_posix(), "split": split, **truth})
            counts[rel.parent.as_posix()] = counts.get(rel.parent.as_posix(), 0) + 1
            if progress:
                progress(1)
    manifest = {
        "generator": "leukoedge.synth",
        "seed": seed,
        "size": size,
        "layout": layout,
        "format": suffix.lstrip("."),
        "stain": stain,
        "counts": counts,
        "images": images,
    }
    write_json(manifest, root / MANIFEST_NAME)
    logger.info("wrote %d synthetic cell images to %s", len(images), root)
    return manifest


def write_fields(
    out_dir: str | os.PathLike,
    count: int,
    seed: int = 0,
    width: int = 640,
    height: int = 480,
    px_per_um: float = FIELD_PX_PER_UM,
    n_cells: int = 3,
    fmt: str = "png",
    quality: int = 92,
    progress: Progress = None,
    **field_options: Any,
) -> list[Path]:
    """Write ``count`` camera fields as ``field_NNNNN.png`` with ``field_NNNNN.json`` beside each."""
    _, suffix = _format(fmt)
    root = _mkdir(Path(out_dir))
    paths = []
    for i in range(count):
        rng = np.random.default_rng([seed, i])
        rgb, truth = render_field(width, height, rng, n_cells=n_cells, px_per_um=px_per_um, **field_options)
        path = save_image(rgb, root / f"field_{i:05d}{suffix}", fmt, quality)
        write_json({"image": path.name, "seed": [seed, i], **truth}, path.with_suffix(".json"))
        paths.append(path)
        if progress:
            progress(1)
    return paths


def write_sequence(
    out_dir: str | os.PathLike,
    n_frames: int,
    seed: int = 0,
    width: int = 640,
    height: int = 480,
    fmt: str = "png",
    quality: int = 92,
    progress: Progress = None,
    **sequence_options: Any,
) -> Path:
    """Write ``n_frames`` frames of a :class:`StageSequence` and one ``sequence.json`` of truth.

    The JSON holds {"sequence": slide settings and every cell in slide coordinates,
    "frames": [per-frame truth with "image" = the frame's file name]}.
    """
    _, suffix = _format(fmt)
    root = _mkdir(Path(out_dir))
    seq = StageSequence(width, height, seed, n_frames=n_frames, **sequence_options)
    frames = []
    for i in range(n_frames):
        rgb, truth = seq.frame(i)
        path = save_image(rgb, root / f"frame_{i:06d}{suffix}", fmt, quality)
        frames.append({"image": path.name, **truth})
        if progress:
            progress(1)
    return write_json({"sequence": seq.slide_truth(), "frames": frames}, root / "sequence.json")
