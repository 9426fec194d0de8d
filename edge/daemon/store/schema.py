"""The session database's schema and its migrations.

The schema version lives in ``PRAGMA user_version``; :data:`MIGRATIONS` is an ordered list whose
n-th entry takes a database from version n to n+1. A database is only ever moved forward, inside
one transaction per step, so a power cut during an upgrade leaves the old version intact. A
database written by a newer leukoedge (a version above :data:`SCHEMA_VERSION`) is refused rather
than guessed at.
"""

from __future__ import annotations

import logging
import sqlite3

from leukoedge.errors import DataError

logger = logging.getLogger(__name__)

_V1 = """
CREATE TABLE sessions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sample_id TEXT NOT NULL,
    note TEXT NOT NULL DEFAULT '',
    started_at REAL NOT NULL,
    ended_at REAL
);
CREATE TABLE cells (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id INTEGER NOT NULL REFERENCES sessions(id),
    track_id INTEGER NOT NULL,
    first_seen_ts REAL NOT NULL,
    last_seen_ts REAL NOT NULL,
    x0 INTEGER NOT NULL, y0 INTEGER NOT NULL, x1 INTEGER NOT NULL, y1 INTEGER NOT NULL,
    p_malignant REAL NOT NULL,
    label TEXT NOT NULL,
    n_classifications INTEGER NOT NULL,
    model_sha256 TEXT NOT NULL,
    crop_path TEXT
);
CREATE TABLE frame_stats (
    session_id INTEGER NOT NULL REFERENCES sessions(id),
    minute_start_ts REAL NOT NULL,
    frames_captured INTEGER NOT NULL,
    frames_processed INTEGER NOT NULL,
    frames_dropped INTEGER NOT NULL,
    mean_infer_ms REAL,
    PRIMARY KEY (session_id, minute_start_ts)
);
"""

# Version 2: crop accounting for the disk budget (bytes per crop, and what happened to it), an index
# for per-session queries, and the "at most one active session" rule enforced by the database itself.
_V2 = """
ALTER TABLE cells ADD COLUMN crop_bytes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE cells ADD COLUMN crop_state TEXT NOT NULL DEFAULT 'none';
UPDATE cells SET crop_state = 'saved' WHERE crop_path IS NOT NULL;
CREATE INDEX cells_by_session ON cells(session_id, id);
CREATE UNIQUE INDEX one_active_session ON sessions((ended_at IS NULL)) WHERE ended_at IS NULL;
"""

# Version 3: whether a cell is a suspected blast, decided once from the contract of the bundle that
# counted it, so no reader compares labels with a class name. Every bundle that wrote a version-2
# database named its positive class "malignant", so older rows are backfilled from that label.
_V3 = """
ALTER TABLE cells ADD COLUMN suspected_blast INTEGER NOT NULL DEFAULT 0;
UPDATE cells SET suspected_blast = (label = 'malignant');
"""

#: MIGRATIONS[n] takes the database from user_version n to n + 1.
MIGRATIONS: tuple[str, ...] = (_V1, _V2, _V3)
#: The version this code writes and reads.
SCHEMA_VERSION = len(MIGRATIONS)

#: What ``cells.crop_state`` may hold.
CROP_STATES = ("none", "saved", "skipped", "failed", "evicted")


#: Tables every leukoedge session database of version 1 or later holds.
OUR_TABLES = frozenset({"sessions", "cells", "frame_stats"})


def check_usable(conn: sqlite3.Connection, path: object) -> None:
    """DataError, saying what to do, when ``path`` is another program's database or is damaged.

    A database of version 0 must be empty (a new file); a later one must hold our tables. Then
    ``PRAGMA quick_check`` reads every page, so a damaged page is found at start, not mid-smear.
    """
    try:
        version = schema_version(conn)
        tables = {
            r[0]
            for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            if not str(r[0]).startswith("sqlite_")
        }
        if (version == 0 and tables) or (0 < version <= SCHEMA_VERSION and not tables >= OUR_TABLES):
            raise DataError(
                f"{path} is not a leukoedge session database (it holds the tables "
                f"{', '.join(sorted(tables)) or 'of another program'}); leukoedge will not write into it. "
                "Move it away, or point store.state_dir at another folder"
            )
        problems = [str(r[0]) for r in conn.execute("PRAGMA quick_check(3)")]
    except sqlite3.DatabaseError as e:
        if isinstance(e, sqlite3.OperationalError):
            raise
        problems = [str(e)]
    if problems != ["ok"]:
        raise DataError(
            f"the session database {path} is damaged ({'; '.join(problems)}). Stop the daemon, keep a copy "
            f"of the file, recover what it holds with: sqlite3 {path} .recover | sqlite3 recovered.db - "
            "then put recovered.db in its place (or move the damaged file away to start an empty one)"
        )


def schema_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection, upto: int = SCHEMA_VERSION) -> int:
    """Bring the database to version ``upto`` (default: the latest); returns the version reached.

    Each step runs in its own transaction together with the ``user_version`` bump, so either both
    happen or neither does. The connection must be in autocommit mode (``isolation_level=None``).
    """
    while True:
        # Read the version inside the write transaction: another process (the daemon and a
        # `leukoedge session` command) may have migrated the file while this one waited for the lock.
        conn.execute("BEGIN IMMEDIATE")
        try:
            current = schema_version(conn)
            if current > SCHEMA_VERSION:
                raise DataError(
                    f"the session database is at schema version {current}, newer than this leukoedge "
                    f"understands ({SCHEMA_VERSION}); upgrade leukoedge"
                )
            if current >= upto:
                conn.execute("COMMIT")
                return current
            for statement in (s.strip() for s in MIGRATIONS[current].split(";")):
                if statement:
                    conn.execute(statement)
            # PRAGMA takes no parameters; the value is an int from our own list, never user input.
            conn.execute(f"PRAGMA user_version = {current + 1:d}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        logger.info("session database migrated to schema version %d", current + 1)
