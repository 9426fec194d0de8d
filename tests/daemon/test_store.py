"""The session store: schema and migrations, durability settings, sessions, cells, crops, disk budget."""

from __future__ import annotations

import errno
import logging
import sqlite3
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from support.provider import crop, make_cell

from leukoedge import atomic
from leukoedge.daemon.store import cropfiles as cropio
from leukoedge.daemon.store.database import DB_NAME, Store
from leukoedge.daemon.store.schema import SCHEMA_VERSION, migrate
from leukoedge.daemon.store.summary import blast_summary, who_comparison
from leukoedge.errors import ConfigError, DataError, NoSuchSession, SessionError
from leukoedge.metrics import wilson_interval

GB = 1024**3


def disk(free_bytes: int):
    return lambda path: SimpleNamespace(total=64 * GB, used=64 * GB - free_bytes, free=free_bytes)


@pytest.fixture
def store(tmp_path: Path):
    with Store(tmp_path / "state", crops="blasts") as s:
        yield s


def crop_files(state: Path) -> list[Path]:
    return sorted(p for p in (state / "crops").rglob("*") if p.is_file())


def test_schema_wal_full_sync_and_version(store: Store) -> None:
    conn = store.conn
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"sessions", "cells", "frame_stats"} <= tables


def test_migrates_a_version_1_database_and_keeps_its_data(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    conn = sqlite3.connect(state / DB_NAME, isolation_level=None)
    assert migrate(conn, upto=1) == 1
    conn.execute("INSERT INTO sessions (sample_id, started_at, ended_at) VALUES ('old', 1.0, 2.0)")
    conn.execute(
        "INSERT INTO cells (session_id, track_id, first_seen_ts, last_seen_ts, x0, y0, x1, y1, p_malignant, "
        "label, n_classifications, model_sha256, crop_path) "
        "VALUES (1, 7, 1.0, 1.5, 0, 0, 5, 5, 0.8, 'malignant', 3, 'x', 'crops/1/00000001.png')"
    )
    (state / "crops" / "1").mkdir(parents=True)
    (state / "crops" / "1" / "00000001.png").write_bytes(cropio.encode_png(crop()))
    conn.close()
    with Store(state) as s:
        assert s.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        (cell,) = s.session_cells(1)
        assert (cell["track_id"], cell["crop_state"], cell["crop_path"]) == (
            7,
            "saved",
            "crops/1/00000001.png",
        )
        assert s.session(1)["sample_id"] == "old"
        assert s.crop_file(cell) is not None  # a referenced crop survives the start-up sweep


def test_refuses_a_database_from_a_newer_version(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    conn = sqlite3.connect(state / DB_NAME)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(DataError, match="newer"):
        Store(state).open()


def test_quotes_and_sql_in_sample_ids_are_data(store: Store) -> None:
    nasty = 'O\'Brien "x"; DROP TABLE cells; --'
    sid = store.start_session(nasty, note="it's a note; DELETE FROM sessions")
    store.add_cell(sid, make_cell(1, blast=False))
    assert store.session(sid)["sample_id"] == nasty
    assert store.session(sid)["note"] == "it's a note; DELETE FROM sessions"
    assert [s["sample_id"] for s in store.list_sessions()] == [nasty]
    assert len(store.session_cells(sid)) == 1


def test_at_most_one_active_session(store: Store) -> None:
    first = store.start_session("A")
    with pytest.raises(SessionError, match="still active"):
        store.start_session("B")
    assert store.active_session()["id"] == first
    store.stop_session(first)
    with pytest.raises(SessionError, match="already ended"):
        store.stop_session(first)
    with pytest.raises(NoSuchSession):
        store.stop_session(999)
    with pytest.raises(SessionError, match="ended"):
        store.add_cell(first, make_cell(1, blast=True))
    second = store.start_session("B")
    assert store.active_session()["id"] == second
    # The database enforces it too, whatever code writes to it.
    with pytest.raises(sqlite3.IntegrityError):
        store.conn.execute("INSERT INTO sessions (sample_id, started_at) VALUES ('C', 0)")
    for bad in ("", "   ", "a\nb", "x" * 201):
        with pytest.raises(ConfigError):
            store.start_session(bad)


def test_cells_are_committed_at_once_and_crops_follow_the_mode(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with Store(state, crops="blasts") as s:
        sid = s.start_session("S1")
        blast_id = s.add_cell(sid, make_cell(1, blast=True), crop(100))
        other_id = s.add_cell(sid, make_cell(2, blast=False), crop(50))
        # Another connection sees both cells before this store is closed: each add_cell committed.
        with Store(state) as reader:
            cells = {c["id"]: c for c in reader.session_cells(sid)}
        assert cells[blast_id]["crop_state"] == "saved"
        assert cells[blast_id]["crop_path"] == f"crops/{sid}/{blast_id:08d}.png"
        assert cells[other_id]["crop_state"] == "none" and cells[other_id]["crop_path"] is None
        saved = np.asarray(Image.open(state / cells[blast_id]["crop_path"]))
        assert np.array_equal(saved, crop(100))
        assert [p.name for p in crop_files(state)] == [f"{blast_id:08d}.png"]  # no temporary files left
        assert s.health()["crops_saved_total"] == 1
    with Store(tmp_path / "all", crops="all") as s, Store(tmp_path / "none", crops="none") as n:
        sid, nid = s.start_session("S"), n.start_session("S")
        s.add_cell(sid, make_cell(1, blast=False), crop())
        n.add_cell(nid, make_cell(1, blast=True), crop())
        assert s.session_cells(sid)[0]["crop_state"] == "saved"
        assert n.session_cells(nid)[0]["crop_path"] is None
        assert n.health()["crops_saving"] is False and "crops = none" in n.health()["crops_reason"]


def test_failed_crop_write_keeps_the_cell_and_leaves_no_partial_file(
    store: Store, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    sid = store.start_session("S")

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", no_space)
    with caplog.at_level(logging.WARNING, logger="leukoedge.daemon.store.cropfiles"):
        ids = [store.add_cell(sid, make_cell(i, blast=True), crop()) for i in range(3)]
    assert [c["crop_state"] for c in store.session_cells(sid)] == ["failed"] * 3
    assert crop_files(store.state_dir) == []
    health = store.health()
    assert health["crops_saving"] is False and "No space left" in health["crops_reason"]
    assert len([r for r in caplog.records if "not saving" in r.getMessage()]) == 1  # once, not per cell
    monkeypatch.undo()
    store.add_cell(sid, make_cell(9, blast=True), crop())
    assert store.health()["crops_saving"] is True
    assert len(ids) == 3 and store.session(sid)["cells"] == 4


def test_nearly_full_disk_stops_crops_but_not_counting(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    free = {"bytes": 100 * 1024 * 1024}
    usage = lambda p: SimpleNamespace(total=GB, used=GB - free["bytes"], free=free["bytes"])  # noqa: E731
    with Store(tmp_path / "state", crops="all", min_free_mb=200, disk_usage=usage) as s:
        sid = s.start_session("S")
        with caplog.at_level(logging.WARNING):
            for i in range(5):
                s.add_cell(sid, make_cell(i, blast=i % 2 == 0), crop())
        assert s.session(sid)["cells"] == 5
        assert crop_files(s.state_dir) == []
        health = s.health()
        assert health["crops_saving"] is False and health["crops_state"] == "disk_low"
        assert "disk nearly full" in health["crops_reason"]
        assert len([r for r in caplog.records if "not saving" in r.getMessage()]) == 1
        free["bytes"] = 10 * GB
        s.add_cell(sid, make_cell(9, blast=True), crop())
        assert s.health()["crops_saving"] is True and len(crop_files(s.state_dir)) == 1


def test_tiny_budget_evicts_oldest_crops_of_closed_sessions_then_stops(tmp_path: Path) -> None:
    size = len(cropio.encode_png(crop()))
    budget_mb = 4.5 * size / cropio.MB  # room for four crops
    with Store(tmp_path / "state", crops="all", disk_budget_mb=budget_mb, disk_usage=disk(10 * GB)) as s:
        old = s.start_session("old")
        old_ids = [s.add_cell(old, make_cell(i, blast=True), crop()) for i in range(4)]
        s.stop_session(old)
        new = s.start_session("new")
        s.add_cell(new, make_cell(10, blast=True), crop())
        old_cells = s.session_cells(old)
        assert old_cells[0]["crop_state"] == "evicted" and old_cells[0]["crop_path"] is None
        assert not (s.state_dir / f"crops/{old}/{old_ids[0]:08d}.png").exists()
        assert old_cells[-1]["crop_state"] == "saved"  # the newest old crops stay while they fit
        for i in range(11, 16):
            s.add_cell(new, make_cell(i, blast=True), crop())
        health = s.health()
        assert health["crops_state"] == "budget_full" and "budget" in health["crops_reason"]
        assert all(c["crop_path"] is None for c in s.session_cells(old))
        assert s.session(new)["cells"] == 6  # counting went on
        assert health["crop_bytes"] <= health["disk_budget_bytes"]
        assert sum(p.stat().st_size for p in crop_files(s.state_dir)) == health["crop_bytes"]


def test_open_sweeps_leftover_temporary_and_orphan_crops(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with Store(state, crops="all") as s:
        sid = s.start_session("S")
        kept = s.add_cell(sid, make_cell(1, blast=True), crop())
    leftover = state / "crops" / str(sid) / ".00000002.png.123.tmp"
    orphan = state / "crops" / str(sid) / "00000003.png"
    leftover.write_bytes(b"half")
    orphan.write_bytes(b"no row")
    with Store(state) as s:
        assert [p.name for p in crop_files(state)] == [f"{kept:08d}.png"]
        assert s.health()["crop_bytes"] > 0


def test_frame_stats_upsert_per_minute(store: Store) -> None:
    sid = store.start_session("S")
    store.add_frame_stats(sid, 60.0, 100, 90, 10, 5.0)
    store.add_frame_stats(sid, 60.0, 120, 100, 20, 6.0)  # same minute: replaced
    store.add_frame_stats(sid, 120.0, 60, 60, 0, 3.0)
    assert [r["frames_captured"] for r in store.frame_stats(sid)] == [120, 60]
    frames = store.session_summary(sid)["frames"]
    assert (frames["captured"], frames["processed"], frames["dropped"]) == (180, 160, 20)
    assert frames["mean_infer_ms"] == pytest.approx((6.0 * 100 + 3.0 * 60) / 160)


def test_summary_blast_percent_ci_and_who_comparison(store: Store) -> None:
    sid = store.start_session("S")
    for i in range(40):
        store.add_cell(sid, make_cell(i, blast=i < 10))
    summary = store.session_summary(sid)
    assert (summary["cells"], summary["blasts"], summary["non_blasts"]) == (40, 10, 30)
    assert summary["blast_pct"] == pytest.approx(25.0)
    lo, hi = summary["blast_ci95_pct"]
    assert lo == pytest.approx(14.19, abs=0.01) and hi == pytest.approx(40.19, abs=0.01)
    assert summary["who_comparison"] == "inconclusive"
    assert summary["differential"] == {
        "counted": 40, "minimum": 100, "target": 200, "progress": 0.2, "status": "collecting",
    }  # fmt: skip
    assert summary["model_sha256s"] == ["ab" * 32]
    assert "not a diagnosis" in summary["who_note"]


def test_wilson_interval_and_comparison_edges() -> None:
    assert wilson_interval(0, 0) == (0.0, 1.0)
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    assert who_comparison(80, 200) == "above"
    assert who_comparison(10, 200) == "below"
    assert who_comparison(40, 200) == "inconclusive"
    assert who_comparison(0, 0) == "no cells"
    assert blast_summary(0, 0)["blast_pct"] is None
    assert blast_summary(150, 250)["differential"]["status"] == "complete"


def test_writer_and_readers_on_several_threads(store: Store) -> None:
    sid = store.start_session("S")
    errors: list[BaseException] = []
    done = threading.Event()

    def read() -> None:
        try:
            while not done.is_set():
                store.list_sessions()
                store.session_summary(sid)
                store.health()
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    readers = [threading.Thread(target=read) for _ in range(3)]
    for t in readers:
        t.start()
    for i in range(60):
        store.add_cell(sid, make_cell(i, blast=i % 3 == 0), crop())
    done.set()
    for t in readers:
        t.join()
    assert errors == []
    assert store.session(sid)["cells"] == 60 and store.session(sid)["blasts"] == 20


def test_atomic_write_fsyncs_file_and_folder_and_keeps_the_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    real_fsync = atomic.os.fsync

    def record(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(atomic.os, "fsync", record)
    target = tmp_path / "sub" / "model.tflite"
    atomic.write_atomic(target, b"abc", 0o644)
    assert target.read_bytes() == b"abc" and (target.stat().st_mode & 0o777) == 0o644
    assert len(synced) == 2  # the file, then the folder that holds its new name
    assert [p.name for p in target.parent.iterdir()] == ["model.tflite"]
