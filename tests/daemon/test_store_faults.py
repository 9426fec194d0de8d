"""Storage faults: a full disk while counting, SIGTERM on a failing disk, a damaged or foreign database.

The full disk is real: the running daemon's file-size limit (RLIMIT_FSIZE, set from outside with
prlimit) is lowered below what SQLite must write, so every commit fails with EFBIG as on a full
file system (CPython ignores SIGXFSZ), then lifted again.
"""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from support.model import make_test_bundle
from support.provider import crop, make_cell

from leukoedge.daemon.store.database import DB_NAME, Store
from leukoedge.daemon.store.journal import JOURNAL_NAME
from leukoedge.daemon.store.writer import StoreWriter
from leukoedge.errors import DataError

TIMEOUT_S = 60
#: Below one WAL frame (a 4 KiB page plus its header): no commit fits, a short journal does.
FULL_DISK_BYTES = 4096
BACKLOG = 8
TOKEN = "a-long-enough-test-token"

needs_prlimit = pytest.mark.skipif(
    not hasattr(resource, "prlimit") or not hasattr(signal, "SIGKILL"), reason="needs Linux prlimit"
)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_test_bundle(tmp_path_factory.getbasetemp() / "model-bundles")


class Daemon:
    """``python -m leukoedge.daemon`` as a child process; its log is copied from a pipe, so the
    daemon's own file-size limit never touches it."""

    def __init__(self, tmp_path: Path, *args: str) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "leukoedge.daemon", "--log-level", "info", *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            self.lines.append(raw.decode("utf-8", "replace"))

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def wait_for(self, predicate, what: str):
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            if self.proc.poll() is not None:
                pytest.fail(f"daemon exited ({self.proc.returncode}) waiting for {what}:\n{self.log}")
            time.sleep(0.1)
        self.proc.kill()
        pytest.fail(f"timed out waiting for {what}:\n{self.log}")

    def wait(self) -> int:
        code = self.proc.wait(TIMEOUT_S)
        self._reader.join(5)
        return code

    def file_size_limit(self, nbytes: int) -> None:
        _, hard = resource.prlimit(self.proc.pid, resource.RLIMIT_FSIZE)
        resource.prlimit(self.proc.pid, resource.RLIMIT_FSIZE, (nbytes, hard))

    def counted_and_stored(self) -> tuple[int, int]:
        found = re.search(r"(\d+) cells counted in a session, (\d+) stored", self.log)
        assert found, self.log
        return int(found[1]), int(found[2])


def _config(tmp_path: Path, model: Path, state: Path, sample: str) -> Path:
    config = tmp_path / "leukoedge.toml"
    (tmp_path / "token").write_text(TOKEN)
    config.write_text(
        f'[source]\nuri = "synthetic://?seed=2&fps=30"\n[model]\npath = "{model}"\n'
        f'[store]\nstate_dir = "{state}"\ncrops = "all"\nbacklog_limit = {BACKLOG}\n'
        f'[http]\nport = 0\ntoken_file = "{tmp_path / "token"}"\n[session]\nsample_id = "{sample}"\n'
    )
    return config


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _post(url: str) -> tuple[int, dict]:
    request = urllib.request.Request(
        url, data=b"{}", method="POST", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _status(url: str) -> dict:
    return json.loads(_get(url + "/api/status")[1])


def _waiting_cells(status: dict) -> int:
    """Cells counted in the session (this run, fresh state) and not yet stored."""
    return status["counts"]["cells_total"] - status["session"]["cells"]


def _metrics(url: str) -> dict[str, float]:
    text = _get(url + "/metrics")[1].decode()
    return {m[1]: float(m[2]) for m in re.finditer(r"^(leukoedge_\w+) (\S+)$", text, re.M)}


def _cells(state: Path) -> list[tuple[int, int]]:
    with sqlite3.connect(f"file:{state / DB_NAME}?mode=ro", uri=True, timeout=10) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return conn.execute("SELECT session_id, track_id FROM cells ORDER BY id").fetchall()


def _sessions(state: Path) -> list[tuple]:
    with sqlite3.connect(f"file:{state / DB_NAME}?mode=ro", uri=True, timeout=10) as conn:
        return conn.execute("SELECT id, sample_id, ended_at FROM sessions ORDER BY id").fetchall()


@needs_prlimit
def test_a_full_disk_loses_no_counted_cell_and_is_unhealthy_until_it_is_written(tmp_path, model):
    state = tmp_path / "state"
    daemon = Daemon(tmp_path, "--config", str(_config(tmp_path, model, state, "FULL")))
    try:
        url = daemon.wait_for(lambda: re.search(r"status page at (\S+)", daemon.log), "the URL")[1]
        daemon.wait_for(lambda: _status(url)["session"]["cells"] >= 3, "3 stored cells")
        assert _get(url + "/healthz")[0] == 200

        daemon.file_size_limit(FULL_DISK_BYTES)  # the disk is full
        health = daemon.wait_for(
            lambda: (h := _status(url)["health"])["store_backlog"] >= 1 and h, "a backlog"
        )
        assert health["saving"] is False and health["healthy"] is False
        code, body = _get(url + "/healthz")
        assert code == 503
        assert "not saving" in json.loads(body)["reason"]
        metrics = _metrics(url)
        assert metrics["leukoedge_store_errors_total"] >= 1 and metrics["leukoedge_store_backlog"] >= 1
        assert metrics["leukoedge_healthy"] == 0
        # the session cannot end while its cells wait: it stays open, and says why
        code, answer = _post(url + "/api/sessions/stop")
        assert code == 503 and "stays open: not saving" in answer["error"]
        assert _status(url)["session"]["sample_id"] == "FULL"

        # the backlog fills (a quarter in memory, the rest in the journal) and counting stops
        health = daemon.wait_for(
            lambda: (h := _status(url)["health"])["counting"] is False and h, "a full backlog"
        )
        assert health["store_backlog"] == BACKLOG and health["store_journaled"] >= BACKLOG - BACKLOG // 4
        assert (state / JOURNAL_NAME).is_file()
        code, body = _get(url + "/healthz")
        assert code == 503 and "not counting" in json.loads(body)["reason"]
        daemon.wait_for(lambda: _status(url)["counts"]["not_counted_store_full"] >= 1, "a cell not counted")
        assert "counting stopped" in daemon.log

        daemon.file_size_limit(resource.RLIM_INFINITY)  # space again
        daemon.wait_for(lambda: _status(url)["health"]["store_backlog"] == 0, "the backlog written")
        assert _get(url + "/healthz")[0] == 200
        assert not (state / JOURNAL_NAME).exists()
        daemon.wait_for(lambda: "counting again" in daemon.log, "counting again")

        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.wait() == 0, daemon.log
    finally:
        if daemon.proc.poll() is None:
            daemon.proc.kill()
    counted, stored = daemon.counted_and_stored()
    cells = _cells(state)
    assert counted == stored == len(cells) == len(set(cells))  # every counted cell, once
    ((_, _, ended),) = _sessions(state)
    assert ended is not None
    assert "Traceback" not in daemon.log


@needs_prlimit
def test_sigterm_on_a_full_disk_keeps_the_cells_and_exits_with_a_clear_message(tmp_path, model):
    state = tmp_path / "state"
    config = _config(tmp_path, model, state, "TERM")
    daemon = Daemon(tmp_path, "--config", str(config))
    try:
        url = daemon.wait_for(lambda: re.search(r"status page at (\S+)", daemon.log), "the URL")[1]
        daemon.wait_for(lambda: _status(url)["session"]["cells"] >= 2, "2 stored cells")
        daemon.file_size_limit(FULL_DISK_BYTES)
        daemon.wait_for(lambda: _waiting_cells(_status(url)) >= 2, "cells waiting")
        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.wait() == 5, daemon.log
    finally:
        if daemon.proc.poll() is None:
            daemon.proc.kill()
    log = daemon.log
    assert "Traceback" not in log
    assert f"kept in {state / JOURNAL_NAME}, written at the next start" in log
    assert "the session stays open" in log
    counted, stored = daemon.counted_and_stored()
    assert stored < counted and len(_cells(state)) == stored
    ((session_id, _, ended),) = _sessions(state)
    assert ended is None

    # the next start stores the journal into the session, counts on, and closes it at the end
    again = Daemon(tmp_path, "--config", str(config), "--no-http", "--max-frames", "60")
    assert again.wait() == 0, again.log
    assert "by an earlier run: storing them" in again.log
    counted_2, stored_2 = again.counted_and_stored()
    cells = _cells(state)
    assert len(cells) == len(set(cells)) == counted + counted_2 and stored_2 == counted_2
    ((same, _, ended),) = _sessions(state)
    assert same == session_id and ended is not None
    assert not (state / JOURNAL_NAME).exists()


def _store_file(tmp_path: Path) -> Path:
    state = tmp_path / "state"
    with Store(state) as s:
        sid = s.start_session("A")
        for track in range(1, 401):
            s.add_cell(sid, make_cell(track, blast=track % 3 == 0))
        s.stop_session(sid)
        s.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return state


def _run_daemon(tmp_path: Path, model: Path, state: Path) -> subprocess.CompletedProcess:
    args = ["--state-dir", str(state), "--model", str(model), "--no-http", "--sample-id", "B"]
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "leukoedge.daemon",
            *args,
            "--source",
            "synthetic://?fps=0",
            "--max-frames",
            "20",
        ],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )


def test_a_damaged_index_page_is_a_clear_error_at_start(tmp_path, model):
    state = _store_file(tmp_path)
    with sqlite3.connect(state / DB_NAME) as conn:
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        (root,) = conn.execute(
            "SELECT rootpage FROM sqlite_master WHERE name = 'cells_by_session'"
        ).fetchone()
    conn.close()
    with open(state / DB_NAME, "r+b") as f:  # overwrite the cell pointers of the index's root page
        f.seek((root - 1) * page_size + 8)
        f.write(b"\xff" * 200)
    with pytest.raises(DataError, match="is damaged") as caught:
        Store(state).open()
    assert ".recover" in str(caught.value)

    result = _run_daemon(tmp_path, model, state)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert f"the session database {state / DB_NAME} is damaged" in result.stderr


def test_a_foreign_database_is_refused_and_left_as_it_was(tmp_path, model):
    state = tmp_path / "state"
    state.mkdir()
    with sqlite3.connect(state / DB_NAME) as conn:
        conn.execute("CREATE TABLE photos (id INTEGER PRIMARY KEY, path TEXT)")
        conn.execute("INSERT INTO photos (path) VALUES ('holiday.jpg')")
    conn.close()
    before = (state / DB_NAME).read_bytes()

    result = _run_daemon(tmp_path, model, state)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "is not a leukoedge session database (it holds the tables photos)" in result.stderr
    assert "store.state_dir" in result.stderr
    assert (state / DB_NAME).read_bytes() == before

    # a foreign file that happens to use user_version is refused too
    with sqlite3.connect(state / DB_NAME) as conn:
        conn.execute("PRAGMA user_version = 2")
    conn.close()
    with pytest.raises(DataError, match="not a leukoedge session database"):
        Store(state).open()


def test_the_journal_of_an_earlier_run_is_stored_once_in_order(tmp_path):
    state = tmp_path / "state"
    with Store(state) as store:
        sid = store.start_session("J")
        store.add_cell(sid, make_cell(1, blast=False))
        store.stop_session(sid)  # ended before the journal could be written: the cells still belong to it
        records = [
            {"kind": "cell", "session_id": sid, "cell": make_cell(t, blast=t == 3).to_dict()}
            for t in (1, 2, 3)
        ]
        records.append({"kind": "frame_stats", "args": [sid, 60.0, 10, 9, 1, 2.5]})
        lines = "".join(json.dumps(r) + "\n" for r in records) + '{"kind": "cell", "sess'  # cut by a crash
        (state / JOURNAL_NAME).write_text(lines)

        replayed: list[tuple[int, bool]] = []
        writer = StoreWriter()
        assert writer.attach(store, lambda s, blast: replayed.append((s, blast))) == 4
        assert writer.pending == 0 and not (state / JOURNAL_NAME).exists()
        assert [c["track_id"] for c in store.session_cells(sid)] == [1, 2, 3]  # track 1 not twice
        assert replayed == [(sid, False), (sid, True)]
        assert store.frame_stats(sid)[0]["frames_captured"] == 10


def test_a_failing_store_keeps_writes_in_order_up_to_the_limit(tmp_path):
    state = tmp_path / "state"
    with Store(state, crops="all") as store:
        sid = store.start_session("ORDER")
        writer = StoreWriter(limit=BACKLOG)
        writer.attach(store)
        store.conn.execute("PRAGMA query_only = ON")  # every write now fails in SQLite itself
        writer.start()
        accepted = [writer.submit_cell(sid, make_cell(t, blast=False), crop()) for t in range(1, BACKLOG + 3)]
        assert accepted == [True] * BACKLOG + [False, False]
        assert writer.full and not writer.admit() and "not counting" in writer.problem()
        assert not writer.drain(timeout=1.0) and "readonly" in writer.failing and writer.errors >= 1
        # a quarter in memory with their crops, the rest in the journal without
        journal = [json.loads(line) for line in (state / JOURNAL_NAME).read_text().splitlines()]
        assert [r["cell"]["track_id"] for r in journal] == list(range(BACKLOG // 4 + 1, BACKLOG + 1))

        store.conn.execute("PRAGMA query_only = OFF")  # the store can be written again
        assert writer.drain(timeout=30)
        assert writer.admit() and writer.problem() == "" and writer.finish() == 0
        cells = store.session_cells(sid)
        assert [c["track_id"] for c in cells] == list(range(1, BACKLOG + 1))  # in order, each once
        assert [c["crop_state"] for c in cells] == ["saved"] * (BACKLOG // 4) + ["none"] * (
            BACKLOG - BACKLOG // 4
        )
        assert not (state / JOURNAL_NAME).exists()
