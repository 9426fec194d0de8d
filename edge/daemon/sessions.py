"""Which session the daemon's counted cells go to, and the figures written into it.

A session belongs to the store, not to the daemon: a restart resumes the open one (a restart must
not split a count), and ``leukoedge session start/stop`` may change it straight on the database
while the daemon runs, so the daemon follows the store's open session instead of writing into one
that has ended. One lock guards the session and its frame-statistics interval, so a figure is
never written to the session after the one it was measured in.
"""

from __future__ import annotations

import logging
import math
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

from leukoedge.daemon.store.database import Store
from leukoedge.daemon.store.writer import StoreWriter
from leukoedge.errors import LeukoEdgeError, SessionError, StoreUnavailable

logger = logging.getLogger(__name__)

#: How long stopping a session waits for its cells to be stored (when the store is being written).
STOP_WAIT_S = 30.0

#: (frames captured, processed, dropped, seconds spent processing, frames timed): running totals.
Counters = tuple[int, int, int, float, int]


class FrameStats:
    """Frame figures per interval of ``interval_s`` seconds, as differences of running totals."""

    def __init__(self, counters: Callable[[], Counters], writer: StoreWriter, interval_s: float) -> None:
        self.counters = counters
        self.writer = writer
        self.interval_s = interval_s
        self._bucket: tuple[float, int | None, Counters] | None = None

    def write(self, store: Store | None, session_id: int | None, reset: bool = False) -> None:
        """Write this interval's figures (replacing earlier writes of the same interval) to the session."""
        start = math.floor(time.time() / self.interval_s) * self.interval_s
        counters = self.counters()
        if self._bucket is None:
            self._bucket = (start, session_id, counters)
        b_start, b_session, base = self._bucket
        if b_session is not None and store is not None:
            d = [now - then for now, then in zip(counters, base, strict=True)]
            mean_ms = 1000.0 * d[3] / d[4] if d[4] else None
            self.writer.submit_frame_stats(b_session, b_start, d[0], d[1], d[2], mean_ms)
        if reset or start != b_start or session_id != b_session:
            self._bucket = (start, session_id, counters)

    def restart(self) -> None:
        """Start the next interval from the totals of the next write (a session began or ended)."""
        self._bucket = None


class Sessions:
    """The session counted cells go to (or none), its running counts, and the store behind it."""

    def __init__(self, writer: StoreWriter, frame_stats: FrameStats) -> None:
        self.store: Store | None = None
        self.writer = writer
        self.frame_stats = frame_stats
        self.lock = threading.RLock()
        self._id: int | None = None
        self._counts = {"cells": 0, "blasts": 0}
        self._info: dict[str, Any] = {}

    @property
    def current_id(self) -> int | None:
        with self.lock:
            return self._id

    def open_store(self) -> Store:
        if self.store is None:
            raise StoreUnavailable("no session store")
        return self.store

    def resume_or_start(self, wanted: str, note: str) -> None:
        """Continue an open session (a restart must not split a count), or start the configured one."""
        store = self.open_store()
        active = store.active_session()
        if active and wanted and active["sample_id"] != wanted:
            logger.info("closing session %d (%s) for sample %r", active["id"], active["sample_id"], wanted)
            store.stop_session(active["id"])
            active = None
        if active:
            self.adopt(active)
            logger.info("resuming session %d (sample %r)", active["id"], active["sample_id"])
        elif wanted:
            self.adopt(store.session(store.start_session(wanted, note)))

    def adopt(self, session: dict[str, Any] | None) -> None:
        """Make a store session (as ``Store.session`` returns it) the one counted cells go to."""
        with self.lock:
            self._id = None if session is None else int(session["id"])
            session = session or {}
            self._counts = {"cells": int(session.get("cells", 0)), "blasts": int(session.get("blasts", 0))}
            self._info = {k: session.get(k) for k in ("sample_id", "note", "started_at")}

    def first_track_id(self) -> int:
        """Track ids go on from the resumed session's highest, so they stay unique across restarts."""
        return 1 + max(self.counted_track_ids(), default=0)

    def counted_track_ids(self) -> set[int]:
        """The track ids of the cells the store holds for the current session."""
        session_id = self.current_id
        if session_id is None:
            return set()
        return {int(c["track_id"]) for c in self.open_store().session_cells(session_id)}

    def follow_store(self) -> None:
        """Adopt the store's open session when it changed outside the daemon (the session CLI)."""
        if self.store is None:
            return
        try:
            active = self.store.active_session()
        except Exception as e:  # a busy or locked database: try again at the next tick
            logger.debug("cannot read the active session: %s", e)
            return
        active_id = None if active is None else int(active["id"])
        current = self.current_id
        if active_id != current:
            logger.warning(
                "the open session changed outside the daemon (%s -> %s); following it", current, active_id
            )
            self.adopt(None if active_id is None else self.store.session(active_id))

    def committed(self, session_id: int, blast: bool) -> None:
        """A cell of ``session_id`` is in the store: count it, unless that session is no longer ours."""
        with self.lock:
            if self._id == session_id:
                self._counts["cells"] += 1
                self._counts["blasts"] += int(blast)

    def current(self) -> dict[str, Any] | None:
        """The session counted cells go to, with its counts (None when there is none)."""
        with self.lock:
            if self._id is None:
                return None
            return {"id": self._id, **self._info, **self._counts}

    def write_frame_stats(self, reset: bool = False) -> None:
        with self.lock:
            self.frame_stats.write(self.store, self._id, reset)

    def start(self, sample_id: str, note: str = "") -> dict[str, Any]:
        store = self.open_store()
        with self.lock:
            session_id = store.start_session(sample_id, note)
            self.adopt(store.session(session_id))
            self.frame_stats.restart()
        return store.session(session_id)

    def stop(self) -> dict[str, Any]:
        """Stop the active session once every cell counted in it is committed; return its summary."""
        store = self.open_store()
        with self.lock:
            session_id = self._id
            if session_id is None:
                raise SessionError("no session is active")
            self.frame_stats.write(store, session_id)
            self.adopt(None)
            self.frame_stats.restart()
        if not self.writer.drain(0 if self.writer.failing else STOP_WAIT_S):
            with self.lock:
                if self._id is None:
                    self.adopt(store.session(session_id))
            why = self.writer.problem() or "its cells are still being stored"
            raise StoreUnavailable(f"session {session_id} stays open: {why}")
        store.stop_session(session_id)
        return store.session_summary(session_id)

    def finish(self, close: bool, write_stats: bool = True) -> bool:
        """At the stop: store what waits (the rest goes to the journal) and close the session if
        asked and nothing is left unstored. False when something is unstored or left open."""
        if write_stats:
            self.write_frame_stats()
        unstored = self.writer.finish()
        if close and unstored:
            logger.error("the session stays open until the cells kept in the journal are stored")
        return self.detach(close and not unstored) and not unstored

    def detach(self, close: bool) -> bool:
        """Stop counting into the session (shutdown); end it in the store only on a clean stop.

        False (and logged) when the session should have been closed and could not be.
        """
        with self.lock:
            session_id, self._id = self._id, None
        if close and session_id is not None and self.store is not None:
            try:
                self.store.stop_session(session_id)
            except (sqlite3.Error, OSError, LeukoEdgeError) as e:
                logger.error(
                    "session %d could not be closed (%s): it stays open; the next start continues it, "
                    "or 'leukoedge session stop' closes it", session_id, e,
                )  # fmt: skip
                return False
            logger.info("session %d closed", session_id)
        return True

    # -- what the HTTP server shows of the store ---------------------------------------------------
    def list_sessions(self) -> list[dict[str, Any]]:
        return self.open_store().list_sessions()

    def session_summary(self, session_id: int) -> dict[str, Any]:
        return self.open_store().session_summary(session_id)

    def active_summary(self) -> dict[str, Any] | None:
        store = self.open_store()
        active = store.active_session()
        return None if active is None else store.session_summary(active["id"])

    def storage_health(self) -> dict[str, Any] | None:
        return None if self.store is None else self.store.health()
