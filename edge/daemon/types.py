"""Data shapes and protocols shared by the daemon's pipeline, its storage and its HTTP server.

The pipeline produces :class:`CountedCell` records and hands them to the store; the HTTP server
asks a :class:`StatusProvider` (the running daemon's :class:`~.status.DaemonStatus`) for what to
show. Keeping them here, away from the code that implements them, lets the storage and HTTP modules
be written and tested without starting a camera.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

#: Bounding box in full-resolution frame pixels: (x0, y0, x1, y1), x1/y1 exclusive.
BBox = tuple[int, int, int, int]


@dataclass(frozen=True)
class CountedCell:
    """One physical white cell, counted once, with its aggregated classification.

    A track becomes a counted cell when it has been seen in enough frames and was never cut by the
    frame edge; its probability is aggregated over several classifications during its life, so one
    blurred frame does not decide the label.
    """

    track_id: int
    first_seen_ts: float
    last_seen_ts: float
    bbox: BBox
    p_malignant: float
    label: str
    n_classifications: int
    model_sha256: str
    #: Decided once, from the counting bundle's contract and threshold; every count reads this.
    suspected_blast: bool

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["bbox"] = list(self.bbox)
        return d


@dataclass(frozen=True)
class Frame:
    """One captured frame.

    ``rgb`` is the image detection runs on (the lores stream on a Pi camera); ``main_rgb`` the
    full-resolution image crops are cut from, or None when it is the same image. ``main_ratio`` maps
    detection coordinates to main-image coordinates (main = detection * main_ratio); it is not a
    physical scale (pixels per micrometre).
    """

    index: int
    ts: float
    rgb: np.ndarray
    main_rgb: np.ndarray | None = None
    truth: dict[str, Any] | None = None

    @property
    def crop_source(self) -> np.ndarray:
        return self.rgb if self.main_rgb is None else self.main_rgb

    @property
    def main_ratio(self) -> tuple[float, float]:
        """(sx, sy) factors from detection-image to crop-image coordinates."""
        if self.main_rgb is None:
            return (1.0, 1.0)
        h, w = self.rgb.shape[:2]
        mh, mw = self.main_rgb.shape[:2]
        return (mw / w, mh / h)


@dataclass(frozen=True)
class FrameTiming:
    """How long one frame's processing took: what the daemon's frame hook is told after each frame."""

    frame: Frame
    #: Crops classified in this frame.
    crops: int
    #: ``time.perf_counter()`` when processing began and ended.
    started: float
    ended: float
    #: CPU time of the processing thread on this frame, whatever else runs on the machine.
    cpu_s: float

    @property
    def seconds(self) -> float:
        return self.ended - self.started


@runtime_checkable
class StatusProvider(Protocol):
    """What the HTTP server asks the running daemon for.

    ``status()`` is JSON-ready: at least keys ``fps`` (capture, processed), ``counts``, ``session``
    (or None), ``camera`` (state, uri, reconnects), ``model`` (name, sha256), ``health`` (flags),
    ``uptime_s``. ``metrics()`` holds the Prometheus figures, see :data:`METRIC_KEYS`.
    ``latest_jpeg()`` is the latest annotated frame as JPEG bytes (None before the first frame).
    ``healthy()`` is True while frames flow, the model is loaded and counted cells are saved.
    ``start_session`` and ``stop_session`` return the session as a dict (``stop_session`` its
    summary) and raise ``LeukoEdgeError`` subclasses on misuse (e.g. ConfigError for an empty sample id).
    ``list_sessions``, ``session_summary`` and ``active_summary`` read the session store and raise
    ``StoreUnavailable`` without one (``NoSuchSession`` for an unknown id); ``storage_health`` is the
    store's disk figures, or None without a store.
    """

    def status(self) -> dict[str, Any]: ...

    def metrics(self) -> dict[str, Any]: ...

    def latest_jpeg(self) -> bytes | None: ...

    def healthy(self) -> bool: ...

    def start_session(self, sample_id: str, note: str = "") -> dict[str, Any]: ...

    def stop_session(self) -> dict[str, Any]: ...

    def list_sessions(self) -> list[dict[str, Any]]: ...

    def session_summary(self, session_id: int) -> dict[str, Any]: ...

    def active_summary(self) -> dict[str, Any] | None: ...

    def storage_health(self) -> dict[str, Any] | None: ...


#: Keys of ``StatusProvider.metrics()``. Scalars are floats; ``cells_counted_by_type_total`` is a dict
#: {cell type: count}; ``inference_seconds`` is a histogram dict
#: ``{"buckets": [(upper_bound_s, cumulative_count), ...], "sum": float, "count": int}`` whose last
#: bucket bound is ``float("inf")``.
METRIC_KEYS: tuple[str, ...] = (
    "capture_fps",
    "processed_fps",
    "frames_captured_total",
    "frames_processed_total",
    "frames_dropped_total",
    "inference_seconds",
    "cells_counted_total",
    "blasts_counted_total",
    "cells_counted_by_type_total",
    "camera_reconnects_total",
    "crops_saved_total",
    "disk_budget_used_ratio",
    "store_errors_total",
    "store_backlog",
)

#: Histogram bucket bounds for per-frame inference (detection + classification) time, in seconds.
INFERENCE_BUCKETS_S: tuple[float, ...] = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)


@dataclass
class Histogram:
    """A cumulative Prometheus-style histogram, cheap to update from the processing thread."""

    bounds: tuple[float, ...] = INFERENCE_BUCKETS_S
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[i] += 1
                break
        else:
            self.counts[-1] += 1
        self.total += value
        self.count += 1

    def snapshot(self) -> dict[str, Any]:
        cumulative, running = [], 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += n
            cumulative.append((bound, running))
        return {"buckets": cumulative, "sum": self.total, "count": self.count}
