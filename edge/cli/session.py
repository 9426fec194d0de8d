"""``leukoedge session start|stop|list|show|export``: sessions from the command line.

Two ways to reach them: directly on the state folder's database (the default; safe while the daemon
runs, thanks to WAL and SQLite's locking), or through the running daemon's HTTP API with ``--url``
(and ``--token`` for start/stop), which is what to use when the daemon should learn about a new
session at once. ``export`` always reads the state folder, since it needs the crop files.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from leukoedge.daemon.store.database import DB_NAME, Store
from leukoedge.daemon.store.export import export_session, utc
from leukoedge.daemon.store.summary import describe
from leukoedge.errors import NoSuchSession
from leukoedge.finite import dumps

DEFAULT_STATE_DIR = "/var/lib/leukoedge"
HTTP_TIMEOUT_S = 10


_STATE_OPTIONS = (
    click.option(
        "--state-dir",
        type=click.Path(file_okay=False, path_type=Path),
        envvar="LEUKOEDGE_STATE_DIR",
        default=DEFAULT_STATE_DIR,
        show_default=True,
        help="The daemon's state folder (env LEUKOEDGE_STATE_DIR).",
    ),
    click.option(
        "--url", envvar="LEUKOEDGE_URL", help="Use the running daemon's HTTP API at this URL instead."
    ),
    click.option("--token", envvar="LEUKOEDGE_TOKEN", help="Bearer token for start/stop over HTTP."),
)


def state_options(func: Callable) -> Callable:
    """--state-dir, --url and --token, shared by every session command."""
    for option in reversed(_STATE_OPTIONS):
        func = option(func)
    return func


def open_store(state_dir: Path, create: bool = False) -> Store:
    """The state folder's store; refuses to create one by accident or to leave root-owned files in it."""
    db = state_dir / DB_NAME
    if not create and not db.exists():
        raise click.ClickException(
            f"no session database at {db}; give the daemon's state folder with --state-dir "
            "or LEUKOEDGE_STATE_DIR"
        )
    if hasattr(os, "geteuid") and os.geteuid() == 0 and db.exists() and db.stat().st_uid != 0:
        # SQLite would create root-owned -wal/-shm files the daemon's user could not open afterwards.
        raise click.ClickException(
            f"{db} belongs to another user; run this as that user, "
            "e.g. sudo -u leukoedge leukoedge session ..."
        )
    return Store(state_dir).open()


def http_call(url: str, path: str, token: str | None = None, body: dict | None = None) -> Any:
    """GET (or POST with a JSON body) ``url + path``; the daemon's error message on failure."""
    data = None if body is None else dumps(body).encode("utf-8")
    req = urllib.request.Request(url.rstrip("/") + path, data=data, method="GET" if body is None else "POST")
    req.add_header("Accept", "application/json")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT_S) as resp:
            return json.loads(resp.read().decode("utf-8"))
    except urllib.error.HTTPError as e:
        try:
            message = json.loads(e.read().decode("utf-8")).get("error", e.reason)
        except (ValueError, AttributeError):
            message = e.reason
        raise click.ClickException(f"the daemon answered {e.code}: {message}") from e
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise click.ClickException(f"cannot reach the daemon at {url}: {e}") from e


def _pick_session(store: Store, session_id: int | None) -> int:
    """The given id, else the active session, else the newest one."""
    if session_id is not None:
        return session_id
    active = store.active_session()
    if active:
        return int(active["id"])
    sessions = store.list_sessions()
    if not sessions:
        raise NoSuchSession("there are no sessions yet")
    return int(sessions[0]["id"])


def _emit(data: Any, as_json: bool, text: str) -> None:
    click.echo(dumps(data, indent=2, default=str) if as_json else text)


@click.group("session")
def session_group() -> None:
    """Start, stop, list, show and export counting sessions (one sample each)."""


@session_group.command("start")
@click.argument("sample_id")
@click.option("--note", default="", help="Free text kept with the session.")
@state_options
def start_cmd(sample_id: str, note: str, state_dir: Path, url: str | None, token: str | None) -> None:
    """Start counting a new sample (at most one session runs at a time)."""
    if url:
        session = http_call(url, "/api/sessions/start", token, {"sample_id": sample_id, "note": note})
        session_id = session.get("id", session.get("session_id"))
    else:
        with open_store(state_dir, create=True) as store:
            session_id = store.start_session(sample_id, note)
    click.echo(f"Started session {session_id} for sample {sample_id}.")


@session_group.command("stop")
@click.argument("session_id", type=int, required=False)
@state_options
def stop_cmd(session_id: int | None, state_dir: Path, url: str | None, token: str | None) -> None:
    """Stop the active session (or the one given) and print its summary."""
    if url:
        summary = http_call(url, "/api/sessions/stop", token, {})
        click.echo(f"Stopped. {describe(summary)}." if "cells" in summary else "Stopped.")
        return
    with open_store(state_dir) as store:
        if session_id is None:
            active = store.active_session()
            if active is None:
                raise click.ClickException("no session is active")
            session_id = int(active["id"])
        store.stop_session(session_id)
        click.echo(f"Stopped session {session_id}. {describe(store.session_summary(session_id))}.")


@session_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@state_options
def list_cmd(as_json: bool, state_dir: Path, url: str | None, token: str | None) -> None:
    """List sessions, newest first."""
    if url:
        sessions = http_call(url, "/api/sessions")
    else:
        with open_store(state_dir) as store:
            sessions = store.list_sessions()
    lines = [
        f"{'ID':>4}  {'SAMPLE':<24} {'STARTED':<23} {'STATE':<7} {'CELLS':>6} {'BLASTS':>6} {'BLAST%':>6}"
    ]
    for s in sessions:
        pct = f"{100 * s['blasts'] / s['cells']:.1f}" if s["cells"] else "-"
        state = "active" if s["active"] else "ended"
        lines.append(
            f"{s['id']:>4}  {s['sample_id'][:24]:<24} {utc(s['started_at']):<23} {state:<7} "
            f"{s['cells']:>6} {s['blasts']:>6} {pct:>6}"
        )
    _emit(sessions, as_json, "\n".join(lines) if sessions else "No sessions yet.")


@session_group.command("show")
@click.argument("session_id", type=int, required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (with --cells, every cell too).")
@click.option("--cells", "with_cells", is_flag=True, help="Include every counted cell.")
@state_options
def show_cmd(
    session_id: int | None,
    as_json: bool,
    with_cells: bool,
    state_dir: Path,
    url: str | None,
    token: str | None,
) -> None:
    """Show a session's counts, blast % with its 95 % CI, and differential progress."""
    if url:
        if session_id is None:
            sessions = http_call(url, "/api/sessions")
            if not sessions:
                raise NoSuchSession("there are no sessions yet")
            session_id = next((s["id"] for s in sessions if s["active"]), sessions[0]["id"])
        summary = http_call(url, f"/api/sessions/{session_id}")
    else:
        with open_store(state_dir) as store:
            session_id = _pick_session(store, session_id)
            summary = store.session_summary(session_id)
            if with_cells:
                summary["cells_list"] = store.session_cells(session_id)
    s = summary["session"]
    text = [
        f"Session {s['id']}: {s['sample_id']} ({'active' if s['active'] else 'ended ' + utc(s['ended_at'])})",
        f"  started {utc(s['started_at'])}" + (f", note: {s['note']}" if s["note"] else ""),
        f"  {describe(summary)}",
        f"  {summary['who_note']}",
    ]
    for c in summary.get("cells_list", []):
        text.append(f"  cell {c['id']:>5} track {c['track_id']:>5} {c['label']:<14} p={c['p_malignant']:.3f}")
    _emit(summary, as_json, "\n".join(text))


@session_group.command("export")
@click.argument("session_id", type=int, required=False)
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("."))
@state_options
def export_cmd(
    session_id: int | None, out_dir: Path, state_dir: Path, url: str | None, token: str | None
) -> None:
    """Write a CSV (one row per cell) and a self-contained HTML report of a session."""
    with open_store(state_dir) as store:
        paths = export_session(store, _pick_session(store, session_id), out_dir)
    for kind, path in paths.items():
        click.echo(f"{kind}: {path}")
