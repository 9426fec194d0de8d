"""Self-contained HTML pages: plots embedded as base64 PNG data URIs, so one file can be mailed or
archived with a run and still shows everything. The training and evaluation reports, the
quantization report and the session export are all drawn by :func:`render_page`, so they share one
look and carry the one research-use notice. Needs no TensorFlow; matplotlib only when a figure
object is passed.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from leukoedge import RESEARCH_USE_NOTICE as RESEARCH_USE_NOTICE  # the package's one notice

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;
color:#222;line-height:1.45}
h1{font-size:1.6rem}h2{font-size:1.2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
table{border-collapse:collapse;margin:.5rem 0}
td,th{border:1px solid #ccc;padding:.25rem .6rem;text-align:left}
th{background:#f3f3f3}img{max-width:100%;height:auto}
.notice{background:#fff4e5;border:1px solid #f0b060;padding:.6rem .8rem;border-radius:4px}
code,pre{background:#f6f6f6;padding:.1rem .3rem}pre{padding:.6rem;overflow-x:auto}
.figs{display:flex;flex-wrap:wrap;gap:1rem}.figs figure{margin:0;flex:1 1 22rem}
.muted{color:#667}footer{margin-top:2rem;color:#667;font-size:.85em}
"""

Section = tuple[str, str]


def escape(text: Any) -> str:
    """HTML-escape any value's string form."""
    return html.escape(str(text), quote=True)


def png_data_uri(fig_or_path: Any, dpi: int = 110) -> str:
    """A ``data:image/png;base64,...`` URI from a matplotlib Figure, a PNG file path, or PNG bytes."""
    if isinstance(fig_or_path, bytes | bytearray):
        data = bytes(fig_or_path)
    elif isinstance(fig_or_path, str | Path):
        data = Path(fig_or_path).read_bytes()
    else:
        buf = io.BytesIO()
        fig_or_path.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
        data = buf.getvalue()
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def img(fig_or_path: Any, alt: str, caption: str | None = None) -> str:
    """An embedded ``<figure>`` for a figure or PNG file."""
    cap = f"<figcaption>{escape(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="{png_data_uri(fig_or_path)}" alt="{escape(alt)}">{cap}</figure>'


def figures(items: Sequence[tuple[Any, str]]) -> str:
    """Several embedded figures side by side: ``[(fig_or_path, caption), ...]``."""
    return '<div class="figs">' + "".join(img(f, c, c) for f, c in items) + "</div>"


def table(header: Sequence[Any], rows: Sequence[Sequence[Any]]) -> str:
    """An HTML table; cells are escaped."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def paragraph(text: str) -> str:
    return f"<p>{escape(text)}</p>"


def render_page(title: str, body: str, *, heading: str | None = None, css: str = "") -> str:
    """A complete page: document head with the shared CSS (and ``css``, for what only this page
    draws), the heading (``title`` unless given as HTML), the notice, ``body`` (HTML) and a footer."""
    from leukoedge import __version__

    return (
        "\n".join(
            [
                "<!DOCTYPE html>",
                '<html lang="en"><head><meta charset="utf-8">',
                '<meta name="viewport" content="width=device-width, initial-scale=1">',
                f"<title>{escape(title)}</title><style>{_CSS}{css}</style></head><body>",
                f"<h1>{heading if heading is not None else escape(title)}</h1>",
                f'<p class="notice">{escape(RESEARCH_USE_NOTICE)}</p>',
                body,
                f"<footer>leukoedge {escape(__version__)}</footer>",
                "</body></html>",
            ]
        )
        + "\n"
    )


def html_page(title: str, sections: Sequence[Section]) -> str:
    """A page of ``(heading, html body)`` sections in order.

    Section bodies are inserted as HTML (build them with :func:`table`, :func:`img`,
    :func:`paragraph`, which escape their text).
    """
    body = "\n".join(f"<section><h2>{escape(h)}</h2>{b}</section>" for h, b in sections)
    return render_page(title, body)
