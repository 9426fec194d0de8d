"""Commits to the store off the processing thread, in order, none lost.

Counted cells are rare (a few per second at most) but every one matters, unlike frames: the
processing thread hands each commit to :class:`StoreWriter`, which runs them one at a time on its
own thread, so a slow disk delays the store, never the microscope.

A write the store cannot make now (a full disk, an I/O error, a locked database) stays at the head
of a bounded backlog and is retried with back-off; the writes behind it wait, so the order is kept.
Up to a quarter of the backlog (at most :data:`MEMORY_LIMIT` writes) is held in memory with its
crop; the rest is appended to the :class:`~.journal.Journal` beside the database, without its crop,
so a crash does not lose it. When the backlog is full the daemon stops counting rather than count
what it cannot keep (see :attr:`StoreWriter.full`). A write the store refuses for good (a session
that does not exist) is logged and dropped: retrying cannot help it.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from leukoedge.daemon.store.journal import JOURNAL_NAME, Journal
from leukoedge.daemon.types import CountedCell
from leukoedge.errors import DataError

if TYPE_CHECKING:
    from leukoedge.daemon.store.database import Store

logger = logging.getLogger(__name__)

#: Most waiting writes kept in memory (with their crops); the rest of the backlog goes to the journal.
MEMORY_LIMIT = 200
#: Default bound of the whole backlog (memory and journal), in writes.
BACKLOG_LIMIT = 5000
#: How long a stopping daemon keeps retrying before it leaves the backlog in the journal.
SHUTDOWN_RETRY_S = 5.0
_BACKOFF_MIN_S = 0.2
_BACKOFF_MAX_S = 5.0
#: A busy database may hold one attempt for the store's busy timeout.
_ATTEMPT_S = 15.0

Then = Callable[[Any], None]


@dataclass
class StoreOp:
    """One write: a counted cell ``(session_id, cell, crop)`` or one interval's frame figures."""

    kind: str
    args: tuple[Any, ...]
    then: Then | None = None
    journaled: bool = False
    #: Read back from the journal of an earlier run: skipped if the cell is already stored.
    replayed: bool = False

    def record(self) -> dict[str, Any]:
        if self.kind == "cell":
            session_id, cell, _ = self.args
            return {"kind": "cell", "session_id": int(session_id), "cell": cell.to_dict()}
        return {"kind": self.kind, "args": list(self.args)}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> StoreOp:
        if record.get("kind") == "cell":
            fields = dict(record["cell"])
            fields["bbox"] = tuple(fields["bbox"])
            return cls("cell", (int(record["session_id"]), CountedCell(**fields), None), None, True, True)
        if record.get("kind") == "frame_stats":
            return cls("frame_stats", tuple(record["args"]), None, True, True)
        raise ValueError(f"unknown kind {record.get('kind')!r}")

    def drop_crop(self) -> None:
        if self.kind == "cell":
            self.args = (*self.args[:2], None)

    def apply(self, store: Store | None) -> Any:
        if store is None:
            raise DataError("the session store is not open")
        if self.kind == "frame_stats":
            return store.add_frame_stats(*self.args)
        session_id, cell, crop = self.args
        if self.replayed:
            if store.has_cell(session_id, cell.track_id):
                return None
            return store.add_cell(session_id, cell, crop, late=True)
        return store.add_cell(session_id, cell, crop)


def transient(e: BaseException) -> bool:
    """Whether a failed write may succeed later (disk full, I/O error, lock), so it is kept."""
    permanent = (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.InterfaceError, sqlite3.DataError)
    return isinstance(e, (sqlite3.Error, OSError)) and not isinstance(e, permanent)


class StoreWriter(threading.Thread):
    """Runs store writes one at a time, in order, off the processing thread; keeps what fails."""

    def __init__(self, limit: int = BACKLOG_LIMIT, name: str = "leukoedge-store") -> None:
        super().__init__(name=name, daemon=True)
        self.limit = max(1, int(limit))
        self.memory_limit = max(1, min(MEMORY_LIMIT, self.limit // 4))
        self.store: Store | None = None
        self.journal: Journal | None = None
        self._cond = threading.Condition()
        self._backlog: deque[StoreOp] = deque()
        self._journaled = 0
        self._stopping = False
        self._give_up_at = float("inf")
        #: Failed write attempts (each retry counts).
        self.errors = 0
        #: Writes done, and counted cells of this run stored.
        self.done = 0
        self.cells_stored = 0
        #: Writes dropped: refused by the store for good, or arriving at a full backlog.
        self.dropped = 0
        #: Why the store cannot be written, while it cannot ("" when it can).
        self.failing = ""
        #: The backlog was full when a cell was counted: counting stays stopped until it has room.
        self.counting_stopped = False

    # -- what the daemon asks --------------------------------------------------------------------
    @property
    def pending(self) -> int:
        return len(self._backlog)

    @property
    def journaled(self) -> int:
        return self._journaled

    @property
    def full(self) -> bool:
        """The backlog limit is reached: nothing more can be kept, so nothing more may be counted."""
        return len(self._backlog) >= self.limit

    def admit(self) -> bool:
        """Whether a cell may be counted now (the backlog has room for it); logs each change."""
        full = self.full
        if full != self.counting_stopped:
            self.counting_stopped = full
            if full:
                logger.error("counting stopped: %s", self.problem())
            else:
                logger.warning("counting again: the store backlog has room (%d writes wait)", self.pending)
        return not full

    def problem(self) -> str:
        """Why counted cells are not being saved now ("" when they are)."""
        n = len(self._backlog)
        if n >= self.limit:
            return (
                f"not saving and not counting: {n} writes wait, the backlog limit of {self.limit} is "
                f"reached (store: {self.failing or 'slow'})"
            )
        if self.failing:
            return f"not saving: the session store cannot be written ({self.failing}); {n} writes wait"
        return ""

    # -- start: the journal of an earlier run ----------------------------------------------------
    def attach(self, store: Store, on_replayed: Callable[[int, bool], None] | None = None) -> int:
        """Write to ``store``; first what an earlier run left in its journal. Returns how many."""
        self.store = store
        self.journal = Journal(store.state_dir / JOURNAL_NAME)
        try:
            records = self.journal.load()
        except OSError as e:
            raise DataError(f"cannot read the store journal {self.journal.path}: {e}") from e
        ops = []
        for record in records:
            try:
                op = StoreOp.from_record(record)
            except (KeyError, TypeError, ValueError) as e:
                logger.error("%s: unreadable record skipped (%s): %s", self.journal.path, e, record)
                continue
            if op.kind == "cell" and on_replayed is not None:
                op.then = _replayed(on_replayed, op.args[0], bool(op.args[1].suspected_blast))
            ops.append(op)
        if not ops:
            return 0
        logger.warning("%d writes left in %s by an earlier run: storing them", len(ops), self.journal.path)
        with self._cond:
            self._backlog.extend(ops)
            self._journaled += len(ops)
        while self._backlog and self._attempt(self._backlog[0]):
            pass
        return len(ops)

    # -- the processing thread's side ------------------------------------------------------------
    def submit_cell(
        self, session_id: int, cell: CountedCell, crop: Any = None, then: Then | None = None
    ) -> bool:
        """Queue a counted cell; False (and logged) when the backlog is full."""
        return self._submit(StoreOp("cell", (session_id, cell, crop), then))

    def submit_frame_stats(self, *args: Any) -> bool:
        """Queue one interval's frame figures (:meth:`Store.add_frame_stats`'s arguments)."""
        return self._submit(StoreOp("frame_stats", args))

    def _submit(self, op: StoreOp) -> bool:
        with self._cond:
            if len(self._backlog) >= self.limit:
                self.dropped += 1
                logger.error("store backlog full (%d writes): a %s write is dropped", self.limit, op.kind)
                return False
            if len(self._backlog) - self._journaled >= self.memory_limit:
                self._spill(op)
            self._backlog.append(op)
            self._cond.notify_all()
        return True

    def _spill(self, op: StoreOp) -> None:
        """Keep ``op`` in the journal, without its crop (memory holds only its small record)."""
        op.drop_crop()
        if self.journal is None:
            return
        try:
            self.journal.append(op.record())
        except OSError as e:
            logger.warning("the store journal %s cannot be written either: %s", self.journal.path, e)
            return
        op.journaled = True
        self._journaled += 1

    # -- the writer's thread ---------------------------------------------------------------------
    def run(self) -> None:
        backoff = _BACKOFF_MIN_S
        while True:
            with self._cond:
                while not self._backlog and not self._stopping:
                    self._cond.wait()
                if not self._backlog:
                    return
                op = self._backlog[0]
            if self._attempt(op):
                backoff = _BACKOFF_MIN_S
                continue
            with self._cond:
                left = self._give_up_at - time.monotonic()
                if left <= 0:
                    return
                self._cond.wait(min(backoff, left))
            backoff = min(backoff * 2, _BACKOFF_MAX_S)

    def _attempt(self, op: StoreOp) -> bool:
        """Try ``op`` once; True when it is done with (stored, or refused for good)."""
        try:
            result = op.apply(self.store)
        except Exception as e:
            self.errors += 1
            if transient(e):
                if not self.failing:
                    logger.error(
                        "the session store cannot be written (%s): counted cells are kept and written "
                        "when it can be", e,
                    )  # fmt: skip
                self.failing = str(e) or type(e).__name__
                return False
            self.dropped += 1
            logger.error("a %s write was refused by the store and is dropped: %s", op.kind, e)
            self._finish(op)
            return True
        if self.failing:
            logger.warning("the session store is written again; %d writes waiting", len(self._backlog) - 1)
            self.failing = ""
        self.done += 1
        self.cells_stored += int(op.kind == "cell" and not op.replayed)
        if op.then is not None:
            try:
                op.then(result)
            except Exception:
                logger.exception("after a store write")
        self._finish(op)
        return True

    def _finish(self, op: StoreOp) -> None:
        with self._cond:
            if self._backlog and self._backlog[0] is op:
                self._backlog.popleft()
            if op.journaled:
                self._journaled -= 1
                if self._journaled == 0 and self.journal is not None:
                    try:
                        self.journal.clear()
                    except OSError as e:
                        logger.warning("cannot remove the store journal: %s", e)
            self._cond.notify_all()

    # -- waiting and stopping --------------------------------------------------------------------
    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every submitted write is done; False when ``timeout`` passed first."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._backlog, timeout)

    def finish(self, retry_s: float = SHUTDOWN_RETRY_S) -> int:
        """Write what waits (retrying up to ``retry_s``), stop, and keep the rest in the journal.

        Returns how many writes were left unstored (kept in the journal, or lost if it cannot be
        written); each is logged.
        """
        with self._cond:
            self._stopping = True
            self._give_up_at = time.monotonic() + retry_s
            self._cond.notify_all()
        if self.ident is None:
            self.run()  # never started: write what waits from this thread
        else:
            self.join(retry_s + _ATTEMPT_S)
        with self._cond:
            left = list(self._backlog)
        if not left:
            return 0
        cells = sum(op.kind == "cell" for op in left)
        where = self.journal.path if self.journal is not None else None
        try:
            if self.journal is None:
                raise OSError("no journal")
            self.journal.rewrite([op.record() for op in left])
        except OSError as e:
            logger.error(
                "%d counted cells and %d other writes could not be stored (%s), and not kept in %s (%s): "
                "they are lost", cells, len(left) - cells, self.failing, where, e,
            )  # fmt: skip
            return len(left)
        logger.error(
            "%d counted cells and %d other writes could not be stored (%s): kept in %s, written at the "
            "next start", cells, len(left) - cells, self.failing or "stopped first", where,
        )  # fmt: skip
        return len(left)


def _replayed(hook: Callable[[int, bool], None], session_id: int, blast: bool) -> Then:
    def then(result: Any) -> None:
        if result is not None:  # None: it was stored before the earlier run stopped
            hook(session_id, blast)

    return then
