"""The tracker's slide map kept in the state folder, so a restart does not count a cell twice.

After a restart (a crash, kill -9, a camera failure that systemd restarts) the daemon continues the
open session; a tracker that started empty would count every cell in view once more. So the
processing thread saves what the tracker knows - the stage offset and shift, the live tracks (where
each cell was in the last frame, whether it was counted) and the map positions of the counted
cells that left the view - to ``tracker.json`` in the state folder, written atomically
(:func:`leukoedge.atomic.write_atomic`): before the cells counted in a frame are handed to the
store, and otherwise every few frames.

At start the saved state is restored only into the session it was saved in, and the store has
the last word on what was counted: a saved track is "counted" only when the session holds a cell
with its track id. A cell counted but lost with the process (its commit still queued) is thus
counted again, and a committed cell is never counted twice. The saved state is a cache: missing,
unreadable, of another session or another frame size, it is ignored and counting starts afresh.

What it can do: the first frame after the restart is registered against the restored live tracks
the way consecutive frames are (the stage shift most cell pairs agree on, within
``tracker.max_shift`` of the frame width), so a still stage, or one moved a little while the daemon
was down, finds its counted cells again, in view and, once the pan brings them back, on the map.
What it cannot do: a stage moved further than that while the daemon was down (or a restart with no
remembered cell in view) cannot be registered without an image of the old field; the restored map
is then of no use until a remembered cell is matched, and cells counted before may be counted again.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from leukoedge.atomic import TMP_SUFFIX, write_atomic
from leukoedge.daemon.tracking.tracker import Track, Tracker
from leukoedge.vision.detect import Detection

logger = logging.getLogger(__name__)

STATE_NAME = "tracker.json"
_VERSION = 1
#: Frames between two saves when no cell was counted (a count saves at once).
SAVE_EVERY = 5


class TrackerState:
    """Saves a tracker to ``state_dir/tracker.json`` and restores it into a new one."""

    def __init__(self, state_dir: str | Path, session: Callable[[], int | None]) -> None:
        self.path = Path(state_dir) / STATE_NAME
        self.session = session
        self.errors = 0
        self._since_save = 0
        self._failing = False

    def after_frame(self, tracker: Tracker, frame_index: int, counted: bool) -> None:
        """Save now if cells were counted (before they go to the store), else every few frames."""
        self._since_save += 1
        if counted or self._since_save >= SAVE_EVERY:
            self.save(tracker, frame_index)

    def save(self, tracker: Tracker, frame_index: int) -> None:
        """Write the tracker's state; a failure is logged and counted, never raised into the pipeline."""
        self._since_save = 0
        data = snapshot(tracker, frame_index, self.session())
        try:
            write_atomic(self.path, json.dumps(data, separators=(",", ":")).encode(), 0o640)
        except OSError as e:
            self.errors += 1
            if not self._failing:  # once per run of failures, not every few frames
                logger.warning("cannot save the tracker state to %s: %s", self.path, e)
            self._failing = True
            return
        if self._failing:
            logger.info("the tracker state is saved again")
        self._failing = False

    def load(self) -> dict[str, Any] | None:
        """The saved state, or None when there is none or it cannot be read."""
        for leftover in self.path.parent.glob(f".{self.path.name}.*{TMP_SUFFIX}"):
            leftover.unlink(missing_ok=True)  # a save cut short by a crash
        try:
            data = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            logger.warning("ignoring the tracker state %s: %s", self.path, e)
            return None
        if not isinstance(data, dict) or data.get("version") != _VERSION:
            logger.warning("ignoring the tracker state %s: not a version %d state", self.path, _VERSION)
            return None
        return data

    def restore(self, tracker: Tracker, session_id: int | None, committed: set[int]) -> int:
        """Restore the saved state of ``session_id`` into a new tracker; return the counted cells it knows.

        ``committed`` is the track ids of the session's cells in the store.
        """
        data = self.load()
        if data is None or session_id is None or data.get("session_id") != session_id:
            return 0
        if data.get("size") != [tracker.frame_width, tracker.frame_height]:
            logger.info("tracker state is for another frame size; starting afresh")
            return 0
        try:
            return restore(tracker, data, committed)
        except (KeyError, TypeError, ValueError, IndexError) as e:
            logger.warning("ignoring the tracker state %s: %s", self.path, e)
            return 0


def snapshot(tracker: Tracker, frame_index: int, session_id: int | None) -> dict[str, Any]:
    """The tracker as JSON-ready data: live tracks in full, counted retired ones by map position."""
    return {
        "version": _VERSION,
        "session_id": session_id,
        "frame": int(frame_index),
        "size": [tracker.frame_width, tracker.frame_height],
        "offset": [float(v) for v in tracker.offset],
        "velocity": [float(v) for v in tracker.velocity],
        "next_id": tracker.next_id,
        "tracks": [_track(t) for t in tracker.tracks],
        "map": [
            [t.id, *(round(float(v), 2) for v in t.map_pos), round(t.diameter, 2), t.n_mapped]
            for t in tracker.retired
            if t.counted and t.n_mapped
        ],
    }


def restore(tracker: Tracker, data: dict[str, Any], committed: set[int]) -> int:
    """Put a snapshot into a tracker that has not seen a frame yet; return the counted cells restored.

    A saved track counts as counted only if ``committed`` holds its id. Crops are not saved: an
    uncounted track classified again after the restart gets one, else it is stored without one.
    The tracker is changed only once the whole snapshot has been read.
    """
    offset = np.array(data["offset"], dtype=np.float64).reshape(2)
    velocity = np.array(data["velocity"], dtype=np.float64).reshape(2)
    frame, next_id = int(data["frame"]), int(data["next_id"])
    tracks = [_untrack(d, committed) for d in data["tracks"]]
    retired = []
    for tid, mx, my, diameter, n in data["map"]:
        if int(tid) not in committed:
            continue  # counted, but the store never got it: let it be counted again
        d = Detection((0, 0, 0, 0), (float(mx), float(my)), float(diameter), False, 1.0)
        t = Track(int(tid), 0, 0.0, 0, 0.0, d.center, float(diameter), d, counted=True)
        t.map_pos, t.n_mapped, t.fresh = (float(mx), float(my)), int(n), False
        retired.append(t)
    tracker.tracks, tracker.retired = tracks, retired
    tracker.offset, tracker.velocity = offset, velocity
    tracker.next_id = max(tracker.next_id, next_id, 1 + max((t.id for t in tracks), default=0))
    tracker.restored_at = frame
    counted = sum(t.counted for t in tracks) + len(retired)
    logger.info(
        "tracker state restored: %d live tracks, %d counted cells remembered (saved at frame %d)",
        len(tracks), counted, tracker.restored_at,
    )  # fmt: skip
    return counted


def _track(t: Track) -> dict[str, Any]:
    d = t.detection
    return {
        "id": t.id,
        "frames": [t.first_frame, t.last_frame, t.last_classified],
        "ts": [t.first_ts, t.last_ts],
        "det": [list(d.bbox), list(d.center), float(d.diameter), d.touches_edge, d.whole],
        "whole_frames": t.whole_frames,
        "missed": t.missed,
        "probs": [[float(v) for v in np.ravel(p)] for p in t.probs],
        "bbox_main": None if t.bbox_main is None else list(t.bbox_main),
        "counted": t.counted,
        "map": [float(v) for v in t.map_pos],
        "n_mapped": t.n_mapped,
        "fresh": t.fresh,
    }


def _untrack(s: dict[str, Any], committed: set[int]) -> Track:
    bbox, center, diameter, touches_edge, whole = s["det"]
    d = Detection(
        tuple(int(v) for v in bbox),  # type: ignore[arg-type]
        (float(center[0]), float(center[1])),
        float(diameter),
        bool(touches_edge),
        1.0,
        None if whole is None else bool(whole),
    )
    first, last, classified = (int(v) for v in s["frames"])
    t = Track(int(s["id"]), first, float(s["ts"][0]), last, float(s["ts"][1]), d.center, d.diameter, d)
    t.whole_frames, t.missed = int(s["whole_frames"]), int(s["missed"])
    t.counted = bool(s["counted"]) and t.id in committed
    # each classification is a class probability vector; anything else is dropped (classified again)
    t.probs = [np.asarray(p, dtype=np.float64) for p in s["probs"] if isinstance(p, list)]
    t.last_classified = classified
    t.bbox_main = None if s["bbox_main"] is None else tuple(int(v) for v in s["bbox_main"])  # type: ignore[assignment]
    t.map_pos, t.n_mapped, t.fresh = (
        (float(s["map"][0]), float(s["map"][1])),
        int(s["n_mapped"]),
        bool(s["fresh"]),
    )
    return t
