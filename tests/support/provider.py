"""A small StatusProvider for the HTTP tests: a real Store, made-up figures, real JPEG frames.

The provider is our own interface (no hardware behind it), so a fake stands in for the running
daemon; the store, the HTTP server and the browser are real.
"""

from __future__ import annotations

import io
import threading
from typing import Any

import numpy as np
from PIL import Image

from leukoedge.contract import POSITIVE_CLASS
from leukoedge.daemon.store.database import Store
from leukoedge.daemon.types import CountedCell, Histogram
from leukoedge.errors import SessionError, StoreUnavailable

SHA = "ab" * 32
#: The fake frames are mostly this colour, so a screenshot shows whether the stream was drawn.
FRAME_RGB = (200, 40, 200)


def make_cell(track_id: int, blast: bool, p: float | None = None) -> CountedCell:
    p = (0.9 if blast else 0.1) if p is None else p
    label = POSITIVE_CLASS if blast else "non_malignant"
    return CountedCell(
        track_id, 100.0 + track_id, 101.5 + track_id, (10, 20, 74, 84), p, label, 4, SHA,
        suspected_blast=blast,
    )  # fmt: skip


def crop(value: int = 120) -> np.ndarray:
    rgb = np.full((64, 64, 3), value, np.uint8)
    rgb[16:48, 16:48, 0] = 255 - value
    return rgb


def jpeg_frame(index: int, size: tuple[int, int] = (320, 240)) -> bytes:
    rgb = np.zeros((size[1], size[0], 3), np.uint8)
    rgb[:] = FRAME_RGB
    x = 20 + (index * 7) % (size[0] - 80)
    rgb[60:120, x : x + 60] = (250, 250, 250)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=85)
    return buf.getvalue()


class FakeProvider:
    """Follows leukoedge.daemon.types.StatusProvider."""

    def __init__(self, store: Store | None) -> None:
        self.store = store
        self.is_healthy = True
        self.fail_status = False
        self.frame_index = 0
        self.jpeg_enabled = True
        self.histogram = Histogram()
        for v in (0.0008, 0.004, 0.004, 0.03, 2.0):
            self.histogram.observe(v)
        self._lock = threading.Lock()

    def status(self) -> dict[str, Any]:
        if self.fail_status:
            raise RuntimeError("boom")
        return {
            "fps": {"capture": 15.0, "processed": 14.5},
            "counts": {"cells_total": 3, "blasts_total": 1},
            "session": None,
            "camera": {"uri": "synthetic:", "state": "running", "reconnects": 0},
            "model": {"name": "leukonet_int8", "sha256": SHA},
            "health": {"healthy": self.is_healthy},
            "uptime_s": 75.0,
            "weird": float("nan"),
        }

    def metrics(self) -> dict[str, Any]:
        return {
            "capture_fps": 15.0,
            "processed_fps": 14.5,
            "frames_captured_total": 1000,
            "frames_processed_total": 990,
            "frames_dropped_total": 10,
            "inference_seconds": self.histogram.snapshot(),
            "cells_counted_total": 3,
            "blasts_counted_total": 1,
            "camera_reconnects_total": 0,
            "crops_saved_total": 1,
            "disk_budget_used_ratio": 0.25,
        }

    def latest_jpeg(self) -> bytes | None:
        if not self.jpeg_enabled:
            return None
        with self._lock:
            self.frame_index += 1
            return jpeg_frame(self.frame_index)

    def healthy(self) -> bool:
        return self.is_healthy

    def start_session(self, sample_id: str, note: str = "") -> dict[str, Any]:
        return self.store.session(self.store.start_session(sample_id, note))

    def stop_session(self) -> dict[str, Any]:
        active = self.store.active_session()
        if active is None:
            raise SessionError("no session is active")
        self.store.stop_session(active["id"])
        return self.store.session_summary(active["id"])

    def _open_store(self) -> Store:
        if self.store is None:
            raise StoreUnavailable("no session store")
        return self.store

    def list_sessions(self) -> list[dict[str, Any]]:
        return self._open_store().list_sessions()

    def session_summary(self, session_id: int) -> dict[str, Any]:
        return self._open_store().session_summary(session_id)

    def active_summary(self) -> dict[str, Any] | None:
        active = self._open_store().active_session()
        return None if active is None else self._open_store().session_summary(active["id"])

    def storage_health(self) -> dict[str, Any] | None:
        return None if self.store is None else self.store.health()
