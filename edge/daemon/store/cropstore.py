"""Crop files of counted cells against the disk budget: which to keep, where to write, what to evict.

Kept apart from the session and cell queries of :class:`~leukoedge.daemon.store.database.Store`
(which mixes this in) because its rules are about the disk, not about sessions: a crop that does
not fit never stops a cell from being counted.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np

from leukoedge.atomic import write_atomic
from leukoedge.daemon.store import cropfiles as cropio

logger = logging.getLogger(__name__)

#: Eviction frees space down to this fraction of the budget, so it runs in batches, not per cell.
EVICT_TO = 0.9


class CropAccounting:
    """The crop half of the store; the store provides the connection, its lock and transactions."""

    state_dir: Path
    db_path: Path
    saver: cropio.CropSaver
    _crop_bytes: int
    _lock: threading.RLock

    @property
    def conn(self) -> sqlite3.Connection:
        raise NotImplementedError

    def _tx(self) -> AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError

    def _prepare_crop(self, suspected_blast: bool, crop_rgb: np.ndarray | None) -> tuple[bytes | None, str]:
        """The crop's PNG bytes (or None) and the crop state to record if nothing else happens."""
        if crop_rgb is None or not self.saver.wants(suspected_blast):
            return None, "none"
        try:
            return cropio.encode_png(crop_rgb), "pending"
        except (ValueError, OSError) as e:
            self.saver.failed_total += 1
            self.saver.set_state("invalid_crop", f"a crop could not be encoded: {e}")
            return None, "failed"

    def _room_for(self, nbytes: int) -> bool:
        """Whether a crop of ``nbytes`` fits the disk and the budget (evicting old crops if need be)."""
        low = self.saver.disk_low(self.state_dir, nbytes)
        if low:
            self.saver.set_state("disk_low", low)
            return False
        if self.saver.over_budget(self._crop_bytes, nbytes):
            self._evict(int(self.saver.budget_bytes * EVICT_TO) - nbytes)
            if self.saver.over_budget(self._crop_bytes, nbytes):
                self.saver.set_state(
                    "budget_full",
                    f"crop disk budget of {self.saver.budget_bytes / cropio.MB:.0f} MB is spent and no crops "
                    "of closed sessions are left to remove; cells are still counted",
                )
                return False
        return True

    def _write_crop(self, conn: sqlite3.Connection, session_id: int, cell_id: int, png: bytes) -> str:
        rel = cropio.crop_relpath(session_id, cell_id)
        try:
            write_atomic(self.state_dir / rel, png, 0o640)
        except OSError as e:
            self.saver.failed_total += 1
            self.saver.set_state(
                "write_failed", f"writing a crop failed ({e.strerror or e}); cells are still counted"
            )
            return "failed"
        conn.execute("UPDATE cells SET crop_path = ?, crop_bytes = ? WHERE id = ?", (rel, len(png), cell_id))
        self._crop_bytes += len(png)
        self.saver.saved_total += 1
        self.saver.set_state("ok", "saving crops")
        return "saved"

    def _evict(self, target_bytes: int) -> int:
        """Remove the oldest crops of closed sessions until the crops use at most ``target_bytes``.

        Rows are updated and committed first, files removed after: a crash in between leaves
        unreferenced files, which the next :meth:`open` sweeps, never a row pointing at nothing.
        """
        self._crop_bytes = self._used_crop_bytes()
        removed: list[str] = []
        with self._tx() as conn:
            rows = conn.execute(
                "SELECT c.id, c.crop_path, c.crop_bytes FROM cells c JOIN sessions s ON s.id = c.session_id "
                "WHERE s.ended_at IS NOT NULL AND c.crop_path IS NOT NULL ORDER BY c.id"
            )
            for cell_id, rel, nbytes in rows.fetchall():
                if self._crop_bytes <= target_bytes:
                    break
                conn.execute(
                    "UPDATE cells SET crop_path = NULL, crop_state = 'evicted' WHERE id = ?", (cell_id,)
                )
                removed.append(rel)
                self._crop_bytes -= nbytes
        for rel in removed:
            (self.state_dir / rel).unlink(missing_ok=True)
        if removed:
            logger.info("disk budget: removed %d old crops of closed sessions", len(removed))
        return len(removed)

    def _used_crop_bytes(self) -> int:
        with self._lock:
            row = self.conn.execute(
                "SELECT COALESCE(SUM(crop_bytes), 0) FROM cells WHERE crop_path IS NOT NULL"
            )
            return int(row.fetchone()[0])

    # -- crops and health ----------------------------------------------------------------------
    def crop_file(self, cell: dict[str, Any]) -> Path | None:
        """The crop PNG of a cell dict from :meth:`session_cells`, when it exists on disk."""
        rel = cell.get("crop_path")
        if not rel:
            return None
        path = self.state_dir / rel
        return path if path.is_file() else None

    def health(self) -> dict[str, Any]:
        """Disk budget use and whether crops are being saved (and if not, why)."""
        with self._lock:
            info = self.saver.health(self.state_dir, self._crop_bytes)
        info["db_path"] = str(self.db_path)
        return info
