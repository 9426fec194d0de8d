"""``leukoedge session``: start/list/show/stop/export on a real state folder, and over real HTTP."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from support.provider import SHA, FakeProvider, crop, make_cell

from leukoedge import RESEARCH_USE_NOTICE
from leukoedge.cli import cli
from leukoedge.cli.session import session_group
from leukoedge.daemon.http.server import StatusServer
from leukoedge.daemon.store.database import Store
from leukoedge.errors import SessionError


def run(*args: str, ok: bool = True):
    result = CliRunner().invoke(session_group, list(args))
    if ok:
        assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def test_start_list_show_stop_export(tmp_path: Path) -> None:
    state, out = str(tmp_path / "state"), tmp_path / "out"
    sample = 'P-17 "left" =1+1'
    assert "Started session 1" in run("start", sample, "--note", "smear 2", "--state-dir", state).output
    with Store(state, crops="blasts") as store:
        for i in range(12):
            store.add_cell(1, make_cell(i, blast=i < 3, p=0.95 - i / 100 if i < 3 else 0.1), crop(40 + i))
    listing = run("list", "--state-dir", state).output
    assert "P-17" in listing and "active" in listing and re.search(r"\b12\s+3\s+25\.0\b", listing)
    sessions = json.loads(run("list", "--json", "--state-dir", state).output)
    assert sessions[0]["sample_id"] == sample and sessions[0]["cells"] == 12

    shown = run("show", "--state-dir", state).output  # no id: the active session
    assert "12 cells, 3 suspected blasts: 25.0 %" in shown and "not a diagnosis" in shown
    summary = json.loads(run("show", "1", "--json", "--cells", "--state-dir", state).output)
    assert summary["blast_pct"] == pytest.approx(25.0) and len(summary["cells_list"]) == 12

    stopped = run("stop", "--state-dir", state).output
    assert "Stopped session 1" in stopped and "12 cells" in stopped
    assert "ended" in run("list", "--state-dir", state).output

    exported = run("export", "1", "--out", str(out), "--state-dir", state).output
    csv_path, html_path = sorted(out.iterdir())
    assert str(csv_path) in exported and csv_path.suffix == ".csv" and html_path.suffix == ".html"
    with open(csv_path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 12
    assert sum(int(r["suspected_blast"]) for r in rows) == 3
    assert rows[0]["sample_id"] == sample  # starts with P: kept as typed
    assert rows[0]["model_sha256"] == SHA and rows[0]["crop_path"].startswith("crops/1/")
    page = html_path.read_text(encoding="utf-8")
    assert RESEARCH_USE_NOTICE in page
    assert page.count("data:image/png;base64,") == 3  # the three suspected blasts' crops
    assert "25.0 %" in page and SHA in page and "&quot;left&quot;" in page
    assert "<script" not in page and "http://" not in page and "https://" not in page


def test_errors_are_clear(tmp_path: Path) -> None:
    state = str(tmp_path / "state")
    result = run("list", "--state-dir", state, ok=False)
    assert result.exit_code != 0 and "no session database" in result.output
    run("start", "A", "--state-dir", state)
    result = run("start", "B", "--state-dir", state, ok=False)
    assert isinstance(result.exception, SessionError)
    run("stop", "--state-dir", state)
    result = run("stop", "--state-dir", state, ok=False)
    assert "no session is active" in result.output


def test_state_dir_from_the_environment_and_help(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("LEUKOEDGE_STATE_DIR", str(tmp_path / "env-state"))
    run("start", "E1")
    assert "E1" in run("list").output
    for command in ("start", "stop", "list", "show", "export"):
        assert "--state-dir" in run(command, "--help").output
    help_text = CliRunner().invoke(session_group, ["--help"]).output
    assert "export" in help_text


def test_the_top_level_cli_reaches_the_session_group() -> None:
    result = CliRunner().invoke(cli, ["session", "--help"])
    assert result.exit_code == 0 and "export" in result.output


def test_start_and_stop_over_http(tmp_path: Path) -> None:
    with Store(tmp_path / "state") as store:
        server = StatusServer("127.0.0.1", 0, FakeProvider(store), token="s3cret").start()
        try:
            url = server.url
            result = run("start", "H-1", "--url", url, "--token", "wrong", ok=False)
            assert result.exit_code != 0 and "403" in result.output
            assert "Started session 1" in run("start", "H-1", "--url", url, "--token", "s3cret").output
            store.add_cell(1, make_cell(1, blast=True))
            assert "H-1" in run("list", "--url", url).output
            assert "1 cells, 1 suspected blasts" in run("show", "--url", url).output
            assert "Stopped. 1 cells" in run("stop", "--url", url, "--token", "s3cret").output
            assert store.active_session() is None
        finally:
            server.stop()
