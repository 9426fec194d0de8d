"""Following cells across frames so each physical cell is counted once.

While the stage is still, a cell sits in the same place for many frames; while it moves, every
cell of the field slides by the same displacement. The tracker estimates that common displacement
each frame by letting every (track, detection) pair within reach vote for the shift it implies and
keeping the shift most pairs agree on (ties go to the previous frame's shift), so a stage that
starts, stops or jumps is followed without a motion model. Only tracks seen in the latest frame
vote, and a cell cut by the frame edge votes with its box side away from the edge (its centre
moves at about half the stage's speed while it enters or leaves). Tracks then match detections greedily
by distance to their predicted centres, gated by the cell's diameter. An unmatched detection
whose centre lies inside the box of a matched one is a fragment of that cell (a lobe of a
segmented nucleus found apart) and starts no track.

The stage path may bring a cell back into view after its track expired (a pan that returns, a
missed detection longer than ``max_missed`` frames). So the tracker also keeps a map of the slide:
the stage offset is the running sum of the frame shifts, corrected each frame by the cells already
on the map (the mean of their observed minus mapped positions, whole cells only: an edge-cut
cell's centre is biased), and every track has a map position, the mean of its whole sightings.
A new track is checked against the map at its first whole sighting: a retired track (or a live
one that lost its detection) within ``gate`` diameters of it is the same cell, and the new
sighting continues that track (its id, classifications, and whether it was counted) instead of
starting another. Only white cells are landmarks: when every track has expired (a stretch of
slide without white cells), the stage's path in between is unknown and the map starts afresh.

A track is classified on frames where it is whole (not cut by the frame edge: the cell's extent,
nucleus and cytoplasm, measured by :mod:`leukoedge.vision.cellextent`, clear of the border), at most
``max_classifications`` times, ``classify_every`` frames apart; it becomes a counted cell once it
was whole in ``min_frames`` frames and has all its classifications, or when it expires after
``max_missed`` unseen frames having been whole in ``min_frames`` frames. A cell that never was whole
long enough is never counted.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from leukoedge.daemon.config import TrackerConfig
from leukoedge.daemon.tracking.motion import stage_shift
from leukoedge.vision.detect import Detection
from leukoedge.vision.field import margin_whole

logger = logging.getLogger(__name__)

_P_EPS = 1e-4
#: Sightings a map position averages over at most (so it can follow slow drift of the offset).
_MAP_WEIGHT = 20
#: Largest disagreement between a sighting and the map, as a fraction of the cell's diameter.
_MAP_TOLERANCE = 0.15
#: Retired tracks kept on the map, newest last.
_MAP_MEMORY = 5000


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
    detection: Detection
    whole_frames: int = 0
    missed: int = 0
    #: Class probability vectors of each classification, in the contract's class order.
    probs: list[np.ndarray] = field(default_factory=list)
    last_classified: int = -(10**9)
    #: Full-resolution bbox and model-input crop of the latest classification.
    bbox_main: tuple[int, int, int, int] | None = None
    crop: np.ndarray | None = None
    counted: bool = False
    #: Position on the slide map (detection pixels), the mean of ``n_mapped`` whole sightings.
    map_pos: tuple[float, float] = (0.0, 0.0)
    n_mapped: int = 0
    #: Created this visit and not yet checked against the map (set until its first whole sighting).
    fresh: bool = True

    def wants_classification(self, frame_index: int, config: TrackerConfig) -> bool:
        return (
            len(self.probs) < config.max_classifications
            and frame_index - self.last_classified >= config.classify_every
        )

    def probability(self, how: str = "mean_logit") -> np.ndarray:
        """The aggregated class probabilities: the normalised geometric mean (default; for a binary
        model this is the mean of logits) or the mean of the probabilities (``mean_p``)."""
        if not self.probs:
            return np.full(0, np.nan)
        p = np.clip(np.asarray(self.probs, dtype=np.float64), _P_EPS, 1 - _P_EPS)
        if how == "mean_p":
            return p.mean(axis=0)
        g = np.exp(np.log(p).mean(axis=0))
        return g / g.sum()


class Tracker:
    """Associates detections across frames and decides when a track is a counted cell. Not thread-safe."""

    def __init__(self, config: TrackerConfig, frame_width: int, frame_height: int, first_id: int = 1) -> None:
        self.config = config
        self.frame_width = frame_width
        self.frame_height = frame_height
        self.tracks: list[Track] = []
        self.velocity = np.zeros(2)
        #: Cumulative shift of the field since the first frame: map position = centre - offset.
        self.offset = np.zeros(2)
        self.retired: list[Track] = []
        #: The id the next new track gets.
        self.next_id = int(first_id)
        #: Set when a saved state was restored (:mod:`.persist`): the frame it was saved at.
        self.restored_at: int | None = None
        self._registering, self._prior = False, np.zeros(2)
        self._ready: list[Track] = []
        self._last_frame: int | None = None

    # -- association -----------------------------------------------------------------------------
    def update(
        self, frame_index: int, ts: float, detections: list[Detection]
    ) -> list[tuple[Track, Detection]]:
        """Match this frame's detections to tracks; return (track, detection) for every detection.

        Each detection's ``whole`` (set by :class:`~leukoedge.vision.field.FieldAnalyzer`) says whether
        the whole cell is in the frame; where it is unset, the ``edge_margin`` rule decides.
        """
        if self.restored_at is not None:
            self._carry_on(frame_index)
        live = list(self.tracks)
        if not live and detections and self.retired:
            # nothing links these cells to the mapped ones: where the stage went meanwhile is
            # unknown, so the old map cannot be trusted to recognise anything
            logger.debug(
                "map lost after frames without tracks; %d retired tracks forgotten", len(self.retired)
            )
            self.retired.clear()
        centers = np.array([d.center for d in detections], dtype=np.float64).reshape(-1, 2)
        reach = self.config.max_shift * self.frame_width
        size = (self.frame_width, self.frame_height)
        self.velocity = stage_shift(
            live, detections, frame_index, self.velocity, reach, self.config.gate, size
        )
        matches = self._associate(live, detections, centers, frame_index)
        if self._registering and live and detections:
            live, matches = self._register(live, matches)
        step = 0 if self._last_frame is None else max(1, frame_index - self._last_frame)
        self._last_frame = frame_index
        self.offset = self._locate(
            self.offset + self.velocity * step, [(live[i], detections[j]) for i, j in matches]
        )
        used_t = {i for i, _ in matches}
        used_d = {j for _, j in matches}
        out: list[tuple[Track, Detection]] = []
        for i, j in matches:
            self._see(live[i], frame_index, ts, detections[j])
            out.append((live[i], detections[j]))
        matched_boxes = [detections[j].bbox for j in used_d]
        for j, d in enumerate(detections):
            if j in used_d:
                continue
            if any(_inside(d.center, box) for box in matched_boxes):
                continue  # a fragment of a cell already matched (e.g. one lobe of a nucleus)
            out.append((self._new_track(frame_index, ts, d), d))
        for i, t in enumerate(live):
            if i not in used_t:
                t.missed += 1
        for t, d in out:
            if t.fresh and self.is_whole(d):
                self._reidentify(t)
        self._expire()
        return out

    def _carry_on(self, frame_index: int) -> None:
        """The first frame after a restore follows the saved one: restored frame numbers are moved to it."""
        assert self.restored_at is not None
        step = frame_index - 1 - self.restored_at
        for t in (*self.tracks, *self.retired):
            t.first_frame += step
            t.last_frame += step
            t.last_classified += step
        self._last_frame, self.restored_at = frame_index - 1, None
        self._registering, self._prior = True, self.velocity.copy()

    def _register(self, live: list[Track], matches: list[tuple[int, int]]) -> tuple[list[Track], list]:
        """The first frame with cells after a restore: unless two restored tracks are found again, or
        one where the saved stage shift predicts it (one pair within reach always agrees with
        itself), the stage moved too far while the daemon was down: the restored state is forgotten."""
        self._registering = False
        tol = 0.5 * self.config.gate * float(np.median([t.diameter for t in live]))
        if len(matches) < 2 and not (matches and np.hypot(*(self.velocity - self._prior)) <= tol):
            n = sum(t.counted for t in (*self.tracks, *self.retired))
            logger.warning("stage moved while the daemon was down: %d counted cells not recognisable", n)
            self.tracks, self.retired, self.velocity = [], [], np.zeros(2)
            return [], []
        return live, matches

    def _associate(
        self, live: list[Track], detections: list[Detection], centers: np.ndarray, frame_index: int
    ) -> list[tuple[int, int]]:
        """Greedy nearest matches of live tracks (at their predicted centres) to detections."""
        if not live or not detections:
            return []
        dt = np.array([max(1, frame_index - t.last_frame) for t in live], dtype=np.float64)
        predicted = np.array([t.center for t in live]) + self.velocity[None, :] * dt[:, None]
        dist = np.hypot(*(centers[None, :, :] - predicted[:, None, :]).transpose(2, 0, 1))
        sizes = np.maximum.outer([t.diameter for t in live], [float(d.diameter) for d in detections])
        ii, jj = np.nonzero(dist <= self.config.gate * sizes)
        used_t: set[int] = set()
        used_d: set[int] = set()
        matches = []
        for _, i, j in sorted(zip(dist[ii, jj].tolist(), ii.tolist(), jj.tolist(), strict=True)):
            if i not in used_t and j not in used_d:
                used_t.add(i)
                used_d.add(j)
                matches.append((i, j))
        return matches

    def _locate(self, predicted: np.ndarray, matches: list[tuple[Track, Detection]]) -> np.ndarray:
        """The field's offset from the cells already on the map, else the predicted one.

        Summing frame-to-frame shifts alone drifts (centres are quantized and noisy); measuring
        against mapped cells, each averaged over many sightings, drifts only as cells hand over.
        A sighting whose size jumped (two touching cells found as one blob) or that disagrees with
        the prediction by more than a fraction of a cell is not trusted to move the map.
        """
        pairs = [(t, d) for t, d in matches if t.n_mapped and self.is_whole(d) and _steady(t, d)]
        if not pairs:
            return predicted
        res = np.array([np.subtract(d.center, t.map_pos) for t, d in pairs])
        weight = np.array([min(t.n_mapped, _MAP_WEIGHT) for t, _ in pairs], dtype=np.float64)
        tol = _MAP_TOLERANCE * np.array([d.diameter for _, d in pairs])
        keep = np.hypot(*(res - predicted).T) <= tol
        if not keep.any():
            return predicted
        return (res[keep] * weight[keep, None]).sum(axis=0) / weight[keep].sum()

    def _reidentify(self, t: Track) -> None:
        """At a new track's first whole sighting: continue the track of the same cell, if the map has one."""
        t.fresh = False
        candidates = [c for c in self.retired if c.n_mapped] + [
            c for c in self.tracks if c is not t and c.missed > 0 and c.n_mapped
        ]
        if not candidates:
            return
        pos = np.array([c.map_pos for c in candidates])
        dist = np.hypot(*(pos - np.asarray(t.map_pos)).T)
        reach = self.config.gate * np.maximum([c.diameter for c in candidates], t.diameter)
        k = int(np.argmin(dist - reach))
        if dist[k] > reach[k]:
            return
        old = candidates[k]
        self.retired = [c for c in self.retired if c is not old]
        self.tracks = [c for c in self.tracks if c is not old]
        logger.debug("track %d continues as track %d (map distance %.1f px)", t.id, old.id, dist[k])
        n = old.n_mapped + t.n_mapped
        t.map_pos = tuple((np.multiply(old.map_pos, old.n_mapped) + np.multiply(t.map_pos, t.n_mapped)) / n)
        t.n_mapped = min(n, _MAP_WEIGHT)
        t.id, t.first_frame, t.first_ts = old.id, old.first_frame, old.first_ts
        t.whole_frames += old.whole_frames
        t.probs = old.probs + t.probs
        t.last_classified = max(t.last_classified, old.last_classified)
        if t.crop is None:
            t.bbox_main, t.crop = old.bbox_main, old.crop
        t.counted = old.counted

    def is_whole(self, d: Detection) -> bool:
        """Not cut by the frame edge: the detection's ``whole`` when the analyzer set it (the cell's
        measured extent), else the ``edge_margin`` rule on the frame size."""
        if d.whole is not None:
            return d.whole
        return margin_whole(d, self.config.edge_margin, self.frame_width, self.frame_height)

    def _see(self, t: Track, frame_index: int, ts: float, d: Detection) -> None:
        t.last_frame, t.last_ts, t.center, t.diameter, t.detection = frame_index, ts, d.center, d.diameter, d
        t.missed = 0
        if self.is_whole(d):
            t.whole_frames += 1
            self._map(t, d)

    def _map(self, t: Track, d: Detection) -> None:
        """Fold a whole sighting into the track's map position (a mean that follows slow drift)."""
        pos = np.subtract(d.center, self.offset)
        if t.n_mapped and np.hypot(*(pos - t.map_pos)) > _MAP_TOLERANCE * float(d.diameter):
            return  # an outlier (a merged blob, a fragment): keep the map as it is
        n = min(t.n_mapped, _MAP_WEIGHT)
        t.map_pos = tuple((np.multiply(t.map_pos, n) + pos) / (n + 1))
        t.n_mapped = n + 1

    def _new_track(self, frame_index: int, ts: float, d: Detection) -> Track:
        t = Track(self.next_id, frame_index, ts, frame_index, ts, d.center, float(d.diameter), d)
        self.next_id += 1
        if self.is_whole(d):
            t.whole_frames = 1
            self._map(t, d)
        self.tracks.append(t)
        return t

    def _expire(self) -> None:
        keep = []
        for t in self.tracks:
            if t.missed <= self.config.max_missed:
                keep.append(t)
                continue
            if not t.counted and self._countable(t):
                t.counted = True
                self._ready.append(t)
            if t.n_mapped:
                self.retired.append(t)
        self.tracks = keep
        del self.retired[: max(0, len(self.retired) - _MAP_MEMORY)]

    # -- classification and counting ------------------------------------------------------------
    def record(
        self, track: Track, frame_index: int, p: np.ndarray, bbox_main: Sequence[int], crop: np.ndarray
    ) -> None:
        """Store one classification (class probabilities) of a whole detection of the track."""
        track.probs.append(np.asarray(p, dtype=np.float64).reshape(-1))
        track.last_classified = frame_index
        x0, y0, x1, y1 = (int(v) for v in bbox_main)
        track.bbox_main = (x0, y0, x1, y1)
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
        """On shutdown: every live track that qualifies is counted now (the tracks stay, counted, so
        a state saved after this shows them so)."""
        for t in self.tracks:
            if not t.counted and self._countable(t):
                t.counted = True
                self._ready.append(t)
        return self.collect()

    @property
    def live_count(self) -> int:
        return len(self.tracks)


def _steady(t: Track, d: Detection) -> bool:
    """The detection is about the size the track had in the previous frame."""
    return abs(float(d.diameter) - t.diameter) <= 0.2 * t.diameter


def _inside(point: tuple[float, float], box: tuple[int, int, int, int]) -> bool:
    return box[0] <= point[0] <= box[2] and box[1] <= point[1] <= box[3]
