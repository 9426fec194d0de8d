"""Cell crops on disk: when to save one, how to write it so it is never half-written, and why not.

Counting must never stop because of crops: a full disk, a spent budget or a failed write only turn
crop saving off (and back on when space returns). :class:`CropSaver` holds that state and logs a
warning when it changes, not once per cell. Writes go to a temporary name in the same folder, are
fsynced, renamed over the final name and the folder is fsynced: after a power cut a crop is either
complete or absent.
"""

from __future__ import annotations

import io
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from leukoedge.atomic import TMP_SUFFIX
from leukoedge.errors import ConfigError

logger = logging.getLogger(__name__)

CropSaveMode = Literal["all", "blasts", "none"]
CROP_SAVE_MODES: tuple[str, ...] = ("all", "blasts", "none")
#: (path) -> object with .total, .used, .free in bytes, like shutil.disk_usage. Injectable for tests.
DiskUsage = Callable[[Path], Any]
MB = 1024 * 1024


def encode_png(rgb: np.ndarray) -> bytes:
    """PNG bytes of an HxWx3 uint8 image; ValueError for anything else (never a half image)."""
    arr = np.asarray(rgb)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3 or min(arr.shape[:2]) < 1:
        raise ValueError(f"a crop must be HxWx3 uint8, got shape {arr.shape} dtype {arr.dtype}")
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr), "RGB").save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


class CropSaver:
    """Decides whether a crop may be saved, and remembers (and logs) why saving is off.

    ``budget_bytes`` caps the crops folder; ``min_free_bytes`` is the free space the file system
    must keep *after* the crop, so the database (which must keep recording cells) always has room.
    """

    def __init__(
        self,
        mode: str = "blasts",
        budget_bytes: int = 500 * MB,
        min_free_bytes: int = 200 * MB,
        disk_usage: DiskUsage = shutil.disk_usage,
    ) -> None:
        if mode not in CROP_SAVE_MODES:
            raise ConfigError(f"crops must be one of {', '.join(CROP_SAVE_MODES)}, not {mode!r}")
        if budget_bytes < 0 or min_free_bytes < 0:
            raise ConfigError("the crop disk budget and the minimum free space must not be negative")
        self.mode = mode
        self.budget_bytes = int(budget_bytes)
        self.min_free_bytes = int(min_free_bytes)
        self.disk_usage = disk_usage
        self.state = "disabled" if mode == "none" else "ok"
        self.reason = "crops disabled by configuration (crops = none)" if mode == "none" else "saving crops"
        self.saved_total = 0
        self.failed_total = 0
        self.skipped_total = 0

    @property
    def saving(self) -> bool:
        return self.state == "ok"

    def wants(self, suspected_blast: bool) -> bool:
        """Whether the configuration asks for this cell's crop at all."""
        return self.mode == "all" or (self.mode == "blasts" and suspected_blast)

    def free_bytes(self, where: Path) -> int | None:
        try:
            return int(self.disk_usage(where).free)
        except OSError as e:
            logger.debug("disk usage of %s unavailable: %s", where, e)
            return None

    def disk_low(self, where: Path, incoming: int) -> str | None:
        """Why the file system cannot take ``incoming`` more bytes, or None when it can."""
        free = self.free_bytes(where)
        if free is not None and free - incoming < self.min_free_bytes:
            return (
                f"disk nearly full: {free / MB:.1f} MB free, keeping at least "
                f"{self.min_free_bytes / MB:.0f} MB for the database; cells are still counted"
            )
        return None

    def over_budget(self, used: int, incoming: int) -> bool:
        return used + incoming > self.budget_bytes

    def set_state(self, state: str, reason: str) -> None:
        """Record why crops are (not) saved; log only when the state changes."""
        if state == self.state:
            self.reason = reason
            return
        if state == "ok":
            logger.warning("saving cell crops again (%s)", reason)
        else:
            logger.warning("not saving cell crops: %s", reason)
        self.state, self.reason = state, reason

    def health(self, where: Path, used: int) -> dict[str, Any]:
        free = self.free_bytes(where)
        ratio = used / self.budget_bytes if self.budget_bytes else (0.0 if used == 0 else 1.0)
        return {
            "crops_mode": self.mode,
            "crops_saving": self.saving,
            "crops_state": self.state,
            "crops_reason": self.reason,
            "crop_bytes": used,
            "disk_budget_bytes": self.budget_bytes,
            "disk_budget_used_ratio": ratio,
            "disk_free_bytes": free,
            "min_free_bytes": self.min_free_bytes,
            "crops_saved_total": self.saved_total,
            "crops_failed_total": self.failed_total,
            "crops_skipped_total": self.skipped_total,
        }


def crop_relpath(session_id: int, cell_id: int) -> str:
    """Where a cell's crop lies, relative to the state folder (so the folder can move)."""
    return f"crops/{int(session_id)}/{int(cell_id):08d}.png"


def sweep(crops_dir: Path, referenced: set[str], state_dir: Path) -> int:
    """Remove temporary files and crops no database row points to; returns how many were removed.

    Call it while holding the database's write lock, so no crop of an uncommitted cell is in flight.
    """
    removed = 0
    if not crops_dir.is_dir():
        return 0
    for path in crops_dir.glob("*/*"):
        rel = path.relative_to(state_dir).as_posix()
        if path.is_file() and (path.name.endswith(TMP_SUFFIX) or rel not in referenced):
            path.unlink(missing_ok=True)
            removed += 1
    if removed:
        logger.info("removed %d unfinished or unreferenced crop files", removed)
    return removed
