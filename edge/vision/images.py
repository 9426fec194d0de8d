"""Image decoding and the resize to the model input: one implementation for training and the edge.

Every image that reaches the model, in training, in the quantization report, from
``leukoedge classify`` or from the daemon, passes through :func:`decode_image` and
:func:`to_model_input` (or :func:`load_cell`, which is the two together with fast JPEG decoding).
"""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from leukoedge.contract import INPUT_SIZE
from leukoedge.errors import ImageError

logger = logging.getLogger(__name__)

#: Largest image decoded, in pixels (a 16k x 16k whole-slide tile is refused; camera frames pass).
MAX_PIXELS = 64_000_000
#: Pixels converted at once when a high-bit-depth image is brought to 8 bits (8 MB of float64).
_BAND_PIXELS = 1 << 20
#: File name endings the loaders and ``classify`` treat as images when walking folders.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".gif", ".webp"})

Source = str | os.PathLike | bytes


def is_image_path(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def _open(source: Source, max_pixels: int) -> Image.Image:
    name = "<bytes>" if isinstance(source, bytes) else str(source)
    try:
        if isinstance(source, bytes):
            if not source:
                raise ImageError(f"{name}: empty data")
            fp: io.BytesIO | str = io.BytesIO(source)
        else:
            if os.path.isdir(source):
                raise ImageError(f"{name}: is a directory, not an image")
            if os.path.getsize(source) == 0:
                raise ImageError(f"{name}: empty file (0 bytes)")
            fp = os.fspath(source)
        # Image.open reads only the header; the size check below refuses a bomb before any
        # pixel is decoded. (No warnings filter here: catch_warnings is not thread-safe, and
        # decoding runs in a thread pool.)
        img = Image.open(fp)
        width, height = img.size
        if width * height > max_pixels:
            img.close()
            raise ImageError(
                f"{name}: {width}x{height} is larger than the limit of {max_pixels:,} pixels "
                "(possible decompression bomb)"
            )
        return img
    except ImageError:
        raise
    except FileNotFoundError as e:
        raise ImageError(f"{name}: no such file") from e
    except PermissionError as e:
        raise ImageError(f"{name}: permission denied") from e
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(f"{name}: image too large (possible decompression bomb): {e}") from e
    except UnidentifiedImageError as e:
        raise ImageError(f"{name}: not an image, or a format Pillow cannot read") from e
    except OSError as e:
        raise ImageError(f"{name}: cannot read: {e}") from e
    except Exception as e:  # Pillow's header parsers raise many kinds on malformed files
        raise ImageError(f"{name}: not a readable image: {type(e).__name__}: {e}") from e


def _full_scale(mode: str, peak: float) -> float:
    """The value that maps to white for a high-bit-depth grayscale image.

    A fixed scale per bit depth (not the image's own maximum) so that two images of the same
    sensor keep their relative brightness: 16-bit data is divided by 65535 whatever it holds.
    Only 32-bit integer or float data beyond 16 bits falls back to the image's peak.
    """
    if mode.startswith("I;16"):
        return 65535.0
    if mode == "F" and peak <= 1.0:
        return 1.0
    for top in (255.0, 65535.0):
        if peak <= top:
            return top
    return peak


def _high_depth_to_rgb(img: Image.Image) -> np.ndarray:
    """A 16/32-bit or float grayscale image as H x W x 3 uint8, a band of rows at a time.

    Converting the whole image to float64 at once costs 8 bytes per pixel several times over
    (1.6 GB for a 62-megapixel 16-bit PNG); bands of :data:`_BAND_PIXELS` keep the extra memory
    to a few megabytes over the output itself, with the same values.
    """
    width, height = img.size
    rows = max(1, _BAND_PIXELS // max(1, width))
    bands = [(y, min(height, y + rows)) for y in range(0, height, rows)]

    def band(y0: int, y1: int) -> np.ndarray:
        return np.asarray(img.crop((0, y0, width, y1)), dtype=np.float64)

    peak = 0.0 if img.mode.startswith("I;16") else max(float(band(y0, y1).max()) for y0, y1 in bands)
    scale = _full_scale(img.mode, peak)
    out = np.empty((height, width, 3), np.uint8)
    for y0, y1 in bands:
        out[y0:y1] = np.clip(band(y0, y1) / scale * 255.0 + 0.5, 0, 255).astype(np.uint8)[:, :, None]
    return out


def _to_rgb(img: Image.Image) -> np.ndarray:
    """Convert any Pillow mode to an H x W x 3 uint8 RGB array."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return _high_depth_to_rgb(img)
    if mode == "RGB":
        return np.asarray(img, dtype=np.uint8)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        # Alpha is dropped, not composited: the colour channels are what the scanner recorded.
        return np.asarray(img.convert("RGBA"), dtype=np.uint8)[:, :, :3].copy()
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def decode_image(source: Source, max_pixels: int = MAX_PIXELS, draft_size: int | None = None) -> np.ndarray:
    """Decode an image file (or its bytes) to an H x W x 3 uint8 RGB array.

    Handles JPEG, PNG, TIFF (8/16-bit, RGBA), BMP, grayscale, palette and CMYK images and applies
    the EXIF orientation. ``draft_size`` lets JPEG decode at a reduced scale (1/2, 1/4, 1/8) that
    still keeps at least that many pixels on the short side. Raises :class:`ImageError` with the
    file name and the reason on any failure.
    """
    img = _open(source, max_pixels)
    name = "<bytes>" if isinstance(source, bytes) else str(source)
    try:
        with img:
            if draft_size and img.format == "JPEG" and img.mode in ("RGB", "L", "CMYK", "YCbCr"):
                short = min(img.size)
                img.draft("RGB", (draft_size * img.size[0] // short, draft_size * img.size[1] // short))
            img.load()
            oriented = ImageOps.exif_transpose(img) if img.getexif().get(0x0112, 1) != 1 else img
            arr = _to_rgb(oriented)
    except ImageError:
        raise
    except (Image.DecompressionBombError, MemoryError) as e:
        raise ImageError(f"{name}: image too large to decode: {e}") from e
    except Exception as e:  # decoders raise OSError, ValueError, SyntaxError, struct.error, EOFError ...
        raise ImageError(f"{name}: corrupt or truncated image: {e}") from e
    if arr.ndim != 3 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageError(f"{name}: decoded to an empty image")
    return arr


def center_square(rgb: np.ndarray) -> np.ndarray:
    """The largest centred square of an image (a view, no copy)."""
    h, w = rgb.shape[:2]
    side = min(h, w)
    y0 = (h - side) // 2
    x0 = (w - side) // 2
    return rgb[y0 : y0 + side, x0 : x0 + side]


def to_model_input(rgb: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    """Centre-square-crop and resize an RGB array to the model's size x size x 3 uint8 input."""
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ImageError(f"expected an H x W x 3 RGB array, got shape {rgb.shape}")
    square = center_square(rgb)
    if square.shape[0] == size:
        return np.ascontiguousarray(square, dtype=np.uint8)
    img = Image.fromarray(np.ascontiguousarray(square, dtype=np.uint8), "RGB")
    return np.asarray(img.resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)


def load_cell(source: Source, size: int = INPUT_SIZE, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode a single-cell image and return the size x size x 3 uint8 model input.

    JPEGs are decoded at the smallest DCT scale that still has at least ``size`` pixels (about
    4x faster on the 400x400 training images); training and the edge both use this function, so
    the model sees the same pixels in both places.
    """
    return to_model_input(decode_image(source, max_pixels=max_pixels, draft_size=size), size)
