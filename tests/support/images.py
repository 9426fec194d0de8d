"""Image files for classification tests: clear single cells, and every kind of bad input.

The tiny test model (``support.model``) scores blue-over-green: a purple cell on a pale background
gets p(malignant) near 1, a pink one about 0.3, so both labels are clear at the 0.5 threshold.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

PURPLE = (150, 50, 220)
PINK = (235, 190, 180)


def cell_image(colour: tuple[int, int, int], seed: int, size: int = 200) -> Image.Image:
    """A round 'cell' of ``colour`` on a pale background, with a little noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    inside = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (0.35 * size) ** 2
    rgb = np.where(inside[..., None], np.array(colour), np.array((225, 215, 225))).astype(np.float64)
    rgb += rng.normal(0, 6, rgb.shape)
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")


def write_cells(folder: Path, n_each: int = 3) -> dict[str, str]:
    """Purple (malignant) and pink (non-malignant) JPEGs, some in a subfolder; path -> expected label."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sub").mkdir(exist_ok=True)
    expected = {}
    for i in range(n_each):
        for colour, label, sub in ((PURPLE, "malignant", ""), (PINK, "non_malignant", "sub")):
            path = folder / sub / f"{label}_{i}.jpg"
            cell_image(colour, seed=i).save(path, quality=92)
            expected[str(path)] = label
    return expected


def huge_png_header(width: int = 20_000, height: int = 20_000) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` pixels: a decompression bomb for the size check."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def write_bad_inputs(folder: Path) -> dict[str, bool]:
    """Files of every awkward kind; name -> whether it should classify (True) or fail (False)."""
    folder.mkdir(parents=True, exist_ok=True)
    good = cell_image(PURPLE, seed=9)
    buf = folder / "good.jpg"
    good.save(buf, quality=92)
    data = buf.read_bytes()
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 50)
    (folder / "text.jpg").write_text("this is not an image\n")
    (folder / "bomb.png").write_bytes(huge_png_header())
    gray16 = (np.linspace(0, 65535, 120 * 120).reshape(120, 120)).astype(np.uint16)
    Image.fromarray(gray16).save(folder / "gray16.tif")
    rgba = np.dstack([np.asarray(good), np.full((200, 200), 128, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(folder / "rgba.tif")
    good.convert("L").save(folder / "gray.png")
    return {
        "good.jpg": True,
        "empty.jpg": False,
        "truncated.jpg": False,
        "corrupt.png": False,
        "text.jpg": False,
        "bomb.png": False,
        "gray16.tif": True,
        "rgba.tif": True,
        "gray.png": True,
    }
