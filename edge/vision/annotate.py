"""Boxes and labels drawn on a field: the ``classify --annotate`` images and the daemon's live page.

Both draw with the same colours and the same decision: a cell is coloured as a suspected blast
when the bundle's contract labels its probability with the positive class at the classifier's
threshold, never by a fixed cut-off, so the picture agrees with the counts.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

#: Box colours: suspected blast, other cells, cells cut by the frame border, cells not yet classified.
POSITIVE_COLOUR = (230, 40, 40)
NEGATIVE_COLOUR = (40, 170, 70)
EDGE_COLOUR = (150, 150, 150)
PENDING_COLOUR = (230, 160, 20)

Colour = tuple[int, int, int]


@dataclass(frozen=True)
class Mark:
    """One box to draw: where (x0, y0, x1, y1 exclusive), in what colour, with what caption."""

    bbox: tuple[int, int, int, int]
    colour: Colour
    text: str


def classified_mark(bbox: Sequence[int], label: str, p: float, positive: bool, prefix: str = "") -> Mark:
    """A classified cell's box, coloured by the contract's decision (``positive``)."""
    colour = POSITIVE_COLOUR if positive else NEGATIVE_COLOUR
    x0, y0, x1, y1 = (int(v) for v in bbox)
    return Mark((x0, y0, x1, y1), colour, f"{prefix}{label} p_blast={p:.2f}")


def field_marks(cells: Iterable[dict[str, Any]]) -> list[Mark]:
    """Marks for the cell dicts of a ``classify --field`` record (``bbox``, ``edge``, ``label``,
    ``p_blast``, ``suspected_blast``)."""
    marks = []
    for cell in cells:
        x0, y0, x1, y1 = (int(v) for v in cell["bbox"])
        if cell.get("edge") or cell.get("label") is None:
            marks.append(Mark((x0, y0, x1, y1), EDGE_COLOUR, "edge"))
        else:
            marks.append(
                classified_mark(cell["bbox"], cell["label"], cell["p_blast"], bool(cell["suspected_blast"]))
            )
    return marks


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one fixed-size bitmap font
        return ImageFont.load_default()


def draw_marks(rgb: np.ndarray, marks: Iterable[Mark]) -> Any:
    """The image as a PIL image with each mark's box and caption (on white, for contrast) drawn."""
    from PIL import Image, ImageDraw

    img = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    width = max(2, min(img.size) // 240)
    font = _font(max(11, min(img.size) // 40))
    for mark in marks:
        x0, y0, x1, y1 = mark.bbox
        draw.rectangle((x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)), outline=mark.colour, width=width)
        _, top, _, bottom = draw.textbbox((0, 0), mark.text, font=font)
        tx, ty = x0, max(0, y0 - (bottom - top) - 2 * width)
        draw.rectangle(draw.textbbox((tx, ty), mark.text, font=font), fill=(255, 255, 255))
        draw.text((tx, ty), mark.text, fill=mark.colour, font=font)
    return img


def jpeg_bytes(image: Any, quality: int = 80) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()
