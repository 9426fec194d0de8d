"""Export a session: a CSV with one row per counted cell, and a self-contained HTML report.

The CSV's ``cell_type`` is the counted cell's type (a differential model's class, ``unclassified``
when the model abstained; a binary model's ``malignant``/``non_malignant``), ``suspected_blast`` its
blast decision. The report shows the differential (count, % and Wilson 95 % interval per type) and
its crop gallery grouped by cell type.

The HTML report needs nothing but itself (crops embedded as base64 PNG, styles inline, no scripts),
so it can be mailed, archived or opened on a machine with no network. Every value that came from a
person or a file is escaped.
"""

from __future__ import annotations

import base64
import csv
import html
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from leukoedge import __version__
from leukoedge.daemon.store.database import Store
from leukoedge.daemon.store.summary import COMPARISON_TEXT, UNCLASSIFIED, describe, type_order_key
from leukoedge.report import render_page

CSV_COLUMNS = (
    "cell_id", "session_id", "sample_id", "track_id", "first_seen_utc", "last_seen_utc", "seen_s",
    "x0", "y0", "x1", "y1", "p_malignant", "label", "suspected_blast", "n_classifications",
    "model_sha256", "crop_path", "crop_state", "cell_type",
)  # fmt: skip
#: At most this many crops in the report's gallery, shared out over the cell types (the most
#: suspicious first within each): keeps the file mailable.
GALLERY_MAX = 400


def utc(ts: float | None) -> str:
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _safe_cell(value: str) -> str:
    """Stop a spreadsheet from running a typed-in sample id as a formula (=, +, -, @ first)."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def _stem(session: dict[str, Any]) -> str:
    sample = re.sub(r"[^A-Za-z0-9._-]+", "_", session["sample_id"]).strip("._")[:60] or "sample"
    return f"session-{session['id']}-{sample}"


def export_session(store: Store, session_id: int, out_dir: str | Path) -> dict[str, Path]:
    """Write ``session-<id>-<sample>.csv`` and ``.html`` into ``out_dir``; returns {"csv", "html"} paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = store.session_summary(session_id)
    cells = store.session_cells(session_id)
    stem = _stem(summary["session"])
    csv_path, html_path = out / f"{stem}.csv", out / f"{stem}.html"
    write_csv(csv_path, summary["session"], cells)
    html_path.write_text(render_html(store, summary, cells), encoding="utf-8")
    return {"csv": csv_path, "html": html_path}


def write_csv(path: Path, session: dict[str, Any], cells: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        for c in cells:
            seen_s = f"{c['last_seen_ts'] - c['first_seen_ts']:.2f}"
            writer.writerow(
                [c["id"], c["session_id"], _safe_cell(session["sample_id"]), c["track_id"],
                 utc(c["first_seen_ts"]), utc(c["last_seen_ts"]), seen_s,
                 *c["bbox"], f"{c['p_malignant']:.4f}", c["label"], int(c["suspected_blast"]),
                 c["n_classifications"], c["model_sha256"], c["crop_path"] or "", c["crop_state"],
                 c["label"]]
            )  # fmt: skip


def _png_data_uri(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")
    except OSError:
        return None


def _figures(store: Store, cells: list[dict[str, Any]]) -> tuple[list[str], int]:
    """The crops of ``cells`` as <figure>s, and how many had no readable crop."""
    figures, missing = [], 0
    for c in cells:
        uri = _png_data_uri(store.crop_file(c))
        if uri is None:
            missing += 1
            continue
        mark = " &middot; suspected blast" if c["suspected_blast"] else ""
        figures.append(
            f'<figure><img src="{uri}" alt="cell {c["id"]}" width="96" height="96">'
            f"<figcaption>#{c['id']} &middot; p={c['p_malignant']:.2f}{mark}</figcaption></figure>"
        )
    return figures, missing


def _gallery(store: Store, cells: list[dict[str, Any]]) -> str:
    """The saved crops grouped by cell type, suspected blasts and the most suspicious first in each."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for c in cells:
        if c["crop_state"] == "saved":
            groups.setdefault(c["label"], []).append(c)
    blasts = sum(1 for c in cells if c["suspected_blast"])
    unsaved = sum(1 for c in cells if c["suspected_blast"] and c["crop_state"] != "saved")
    if not groups:
        what = "No suspected blasts" if not blasts else "No saved crops"
        note = f" ({unsaved} suspected blasts have no saved crop)" if unsaved else ""
        return f"<p class=muted>{what} in this session{note}.</p>"
    per_type = max(1, GALLERY_MAX // len(groups))
    parts = []
    for label in sorted(groups, key=lambda t: (t == UNCLASSIFIED, type_order_key(t))):
        group = sorted(groups[label], key=lambda c: (not c["suspected_blast"], -c["p_malignant"]))
        figures, missing = _figures(store, group[:per_type])
        notes = []
        if len(group) > per_type:
            notes.append(f"showing the {per_type} most suspicious of {len(group)} crops")
        if missing:
            notes.append(f"{missing} crops could not be read (removed)")
        note = f"<p class=muted>{html.escape('; '.join(notes))}.</p>" if notes else ""
        parts.append(
            f'<h3>{html.escape(label)} <span class="muted">({len(group)})</span></h3>'
            f'<div class="gallery">{"".join(figures)}</div>{note}'
        )
    if unsaved:
        parts.append(
            f"<p class=muted>{unsaved} suspected blasts have no saved crop "
            "(not configured, disk budget, or removed).</p>"
        )
    return "".join(parts)


def _ci_text(ci: list[float] | None) -> str:
    return "&ndash;" if ci is None else f"{ci[0]:.1f}&ndash;{ci[1]:.1f} %"


def _differential_table(summary: dict[str, Any]) -> str:
    """Count, % of the classified cells and Wilson 95 % CI of each cell type; unclassified apart."""
    types = summary["cell_types"]
    if not types["types"] and not types["unclassified"]["count"]:
        return "<p class=muted>No cells counted yet.</p>"
    rows = [
        f"<tr><th>{html.escape(t['type'])}</th><td>{t['count']}</td><td>{t['pct']:.1f} %</td>"
        f"<td>{_ci_text(t['ci95_pct'])}</td></tr>"
        for t in types["types"]
    ]
    un = types["unclassified"]
    if un["count"]:
        rows.append(
            f"<tr class=muted><th>unclassified (not in the %)</th><td>{un['count']}</td>"
            f"<td>{un['pct']:.1f} % of all</td><td>{_ci_text(un['ci95_pct'])}</td></tr>"
        )
    head = "<tr><th>Cell type</th><th>Cells</th><th>% of classified</th><th>95 % CI (Wilson)</th></tr>"
    return f'<table class="differential">{head}{"".join(rows)}</table>'


#: What only this page draws; the rest is the report room's shared look.
_CSS = """
.big{font-size:1.6em;font-weight:600} code{font-size:.85em;word-break:break-all}
.gallery{display:flex;flex-wrap:wrap;gap:.6em} figure{margin:0;text-align:center;font-size:.8em}
figure img{image-rendering:pixelated;border:1px solid #ccd;border-radius:4px;display:block}
.bar{background:#e8ebf2;border-radius:4px;height:.8em;width:20em}
.bar>div{background:#3d6fd8;height:100%;border-radius:4px}
"""


def render_html(store: Store, summary: dict[str, Any], cells: list[dict[str, Any]]) -> str:
    """The report as one HTML string (no external resources)."""
    s, e = summary["session"], html.escape
    pct = "&ndash;" if summary["blast_pct"] is None else f"{summary['blast_pct']:.1f} %"
    ci_text = _ci_text(summary["blast_ci95_pct"])
    diff = summary["differential"]
    shas = "".join(f"<code>{e(sha)}</code><br>" for sha in summary["model_sha256s"]) or "&ndash;"
    frames = summary["frames"]
    rows = [
        ("Sample", e(s["sample_id"])),
        ("Note", e(s["note"]) or "&ndash;"),
        ("Started", utc(s["started_at"])),
        ("Ended", utc(s["ended_at"]) or "still running"),
        (
            "Frames",
            f"{frames['captured']} captured, {frames['processed']} processed, {frames['dropped']} dropped",
        ),
        ("Model sha256", shas),
        ("Exported", f"{utc(datetime.now(tz=timezone.utc).timestamp())} by leukoedge {e(__version__)}"),
    ]
    meta = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    body = f"""<h2>Counts</h2>
<table>
<tr><th>White cells counted</th><td class="big">{summary["cells"]}</td></tr>
<tr><th>Suspected blasts</th><td class="big">{summary["blasts"]}</td></tr>
<tr><th>Other white cells</th><td>{summary["non_blasts"]}</td></tr>
<tr><th>Suspected blast %</th><td class="big">{pct}</td></tr>
<tr><th>95 % CI (Wilson)</th><td>{ci_text}</td></tr>
<tr><th>vs WHO 20 %</th><td>{e(COMPARISON_TEXT[summary["who_comparison"]])}</td></tr>
<tr><th>Differential</th><td>{diff["counted"]} of {diff["target"]} cells ({e(diff["status"])})
<div class="bar"><div style="width:{100 * diff["progress"]:.0f}%"></div></div></td></tr>
</table>
<p>{e(describe(summary))}.</p>
<p class="muted">{e(summary["who_note"])}</p>
<h2>Differential by cell type</h2>
{_differential_table(summary)}
<h2>Cells by type</h2>
{_gallery(store, cells)}
<h2>Session</h2>
<table>{meta}</table>"""
    title = f"leukoedge session {s['id']} - {s['sample_id']}"
    return render_page(title, body, heading=f"Session {s['id']}: {e(s['sample_id'])}", css=_CSS)
