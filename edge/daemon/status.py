"""What the running daemon reports: running totals, ``status()``, ``metrics()``, the live frame, health.

Everything here reads the daemon's threads and store without stopping them: the HTTP server asks
from its own threads, systemd's STATUS= line from the supervising loop, while frames are processed.
The figures are snapshots, never waited for.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

from leukoedge.daemon.sessions import Counters

if TYPE_CHECKING:
    from leukoedge.daemon.service import Daemon


class DaemonStatus:
    """Cells counted since the daemon started, and every figure the status page and Prometheus show.

    This is the daemon's :class:`~leukoedge.daemon.types.StatusProvider`: session requests from the
    HTTP server go through it to the daemon's :class:`~leukoedge.daemon.sessions.Sessions`.
    """

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.cells_total = 0
        self.blasts_total = 0
        self.uncounted_total = 0
        #: Cells counted since start, by the label (cell type) the model gave them.
        self.by_type: dict[str, int] = {}
        #: Cells seen but not counted because the store's backlog was full.
        self.not_counted_total = 0
        self._jpeg_cache: tuple[int, bytes] | None = None

    def counted(self, blast: bool, in_session: bool, cell_type: str | None = None) -> None:
        """One more counted cell (on the processing thread); ``in_session`` False: no session took it."""
        if cell_type is not None:
            # A new dict, not a mutation: HTTP threads iterate the one they read without a lock.
            self.by_type = {**self.by_type, cell_type: self.by_type.get(cell_type, 0) + 1}
        self.cells_total += 1
        self.blasts_total += int(blast)
        self.uncounted_total += int(not in_session)

    def stored_line(self) -> str:
        """How many cells this run counted into a session and how many of them it stored."""
        counted = self.cells_total - self.uncounted_total
        return f"{counted} cells counted in a session, {self.daemon.writer.cells_stored} stored"

    def counters(self) -> Counters:
        d = self.daemon
        cap, proc = d.capture, d.process
        hist = proc.histogram if proc else None
        return (
            cap.rate.total if cap else 0,
            proc.rate.total if proc else 0,
            d.queue.dropped,
            hist.total if hist else 0.0,
            hist.count if hist else 0,
        )

    def line(self) -> str:
        """systemd's STATUS= line."""
        s = self.status()
        return (
            f"{s['fps']['processed']:.1f} fps processed, {s['counts']['cells_total']} cells, "
            f"{s['counts']['blasts_total']} suspected blasts; camera {s['camera']['state']}"
        )

    def status(self) -> dict[str, Any]:
        d = self.daemon
        cap, proc, bundle = d.capture, d.process, d.bundle
        return {
            "fps": {
                "capture": cap.rate.rate() if cap else 0.0,
                "processed": proc.rate.rate() if proc else 0.0,
            },
            "frames": dict(zip(("captured", "processed", "dropped"), self.counters()[:3], strict=True)),
            "counts": {
                "cells_total": self.cells_total,
                "blasts_total": self.blasts_total,
                "uncounted_no_session": self.uncounted_total,
                "cell_types": dict(self.by_type),
                "not_counted_store_full": self.not_counted_total,
                "live_tracks": proc.processor.tracker.live_count if proc else 0,
            },
            "session": d.sessions.current(),
            "camera": {
                "uri": d.config.source.uri,
                "state": cap.state if cap else "stopped",
                "reconnects": cap.reconnects if cap else 0,
                "failures": cap.failures if cap else 0,
            },
            "model": None if bundle is None else _model(bundle),
            "health": {
                "healthy": self.healthy(),
                "frames_flowing": self.frames_flowing(),
                "model_loaded": bundle is not None,
                "store_errors": d.writer.errors,
                "store_backlog": d.writer.pending,
                "store_journaled": d.writer.journaled,
                "saving": not d.writer.failing and not d.writer.full,
                "counting": not d.writer.full,
                "reason": self.health_reason(),
                "processing_errors": proc.errors if proc else 0,
                **(d.sessions.storage_health() or {}),
            },
            "uptime_s": time.time() - d.started_at,
            "reloads": d.reloads,
            "tensorflow_loaded": "tensorflow" in sys.modules,
        }

    def metrics(self) -> dict[str, Any]:
        cap, proc = self.daemon.capture, self.daemon.process
        health = self.daemon.sessions.storage_health() or {}
        captured, processed, dropped, _, _ = self.counters()
        empty = {"buckets": [], "sum": 0.0, "count": 0}
        return {
            "capture_fps": cap.rate.rate() if cap else 0.0,
            "processed_fps": proc.rate.rate() if proc else 0.0,
            "frames_captured_total": captured,
            "frames_processed_total": processed,
            "frames_dropped_total": dropped,
            "inference_seconds": proc.histogram.snapshot() if proc else empty,
            "cells_counted_total": self.cells_total,
            "blasts_counted_total": self.blasts_total,
            "cells_counted_by_type_total": dict(self.by_type),
            "camera_reconnects_total": cap.reconnects if cap else 0,
            "crops_saved_total": health.get("crops_saved_total", 0),
            "disk_budget_used_ratio": health.get("disk_budget_used_ratio", 0.0),
            "store_errors_total": self.daemon.writer.errors,
            "store_backlog": self.daemon.writer.pending,
        }

    def latest_jpeg(self) -> bytes | None:
        """The latest processed frame, annotated; drawn once per frame however many viewers ask."""
        proc = self.daemon.process
        latest = proc.processor.latest if proc else None
        if proc is None or latest is None:
            return None
        frame, assigned = latest
        cached = self._jpeg_cache
        if cached is not None and cached[0] == frame.index:
            return cached[1]
        data = proc.processor.annotate_jpeg(frame, assigned)
        self._jpeg_cache = (frame.index, data)
        return data

    def frames_flowing(self) -> bool:
        proc = self.daemon.process
        last = proc.rate.last if proc else None
        return last is not None and time.monotonic() - last <= self.daemon.config.source.stall_timeout_s

    def healthy(self) -> bool:
        """The model is loaded, frames flow, and what is counted is being saved."""
        return not self.health_reason()

    def health_reason(self) -> str:
        """Why the daemon is unhealthy ("" when it is healthy)."""
        reasons = []
        if self.daemon.bundle is None:
            reasons.append("no model loaded")
        if not self.frames_flowing():
            reasons.append("no frames processed recently")
        store = self.daemon.writer.problem()
        if store:
            reasons.append(store)
        return "; ".join(reasons)

    # -- sessions, for the HTTP server -------------------------------------------------------------
    def start_session(self, sample_id: str, note: str = "") -> dict[str, Any]:
        return self.daemon.sessions.start(sample_id, note)

    def stop_session(self) -> dict[str, Any]:
        return self.daemon.sessions.stop()

    def list_sessions(self) -> list[dict[str, Any]]:
        return self.daemon.sessions.list_sessions()

    def session_summary(self, session_id: int) -> dict[str, Any]:
        return self.daemon.sessions.session_summary(session_id)

    def active_summary(self) -> dict[str, Any] | None:
        return self.daemon.sessions.active_summary()

    def storage_health(self) -> dict[str, Any] | None:
        return self.daemon.sessions.storage_health()


def _model(bundle: Any) -> dict[str, Any]:
    """The loaded bundle: name, sha256, and the cell types it can give (its class names, in order)."""
    contract = bundle.contract
    return {
        "name": bundle.name,
        "variant": bundle.variant,
        "sha256": bundle.sha256,
        "differential": contract.differential,
        "classes": list(contract.class_names),
        "blast_classes": list(contract.suspect_classes),
    }
