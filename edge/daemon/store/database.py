"""The session store: one SQLite database (plus crop PNGs) in the daemon's state folder.

Durability first: every counted cell is committed on its own, in WAL mode with
``synchronous=FULL``. In WAL mode NORMAL may lose the last transactions on a power cut (the WAL is
not fsynced at each commit); FULL fsyncs the WAL at every commit, which costs a few milliseconds
per cell on an SD card - nothing at a few cells per second - and means a cell that was reported as
counted is still there after the power comes back. WAL also lets the HTTP threads and the
``leukoedge session`` command read while the pipeline writes.

The pipeline writes from one thread and the HTTP server reads from others: one connection
(``check_same_thread=False``) guarded by a re-entrant lock. Queries are parameterized, always.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from leukoedge.daemon.store import cropfiles as cropio
from leukoedge.daemon.store.cropstore import CropAccounting
from leukoedge.daemon.store.schema import check_usable, migrate
from leukoedge.daemon.store.summary import blast_summary
from leukoedge.daemon.types import CountedCell
from leukoedge.errors import ConfigError, DataError, NoSuchSession, SessionError

logger = logging.getLogger(__name__)

DB_NAME = "leukoedge.db"
MAX_SAMPLE_ID = 200
MAX_NOTE = 2000

_CELL_COLUMNS = (
    "id, session_id, track_id, first_seen_ts, last_seen_ts, x0, y0, x1, y1, p_malignant, label, "
    "n_classifications, model_sha256, crop_path, crop_bytes, crop_state, suspected_blast"
)
_HAS_CELL = "SELECT 1 FROM cells WHERE session_id = ? AND track_id = ? LIMIT 1"
_SESSION_QUERY = """
SELECT s.id, s.sample_id, s.note, s.started_at, s.ended_at,
       COUNT(c.id) AS cells, COALESCE(SUM(c.suspected_blast), 0) AS blasts
FROM sessions s LEFT JOIN cells c ON c.session_id = s.id
"""


def validate_sample_id(sample_id: str, note: str = "") -> tuple[str, str]:
    """The sample id and note, stripped; ConfigError when empty, too long or with control characters."""
    sample_id, note = str(sample_id).strip(), str(note).strip()
    if not sample_id:
        raise ConfigError("a session needs a sample id")
    if len(sample_id) > MAX_SAMPLE_ID or len(note) > MAX_NOTE:
        raise ConfigError(f"sample id (max {MAX_SAMPLE_ID}) or note (max {MAX_NOTE}) too long")
    if re.search(r"[\x00-\x1f\x7f]", sample_id):
        raise ConfigError("the sample id must not contain control characters")
    return sample_id, note.replace("\x00", "")


def _row_id(cur: sqlite3.Cursor) -> int:
    """The id of the row an INSERT just made (sqlite3 types ``lastrowid`` as optional)."""
    if cur.lastrowid is None:
        raise DataError("the session database gave no id for a new row")
    return cur.lastrowid


class Store(CropAccounting):
    """Sessions, counted cells, per-minute frame statistics and cell crops in ``state_dir``."""

    def __init__(
        self,
        state_dir: str | os.PathLike,
        crops: str = "blasts",
        disk_budget_mb: float = 500,
        min_free_mb: float = 200,
        disk_usage: cropio.DiskUsage = shutil.disk_usage,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.db_path = self.state_dir / DB_NAME
        self.crops_dir = self.state_dir / "crops"
        self.saver = cropio.CropSaver(
            crops, int(disk_budget_mb * cropio.MB), int(min_free_mb * cropio.MB), disk_usage
        )
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.RLock()
        self._crop_bytes = 0

    # -- lifecycle -----------------------------------------------------------------------------
    def open(self) -> Store:
        with self._lock:
            if self._conn is not None:
                return self
            try:
                self.state_dir.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(
                    self.db_path, isolation_level=None, check_same_thread=False, timeout=10
                )
            except (OSError, sqlite3.Error) as e:
                raise DataError(f"cannot open the session database {self.db_path}: {e}") from e
            try:
                check_usable(conn, self.db_path)  # before WAL mode changes another program's file
                _configure(conn)
                migrate(conn)
            except sqlite3.Error as e:
                conn.close()
                raise DataError(f"cannot use the session database {self.db_path}: {e}") from e
            except BaseException:
                conn.close()
                raise
            self._conn = conn
            with self._tx():
                referenced = {
                    r[0] for r in conn.execute("SELECT crop_path FROM cells WHERE crop_path IS NOT NULL")
                }
                cropio.sweep(self.crops_dir, referenced, self.state_dir)
            self._crop_bytes = self._used_crop_bytes()
            return self

    def close(self) -> None:
        with self._lock:
            if self._conn is None:
                return
            try:
                self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except sqlite3.Error as e:
                logger.debug("checkpoint at close failed: %s", e)
            self._conn.close()
            self._conn = None

    def __enter__(self) -> Store:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise DataError("the session store is not open")
        return self._conn

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken at once (IMMEDIATE) so it never fails half-way on a lock."""
        with self._lock:
            conn = self.conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            _commit(conn)

    def _query(self, sql: str, params: tuple = ()) -> list[dict[str, Any]]:
        with self._lock:
            cur = self.conn.execute(sql, params)
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    # -- sessions ------------------------------------------------------------------------------
    def start_session(self, sample_id: str, note: str = "") -> int:
        """Start a session and return its id; SessionError while another one is active."""
        sample_id, note = validate_sample_id(sample_id, note)
        try:
            with self._tx() as conn:
                active = conn.execute("SELECT id, sample_id FROM sessions WHERE ended_at IS NULL").fetchone()
                if active:
                    raise SessionError(f"session {active[0]} ({active[1]}) is still active; stop it first")
                cur = conn.execute(
                    "INSERT INTO sessions (sample_id, note, started_at) VALUES (?, ?, ?)",
                    (sample_id, note, time.time()),
                )
        except sqlite3.IntegrityError as e:
            raise SessionError(f"another session is active: {e}") from e
        session_id = _row_id(cur)
        logger.info("session %d started (sample %r)", session_id, sample_id)
        return session_id

    def stop_session(self, session_id: int) -> None:
        """End an active session; SessionError when it has already ended, NoSuchSession if unknown."""
        with self._tx() as conn:
            row = conn.execute("SELECT ended_at FROM sessions WHERE id = ?", (int(session_id),)).fetchone()
            if row is None:
                raise NoSuchSession(f"no session {session_id}")
            if row[0] is not None:
                raise SessionError(f"session {session_id} has already ended")
            conn.execute("UPDATE sessions SET ended_at = ? WHERE id = ?", (time.time(), int(session_id)))
        logger.info("session %d stopped", session_id)

    def active_session(self) -> dict[str, Any] | None:
        rows = self._query(_SESSION_QUERY + " WHERE s.ended_at IS NULL GROUP BY s.id")
        return _session_dict(rows[0]) if rows else None

    def list_sessions(self) -> list[dict[str, Any]]:
        """All sessions, newest first, with their cell and suspected-blast counts."""
        rows = self._query(_SESSION_QUERY + " GROUP BY s.id ORDER BY s.id DESC")
        return [_session_dict(r) for r in rows]

    def session(self, session_id: int) -> dict[str, Any]:
        rows = self._query(_SESSION_QUERY + " WHERE s.id = ? GROUP BY s.id", (int(session_id),))
        if not rows:
            raise NoSuchSession(f"no session {session_id}")
        return _session_dict(rows[0])

    def session_cells(self, session_id: int) -> list[dict[str, Any]]:
        self.session(session_id)
        rows = self._query(
            f"SELECT {_CELL_COLUMNS} FROM cells WHERE session_id = ? ORDER BY id", (int(session_id),)
        )
        return [_cell_dict(r) for r in rows]

    def session_summary(self, session_id: int) -> dict[str, Any]:
        """Session, tallies, blast % with 95 % CI vs the WHO 20 % threshold, differential progress,
        count and % of each cell type (``cell_types``), frames."""
        session = self.session(session_id)
        frames = self._query(
            "SELECT COALESCE(SUM(frames_captured), 0) AS captured, COALESCE(SUM(frames_processed), 0) "
            "AS processed, COALESCE(SUM(frames_dropped), 0) AS dropped, "
            "SUM(mean_infer_ms * frames_processed) / NULLIF(SUM(frames_processed), 0) AS mean_infer_ms "
            "FROM frame_stats WHERE session_id = ?",
            (int(session_id),),
        )[0]
        shas = self._query(
            "SELECT DISTINCT model_sha256 FROM cells WHERE session_id = ? ORDER BY model_sha256",
            (int(session_id),),
        )
        by_type = self._query(
            "SELECT label, COUNT(*) AS n FROM cells WHERE session_id = ? GROUP BY label",
            (int(session_id),),
        )
        end = session["ended_at"] if session["ended_at"] is not None else time.time()
        return {
            "session": session,
            **blast_summary(session["blasts"], session["cells"], {r["label"]: r["n"] for r in by_type}),
            "duration_s": max(0.0, end - session["started_at"]),
            "frames": frames,
            "model_sha256s": [r["model_sha256"] for r in shas],
        }

    # -- cells and frame statistics -------------------------------------------------------------
    def add_cell(
        self, session_id: int, cell: CountedCell, crop_rgb: np.ndarray | None = None, late: bool = False
    ) -> int:
        """Record one counted cell (committed before returning) and, if configured and possible, its crop.

        A crop that cannot be saved (disk nearly full, budget spent, write error) never stops the
        cell from being recorded; :meth:`health` says why crops are off. ``late``: counted before
        the session ended, stored after (from the journal).
        """
        with self._lock:
            png, state = self._prepare_crop(cell.suspected_blast, crop_rgb)
            if png is not None and not self._room_for(len(png)):
                png, state = None, "skipped"
                self.saver.skipped_total += 1
            return self._insert_cell(session_id, cell, png, state, late)

    def has_cell(self, session_id: int, track_id: int) -> bool:
        """Whether the session already holds the cell of this track (track ids are unique in a session)."""
        return bool(self._query(_HAS_CELL, (int(session_id), int(track_id))))

    def _insert_cell(
        self, session_id: int, cell: CountedCell, png: bytes | None, state: str, late: bool
    ) -> int:
        x0, y0, x1, y1 = (int(v) for v in cell.bbox)
        with self._tx() as conn:
            active = conn.execute("SELECT ended_at FROM sessions WHERE id = ?", (int(session_id),)).fetchone()
            if active is None:
                raise NoSuchSession(f"no session {session_id}")
            if active[0] is not None and not late:
                raise SessionError(f"session {session_id} has ended; cells cannot be added")
            cur = conn.execute(
                "INSERT INTO cells (session_id, track_id, first_seen_ts, last_seen_ts, x0, y0, x1, y1, "
                "p_malignant, label, n_classifications, model_sha256, suspected_blast) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (int(session_id), int(cell.track_id), float(cell.first_seen_ts), float(cell.last_seen_ts),
                 x0, y0, x1, y1, float(cell.p_malignant), str(cell.label), int(cell.n_classifications),
                 str(cell.model_sha256), int(bool(cell.suspected_blast))),
            )  # fmt: skip
            cell_id = _row_id(cur)
            if png is not None:
                state = self._write_crop(conn, session_id, cell_id, png)
            conn.execute("UPDATE cells SET crop_state = ? WHERE id = ?", (state, cell_id))
        return cell_id

    def add_frame_stats(
        self,
        session_id: int,
        minute_start_ts: float,
        frames_captured: int,
        frames_processed: int,
        frames_dropped: int,
        mean_infer_ms: float | None,
    ) -> None:
        """Record one minute's frame counts; calling again for the same minute replaces its figures."""
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO frame_stats (session_id, minute_start_ts, frames_captured, frames_processed, "
                "frames_dropped, mean_infer_ms) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (session_id, minute_start_ts) DO UPDATE SET "
                "frames_captured = excluded.frames_captured, frames_processed = excluded.frames_processed, "
                "frames_dropped = excluded.frames_dropped, mean_infer_ms = excluded.mean_infer_ms",
                (int(session_id), float(minute_start_ts), int(frames_captured), int(frames_processed),
                 int(frames_dropped), None if mean_infer_ms is None else float(mean_infer_ms)),
            )  # fmt: skip

    def frame_stats(self, session_id: int) -> list[dict[str, Any]]:
        return self._query(
            "SELECT minute_start_ts, frames_captured, frames_processed, frames_dropped, mean_infer_ms "
            "FROM frame_stats WHERE session_id = ? ORDER BY minute_start_ts",
            (int(session_id),),
        )


def _configure(conn: sqlite3.Connection) -> None:
    """WAL, full sync, foreign keys and a busy timeout on a freshly opened connection."""
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise sqlite3.OperationalError(f"WAL journal mode unavailable (got {mode})")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=10000")


def _commit(conn: sqlite3.Connection) -> None:
    """COMMIT; when it fails (a full disk) roll back, as the transaction may still be open."""
    try:
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error as e:
                logger.debug("rollback after a failed commit failed: %s", e)
        raise


def _session_dict(row: dict[str, Any]) -> dict[str, Any]:
    row = dict(row)
    row["active"] = row["ended_at"] is None
    row["cells"], row["blasts"] = int(row["cells"]), int(row["blasts"])
    return row


def _cell_dict(row: dict[str, Any]) -> dict[str, Any]:
    row = dict(row)
    row["bbox"] = [row.pop("x0"), row.pop("y0"), row.pop("x1"), row.pop("y1")]
    row["suspected_blast"] = bool(row["suspected_blast"])
    return row
