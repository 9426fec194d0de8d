"""The differential wherever the daemon shows a count: summary, status, live page, exports, metrics."""

from __future__ import annotations

import csv
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from support.daemon import daemon_config
from support.model import DIFFERENTIAL_TEST_CLASSES, make_differential_bundle
from support.provider import FakeProvider, crop, make_cell

from leukoedge.daemon.http import prometheus
from leukoedge.daemon.http.server import StatusServer
from leukoedge.daemon.service import EXIT_OK, Daemon
from leukoedge.daemon.store.database import Store
from leukoedge.daemon.store.export import export_session
from leukoedge.daemon.store.summary import UNCLASSIFIED, describe, describe_types
from leukoedge.daemon.types import CountedCell
from leukoedge.metrics import wilson_interval

SHA = "cd" * 32


def typed_cell(track_id: int, label: str, blast: bool = False, p: float = 0.1) -> CountedCell:
    return CountedCell(
        track_id, 10.0 + track_id, 11.0 + track_id, (10, 20, 74, 84), p, label, 3, SHA, suspected_blast=blast
    )


def fill(store: Store, sid: int, counts: dict[str, int]) -> None:
    track = 0
    for label, n in counts.items():
        for _ in range(n):
            store.add_cell(
                sid,
                typed_cell(track, label, blast=label == "blast", p=0.9 if label == "blast" else 0.1),
                crop(),
            )
            track += 1


def test_the_summary_is_a_differential_with_wilson_intervals_and_unclassified_apart(tmp_path: Path) -> None:
    with Store(tmp_path, crops="all") as store:
        sid = store.start_session("D-1")
        fill(store, sid, {"lymphocyte": 12, "blast": 5, "neutrophil": 20, UNCLASSIFIED: 3})
        s = store.session_summary(sid)
    types = s["cell_types"]
    assert [t["type"] for t in types["types"]] == ["blast", "neutrophil", "lymphocyte"]
    counts = {t["type"]: t["count"] for t in types["types"]}
    assert counts == {"blast": 5, "neutrophil": 20, "lymphocyte": 12}
    assert sum(counts.values()) + types["unclassified"]["count"] == s["cells"] == 40
    assert types["classified"] == 37 and s["unclassified"] == 3
    lymph = next(t for t in types["types"] if t["type"] == "lymphocyte")
    lo, hi = wilson_interval(12, 37)
    assert lymph["pct"] == pytest.approx(100 * 12 / 37)
    assert lymph["ci95_pct"] == pytest.approx([100 * lo, 100 * hi])
    # An unclassified cell is in no percentage: the blast % is 5 of the 37 classified cells.
    assert s["blasts"] == 5 and s["non_blasts"] == 32
    assert s["blast_pct"] == pytest.approx(100 * 5 / 37)
    assert types["unclassified"]["pct"] == pytest.approx(100 * 3 / 40)
    assert "3 unclassified" in describe(s)
    assert describe_types(s).startswith("blast 5 (13.5 %), neutrophil 20 (54.1 %)")


def test_a_binary_session_reads_as_before_with_its_two_labels_as_types(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        sid = store.start_session("B-1")
        for i in range(37):
            store.add_cell(sid, make_cell(i, blast=i < 9), crop())
        s = store.session_summary(sid)
    assert (s["cells"], s["blasts"], s["non_blasts"]) == (37, 9, 28)
    assert round(s["blast_pct"], 1) == 24.3 and s["unclassified"] == 0
    assert [(t["type"], t["count"]) for t in s["cell_types"]["types"]] == [
        ("malignant", 9),
        ("non_malignant", 28),
    ]


def test_prometheus_has_one_series_per_cell_type_beside_the_existing_ones() -> None:
    text = prometheus.render(
        {"cells_counted_total": 7, "blasts_counted_total": 2,
         "cells_counted_by_type_total": {"lymphocyte": 5, "blast": 2, 'odd"\\name': 0}},
    )  # fmt: skip
    lines = text.splitlines()
    assert "leukoedge_cells_counted_total 7" in lines and "leukoedge_blasts_counted_total 2" in lines
    assert "# TYPE leukoedge_cells_counted_by_type_total counter" in lines
    assert 'leukoedge_cells_counted_by_type_total{type="lymphocyte"} 5' in lines
    assert 'leukoedge_cells_counted_by_type_total{type="blast"} 2' in lines
    assert 'leukoedge_cells_counted_by_type_total{type="odd\\"\\\\name"} 0' in lines


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_differential_bundle(tmp_path_factory.mktemp("differential-bundle"))


@pytest.fixture(scope="module")
def ran(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Daemon]:
    state = tmp_path_factory.mktemp("differential-state")
    config = daemon_config(
        state, bundle, source__uri="synthetic://?seed=5&fps=0", pipeline__lossless=True,
        pipeline__max_frames=400, store__crops="all",
    )  # fmt: skip
    daemon = Daemon(config)
    assert daemon.run(install_signals=False) == EXIT_OK
    return state, daemon


def test_a_daemon_with_a_differential_bundle_counts_cell_types(ran: tuple[Path, Daemon]) -> None:
    state, daemon = ran
    with Store(state) as store:
        (session,) = store.list_sessions()
        cells = store.session_cells(session["id"])
        summary = store.session_summary(session["id"])
    types = {t["type"]: t["count"] for t in summary["cell_types"]["types"]}
    assert len(types) >= 3, types  # the tiny model spreads the synthetic smear over several types
    assert set(types) <= set(DIFFERENTIAL_TEST_CLASSES)
    assert sum(types.values()) + summary["unclassified"] == summary["cells"] == len(cells) > 0
    # p_blast >= threshold means "blast" is the most probable of the types; the converse need not hold.
    assert all(c["label"] == "blast" for c in cells if c["suspected_blast"])
    assert summary["blasts"] == sum(c["suspected_blast"] for c in cells)
    assert daemon.stats.metrics()["cells_counted_by_type_total"] == types
    assert daemon.stats.status()["counts"]["cell_types"] == types
    model = daemon.stats.status()["model"]
    assert model["differential"] and model["classes"] == list(DIFFERENTIAL_TEST_CLASSES)
    text = prometheus.render(daemon.stats.metrics())
    for t, n in types.items():
        assert f'leukoedge_cells_counted_by_type_total{{type="{t}"}} {n}' in text.splitlines()


def test_the_exports_carry_the_cell_type_and_group_the_gallery_by_type(
    ran: tuple[Path, Daemon], tmp_path: Path
) -> None:
    state, _ = ran
    with Store(state) as store:
        (session,) = store.list_sessions()
        summary = store.session_summary(session["id"])
        paths = export_session(store, session["id"], tmp_path)
    rows = list(csv.DictReader(paths["csv"].open(encoding="utf-8")))
    assert len(rows) == summary["cells"]
    assert {r["cell_type"] for r in rows} == {t["type"] for t in summary["cell_types"]["types"]}
    assert all(r["cell_type"] == r["label"] for r in rows)
    assert sum(int(r["suspected_blast"]) for r in rows) == summary["blasts"]
    page = paths["html"].read_text(encoding="utf-8")
    assert "Differential by cell type" in page
    for t in summary["cell_types"]["types"]:
        assert f"<tr><th>{t['type']}</th><td>{t['count']}</td><td>{t['pct']:.1f} %</td>" in page
        assert f'<h3>{t["type"]} <span class="muted">({t["count"]})</span></h3>' in page
    headings = re.findall(r"<h3>(\w+) <span", page)
    order = [t["type"] for t in summary["cell_types"]["types"]]
    assert headings == order  # one gallery section per type, in the differential's order


# -- the live page ----------------------------------------------------------------------------------
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class DifferentialProvider(FakeProvider):
    """The fake daemon, with a differential bundle loaded."""

    def status(self) -> dict[str, Any]:
        status = super().status()
        status["model"] = {
            "name": "tiny_differential", "sha256": SHA, "differential": True,
            "classes": list(DIFFERENTIAL_TEST_CLASSES), "blast_classes": ["blast"],
        }  # fmt: skip
        return status


@pytest.mark.browser
def test_the_live_page_shows_the_running_differential(tmp_path: Path) -> None:
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    from test_live_page import FLAGS

    with Store(tmp_path / "state") as store:
        sid = store.start_session("D-7")
        fill(store, sid, {"neutrophil": 20, "lymphocyte": 12, "blast": 5, UNCLASSIFIED: 3})
        with StatusServer("127.0.0.1", 0, DifferentialProvider(store), stream_fps=10) as server:
            cmd = [
                CHROMIUM,
                *FLAGS,
                f"--user-data-dir={tmp_path / 'profile'}",
                "--dump-dom",
                server.url + "/",
            ]
            result = subprocess.run(cmd, capture_output=True, text=True, timeout=90, check=False)
    dom = result.stdout
    assert result.returncode == 0, result.stderr[-2000:]
    rows = re.findall(r'<tr data-type="(\w+)"[^>]*><td>[^<]*</td><td>(\d+)</td><td>([^<]*)</td>', dom)
    assert rows == [
        ("blast", "5", "13.5 %"), ("neutrophil", "20", "54.1 %"),
        ("lymphocyte", "12", "32.4 %"), ("monocyte", "0", "\u2013"),
    ]  # fmt: skip
    assert '<tr data-type="blast" class="blast">' in dom
    assert '<span id="unclassified">3</span>' in dom
    assert '<span class="num" id="blasts">5</span>' in dom
    assert "Research use only" in dom
