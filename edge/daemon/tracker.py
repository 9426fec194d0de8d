"""Following cells across frames so each physical cell is counted once.

While the stage is still, a cell sits in the same place for many frames; while it moves, every
cell of the field slides by the same displacement. The tracker estimates that common displacement
each frame by letting every (track, detection) pair within reach vote for the shift it implies and
keeping the shift most pairs agree on (ties go to the previous frame's shift), so a stage that
starts, stops or jumps is followed without a motion model. Tracks then match detections greedily
by distance to their predicted centres, gated by the cell's diameter. An unmatched detection
whose centre lies inside the box of a matched one is a fragment of that cell (a lobe of a
segmented nucleus found apart) and starts no track.

A track is classified on frames where it is whole (not cut by the frame edge), at most
``max_classifications`` times, ``classify_every`` frames apart; it becomes a counted cell once it
was whole in ``min_frames`` frames and has all its classifications, or when it expires after
``max_missed`` unseen frames having been whole in ``min_frames`` frames. A cell that never was whole
long enough is never counted.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from leukoedge.daemon.config import TrackerConfig

logger = logging.getLogger(__name__)

_P_EPS = 1e-4


@dataclass
class Track:
    """One cell followed across frames (coordinates in the detection image)."""

    id: int
    first_frame: int
    first_ts: float
    last_frame: int
    last_ts: float
    center: tuple[float, float]
    diameter: float
    detection: Any
    whole_frames: int = 0
    missed: int = 0
    probs: list[float] = field(default_factory=list)
    last_classified: int = -(10**9)
    #: Full-resolution bbox and model-input crop of the latest classification.
    bbox_main: tuple[int, int, int, int] | None = None
    crop: np.ndarray | None = None
    counted: bool = False

    def wants_classification(self, frame_index: int, config: TrackerConfig) -> bool:
        return (
            len(self.probs) < config.max_classifications
            and frame_index - self.last_classified >= config.classify_every
        )

    def probability(self, how: str = "mean_logit") -> float:
        """The aggregated p(malignant): the mean of logits (default) or of probabilities."""
        if not self.probs:
            return float("nan")
        p = np.clip(np.asarray(self.probs, dtype=np.float64), _P_EPS, 1 - _P_EPS)
        if how == "mean_p":
            return float(p.mean())
        logit = float(np.mean(np.log(p / (1 - p))))
        return 1.0 / (1.0 + math.exp(-logit))


class Tracker:
    """Associates detections across frames and decides when a track is a counted cell. Not thread-safe."""

    def __init__(self, config: TrackerConfig, frame_width: int, frame_height: int, first_id: int = 1) -> None:
        self.config = config
        self.frame_width = frame_width
        self.frame_height = frame_height
        self.tracks: list[Track] = []
        self.velocity = np.zeros(2)
        self._next_id = int(first_id)
        self._ready: list[Track] = []

    # -- association -----------------------------------------------------------------------------
    def _estimate_velocity(self, tracks: list[Track], centers: np.ndarray, frame_index: int) -> np.ndarray:
        """The stage's shift per frame that most (track, detection) pairs agree on."""
        if not tracks or not len(centers):
            return self.velocity
        prev = np.array([t.center for t in tracks])
        dt = np.array([max(1, frame_index - t.last_frame) for t in tracks], dtype=np.float64)
        vel = (centers[None, :, :] - prev[:, None, :]) / dt[:, None, None]
        vel = vel.reshape(-1, 2)
        reach = self.config.max_shift * self.frame_width
        vel = vel[np.hypot(vel[:, 0], vel[:, 1]) <= reach]
        if not len(vel):
            return self.velocity
        tol = 0.5 * self.config.gate * float(np.median([t.diameter for t in tracks]))
        candidates = np.vstack([self.velocity[None], vel])
        dist = np.hypot(*(candidates[:, None, :] - vel[None, :, :]).transpose(2, 0, 1))
        support = (dist <= tol).sum(axis=1)
        best = int(support.max())
        tied = np.flatnonzero(support == best)
        pick = tied[np.argmin(np.hypot(*(candidates[tied] - self.velocity).T))]
        return np.median(vel[dist[pick] <= tol], axis=0)

    def update(self, frame_index: int, ts: float, detections: list[Any]) -> list[tuple[Track, Any]]:
        """Match this frame's detections to tracks; return (track, detection) for every detection."""
        live = list(self.tracks)
        centers = np.array([d.center for d in detections], dtype=np.float64).reshape(-1, 2)
        self.velocity = self._estimate_velocity(live, centers, frame_index)
        pairs: list[tuple[float, int, int]] = []
        if live and detections:
            dt = np.array([max(1, frame_index - t.last_frame) for t in live], dtype=np.float64)
            predicted = np.array([t.center for t in live]) + self.velocity[None, :] * dt[:, None]
            dist = np.hypot(*(centers[None, :, :] - predicted[:, None, :]).transpose(2, 0, 1))
            sizes = np.maximum.outer([t.diameter for t in live], [float(d.diameter) for d in detections])
            ii, jj = np.nonzero(dist <= self.config.gate * sizes)
            pairs = sorted(zip(dist[ii, jj].tolist(), ii.tolist(), jj.tolist(), strict=True))
        used_t: set[int] = set()
        used_d: set[int] = set()
        out: list[tuple[Track, Any]] = []
        for _, i, j in pairs:
            if i in used_t or j in used_d:
                continue
            used_t.add(i)
            used_d.add(j)
            self._see(live[i], frame_index, ts, detections[j])
            out.append((live[i], detections[j]))
        matched_boxes = [detections[j].bbox for j in used_d]
        for j, d in enumerate(detections):
            if j in used_d:
                continue
            if any(_inside(d.center, box) for box in matched_boxes):
                continue  # a fragment of a cell already matched (e.g. one lobe of a nucleus)
            t = self._new_track(frame_index, ts, d)
            out.append((t, d))
        for i, t in enumerate(live):
            if i not in used_t:
                t.missed += 1
        self._expire()
        return out

    def is_whole(self, d: Any) -> bool:
        """Not cut by the frame edge: the detector says so, and the cytoplasm around the stained
        region (``edge_margin`` diameters) fits in the frame too."""
        if d.touches_edge:
            return False
        m = self.config.edge_margin * float(d.diameter)
        x0, y0, x1, y1 = d.bbox
        return x0 >= m and y0 >= m and x1 <= self.frame_width - m and y1 <= self.frame_height - m

    def _see(self, t: Track, frame_index: int, ts: float, d: Any) -> None:
        t.last_frame, t.last_ts, t.center, t.diameter, t.detection = frame_index, ts, d.center, d.diameter, d
        t.missed = 0
        if self.is_whole(d):
            t.whole_frames += 1

    def _new_track(self, frame_index: int, ts: float, d: Any) -> Track:
        t = Track(self._next_id, frame_index, ts, frame_index, ts, d.center, float(d.diameter), d)
        self._next_id += 1
        if self.is_whole(d):
            t.whole_frames = 1
        self.tracks.append(t)
        return t

    def _expire(self) -> None:
        keep = []
        for t in self.tracks:
            if t.missed <= self.config.max_missed:
                keep.append(t)
            elif not t.counted and self._countable(t):
                t.counted = True
                self._ready.append(t)
        self.tracks = keep

    # -- classification and counting ------------------------------------------------------------
    def record(self, track: Track, frame_index: int, p: float, bbox_main: Any, crop: np.ndarray) -> None:
        """Store one classification of a whole (not edge-cut) detection of the track."""
        track.probs.append(float(p))
        track.last_classified = frame_index
        track.bbox_main = tuple(int(v) for v in bbox_main)  # type: ignore[assignment]
        track.crop = crop

    def _countable(self, t: Track) -> bool:
        return t.whole_frames >= self.config.min_frames and bool(t.probs)

    def collect(self) -> list[Track]:
        """Tracks that became counted cells since the last call (each is returned once)."""
        for t in self.tracks:
            if not t.counted and self._countable(t) and len(t.probs) >= self.config.max_classifications:
                t.counted = True
                self._ready.append(t)
        ready, self._ready = self._ready, []
        return ready

    def flush(self) -> list[Track]:
        """On shutdown: every live track that qualifies is counted now, then all tracks are dropped."""
        for t in self.tracks:
            if not t.counted and self._countable(t):
                t.counted = True
                self._ready.append(t)
        self.tracks = []
        return self.collect()

    @property
    def live_count(self) -> int:
        return len(self.tracks)


def _inside(point: tuple[float, float], box: tuple[int, int, int, int]) -> bool:
    return box[0] <= point[0] <= box[2] and box[1] <= point[1] <= box[3]
