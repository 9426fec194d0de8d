"""The one decoding path: every format decodes to the right pixels, every bad input to a clear ImageError."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from leukoedge.errors import DataError, ImageError
from leukoedge.vision.images import decode_image, load_cell, to_model_input

RED, BLUE, GREEN = (220, 20, 30), (20, 30, 220), (30, 200, 40)


def halves(h: int = 40, w: int = 60, left=RED, right=BLUE) -> np.ndarray:
    """An RGB image whose left half is one colour and right half another."""
    arr = np.empty((h, w, 3), np.uint8)
    arr[:, : w // 2] = left
    arr[:, w // 2 :] = right
    return arr


def save(tmp_path: Path, name: str, img: Image.Image, **kw) -> Path:
    path = tmp_path / name
    img.save(path, **kw)
    return path


@pytest.mark.parametrize(("name", "fmt"), [("a.png", "PNG"), ("a.tif", "TIFF"), ("a.bmp", "BMP")])
def test_lossless_rgb_formats_decode_exactly(tmp_path, name, fmt):
    arr = halves()
    path = save(tmp_path, name, Image.fromarray(arr), format=fmt)
    out = decode_image(path)
    assert out.dtype == np.uint8 and out.shape == (40, 60, 3)
    np.testing.assert_array_equal(out, arr)


def test_jpeg_decodes_close_to_source(tmp_path):
    arr = halves()
    path = save(tmp_path, "a.jpg", Image.fromarray(arr), quality=95)
    out = decode_image(path)
    assert out.shape == (40, 60, 3)
    # Away from the edge between the halves JPEG keeps flat colours within a few levels.
    assert np.abs(out[:, :20].astype(int) - RED).max() <= 6
    assert np.abs(out[:, 40:].astype(int) - BLUE).max() <= 6


def test_bytes_source_decodes_like_the_file(tmp_path):
    path = save(tmp_path, "a.png", Image.fromarray(halves()))
    np.testing.assert_array_equal(decode_image(path.read_bytes()), decode_image(path))


def test_16bit_tiff_scales_by_full_range(tmp_path):
    values = np.array([[0, 65535], [32768, 4096]], np.uint16)
    path = save(tmp_path, "a16.tif", Image.fromarray(values))
    assert Image.open(path).mode.startswith("I;16")
    out = decode_image(path)
    assert out.shape == (2, 2, 3)
    np.testing.assert_array_equal(out[:, :, 0], [[0, 255], [128, 16]])
    assert (out[:, :, 0] == out[:, :, 1]).all() and (out[:, :, 1] == out[:, :, 2]).all()


def test_16bit_png_scales_like_16bit_tiff(tmp_path):
    values = np.array([[0, 65535, 1000]], np.uint16)
    tif = save(tmp_path, "a.tif", Image.fromarray(values))
    png = save(tmp_path, "a.png", Image.fromarray(values))
    np.testing.assert_array_equal(decode_image(png), decode_image(tif))


def test_float_tiff_in_unit_range_is_not_black(tmp_path):
    values = np.array([[0.0, 0.5, 1.0]], np.float32)
    out = decode_image(save(tmp_path, "f.tif", Image.fromarray(values, "F")))
    np.testing.assert_array_equal(out[0, :, 0], [0, 128, 255])


def test_rgba_tiff_drops_alpha_without_compositing(tmp_path):
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[..., :3] = GREEN
    rgba[:, :32, 3] = 0  # fully transparent half keeps its recorded colour
    rgba[:, 32:, 3] = 255
    out = decode_image(save(tmp_path, "rgba.tiff", Image.fromarray(rgba, "RGBA")))
    assert out.shape == (64, 64, 3)
    assert (out == GREEN).all()


def test_grayscale_becomes_three_equal_channels(tmp_path):
    gray = np.arange(0, 250, 10, dtype=np.uint8).reshape(5, 5)
    out = decode_image(save(tmp_path, "g.png", Image.fromarray(gray, "L")))
    assert out.shape == (5, 5, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], gray)


def test_palette_image_decodes_to_palette_colours(tmp_path):
    img = Image.new("P", (4, 2))
    img.putpalette([*RED, *BLUE] + [0] * (256 * 3 - 6))
    img.putdata([0, 0, 1, 1, 1, 1, 0, 0])
    out = decode_image(save(tmp_path, "p.png", img))
    assert tuple(out[0, 0]) == RED and tuple(out[0, 3]) == BLUE and tuple(out[1, 0]) == BLUE


def test_palette_with_transparency_keeps_colours(tmp_path):
    img = Image.new("P", (2, 1))
    img.putpalette([*RED, *BLUE] + [0] * (256 * 3 - 6))
    img.putdata([0, 1])
    img.info["transparency"] = 0
    out = decode_image(save(tmp_path, "pt.png", img, transparency=0))
    assert tuple(out[0, 0]) == RED and tuple(out[0, 1]) == BLUE


def test_cmyk_jpeg_decodes_to_rgb(tmp_path):
    cmyk = np.zeros((16, 32, 4), np.uint8)
    cmyk[:, 16:, 0] = 255  # right half pure cyan, left half paper white
    path = save(tmp_path, "cmyk.jpg", Image.fromarray(cmyk, "CMYK"), quality=95)
    out = decode_image(path).astype(int)
    assert out.shape == (16, 32, 3)
    assert (out[:, :8] > 240).all()
    right = out[:, 24:].reshape(-1, 3).mean(axis=0)
    assert right[0] < 30 and right[1] > 225 and right[2] > 225


def test_exif_orientation_6_is_applied(tmp_path):
    # Stored 60 wide x 40 high, red left, blue right; orientation 6 means "rotate 90 degrees
    # clockwise to display", so the displayed image is 40 wide x 60 high with red on top.
    img = Image.fromarray(halves(40, 60))
    exif = Image.Exif()
    exif[0x0112] = 6
    path = save(tmp_path, "rot.jpg", img, exif=exif, quality=95)
    out = decode_image(path).astype(int)
    assert out.shape == (60, 40, 3)
    assert np.abs(out[:20] - RED).max() <= 8
    assert np.abs(out[40:] - BLUE).max() <= 8


def test_load_cell_gives_model_input_and_draft_matches_full_decode(tmp_path):
    rng = np.random.default_rng(0)
    base = np.kron(rng.integers(0, 255, (25, 25, 3), dtype=np.uint8), np.ones((16, 16, 1), np.uint8))
    path = save(tmp_path, "cell.jpg", Image.fromarray(base), quality=95)
    cell = load_cell(path)
    assert cell.shape == (64, 64, 3) and cell.dtype == np.uint8
    full = to_model_input(decode_image(path))
    # The reduced-scale JPEG decode stays close to decoding at full size and resizing.
    assert np.abs(cell.astype(int) - full).mean() < 6


def test_to_model_input_centre_crops_non_square(tmp_path):
    arr = np.zeros((64, 192, 3), np.uint8)
    arr[:, 64:128] = GREEN  # the centre square
    out = to_model_input(arr)
    assert out.shape == (64, 64, 3) and (out == GREEN).all()
    with pytest.raises(ImageError, match="H x W x 3"):
        to_model_input(np.zeros((8, 8), np.uint8))


def _jpeg_bytes() -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (128, 128, 3), dtype=np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` but whose pixel data is a few bytes."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("name", "make", "message"),
    [
        ("noise.png", lambda: np.random.default_rng(2).bytes(4000), "not an image"),
        ("cut.jpg", lambda: _jpeg_bytes()[: len(_jpeg_bytes()) // 2], "corrupt or truncated"),
        ("empty.jpg", lambda: b"", r"empty file \(0 bytes\)"),
        ("notes.jpg", lambda: b"this is a text file, not a picture\n" * 20, "not an image"),
        ("bomb.png", lambda: _png_header(100_000, 100_000), "decompression bomb"),
        ("header_only.png", lambda: _png_header(100, 100), "corrupt or truncated"),
    ],
)
def test_bad_files_raise_image_error_naming_the_file(tmp_path, name, make, message):
    path = _write(tmp_path, name, make())
    with pytest.raises(ImageError, match=message) as info:
        decode_image(path)
    assert name in str(info.value)
    with pytest.raises(ImageError, match=message):
        load_cell(path)


def test_lowered_pixel_limit_refuses_large_image(tmp_path):
    path = save(tmp_path, "big.png", Image.new("RGB", (300, 200)))
    with pytest.raises(ImageError, match=r"300x200 is larger than the limit of 10,000 pixels"):
        decode_image(path, max_pixels=10_000)
    assert decode_image(path).shape == (200, 300, 3)


def test_directory_missing_file_and_empty_bytes(tmp_path):
    with pytest.raises(ImageError, match="is a directory"):
        decode_image(tmp_path)
    with pytest.raises(ImageError, match="no such file"):
        decode_image(tmp_path / "absent.jpg")
    with pytest.raises(ImageError, match="empty data"):
        decode_image(b"")


def test_image_error_is_a_data_error():
    assert issubclass(ImageError, DataError)


# -- memory: high-bit-depth images are converted a band of rows at a time ---------------------------
@pytest.mark.parametrize(
    ("mode", "values"),
    [
        ("I;16", np.random.default_rng(1).integers(0, 65536, (37, 23), dtype=np.uint16)),
        ("I", np.random.default_rng(2).integers(0, 300_000, (37, 23)).astype(np.int32)),
        ("F", np.random.default_rng(3).random((37, 23)).astype(np.float32) * 900.0),
    ],
)
def test_banded_conversion_gives_the_whole_image_values(tmp_path, monkeypatch, mode, values):
    from leukoedge.vision import images

    img = Image.fromarray(values)
    assert img.mode == mode
    whole = images._to_rgb(img)
    monkeypatch.setattr(images, "_BAND_PIXELS", 23 * 4)  # bands of 4 rows, the last one short
    np.testing.assert_array_equal(images._to_rgb(img), whole)
    arr = np.asarray(img, np.float64)
    expected = np.clip(arr / images._full_scale(mode, float(arr.max())) * 255 + 0.5, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(whole[:, :, 0], expected)
    assert (whole == whole[:, :, :1]).all()


#: A 16-bit PNG just under the 64-megapixel limit: 62.4 MP, about 120 KB on disk.
BIG_SIDE = 7900
_PEAK_RSS = """
import sys
from leukoedge.cli import main
from leukoedge.vision.images import decode_image
try:
    if sys.argv[1] == "decode":
        decode_image(sys.argv[2])
    else:
        main(["classify", "--format", "json", "--workers", "1", sys.argv[2]])
except SystemExit as e:
    assert not e.code, e.code
# VmHWM belongs to this process's own memory map; ru_maxrss would carry the parent's peak over exec
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(int(hwm.split()[1]) * 1024)
"""


@pytest.fixture(scope="module")
def big_16bit_png(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("big") / "big16.png"
    values = np.zeros((BIG_SIDE, BIG_SIDE), np.uint16)
    values[::97, ::89] = 40000
    Image.fromarray(values).save(path)
    return path


@pytest.mark.parametrize(("how", "bytes_per_pixel"), [("decode", 6), ("classify", 8)])
def test_16bit_image_peak_memory_is_bounded(big_16bit_png, how, bytes_per_pixel):
    """Peak RSS is the 8-bit RGB result plus a copy or two, not float64 images (1.6 GB before)."""
    import subprocess
    import sys

    run = subprocess.run(
        [sys.executable, "-c", _PEAK_RSS, how, str(big_16bit_png)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    peak = int(run.stdout.split()[-1])
    assert peak < bytes_per_pixel * BIG_SIDE**2 + 128 * 2**20, f"peak RSS {peak / 2**20:.0f} MB"
