"""A restarted tracker, restored from the saved state, does not count again what the store holds."""

from __future__ import annotations

import json
import logging

import numpy as np

from leukoedge.daemon.config import TrackerConfig
from leukoedge.daemon.tracking.persist import STATE_NAME, TrackerState
from leukoedge.daemon.tracking.tracker import Track, Tracker
from leukoedge.vision.detect import Detection

W, H = 640, 480
SESSION = 7


def _detections(cells: np.ndarray, offset: np.ndarray, diameter: float = 40.0) -> list[Detection]:
    out = []
    r = diameter / 2
    for cx, cy in cells + offset:
        if cx + r <= 0 or cy + r <= 0 or cx - r >= W or cy - r >= H:
            continue
        x0, y0 = max(0, int(cx - r)), max(0, int(cy - r))
        x1, y1 = min(W, int(cx + r)), min(H, int(cy + r))
        edge = x0 <= 2 or y0 <= 2 or x1 >= W - 2 or y1 >= H - 2
        out.append(Detection((x0, y0, x1, y1), (float(cx), float(cy)), diameter, edge, 1.0))
    return out


def _frames(
    tracker: Tracker, cells: np.ndarray, offsets: list[np.ndarray], first: int, state: TrackerState
) -> list[Track]:
    """Process frames ``first``, ``first + 1``, ... as the daemon does, saving the state as it goes."""
    counted = []
    for i, off in enumerate(offsets, start=first):
        for track, det in tracker.update(i, float(i), _detections(cells, off)):
            if tracker.is_whole(det) and track.wants_classification(i, tracker.config):
                tracker.record(track, i, np.array([0.2, 0.8]), det.bbox, np.zeros((8, 8, 3), np.uint8))
        ready = tracker.collect()
        state.after_frame(tracker, i, bool(ready))
        counted += ready
    return counted


def _restarted(state: TrackerState, committed: set[int], first_id: int = 1) -> Tracker:
    tracker = Tracker(TrackerConfig(), W, H, first_id)
    state.restore(tracker, SESSION, committed)
    return tracker


CELLS = np.array([[100.0, 100.0], [300.0, 200.0], [500.0, 400.0], [1100.0, 240.0], [1000.0, 380.0]])
STILL = [np.zeros(2)] * 12


def test_cells_in_view_at_a_restart_are_not_counted_again(tmp_path):
    state = TrackerState(tmp_path, lambda: SESSION)
    before = _frames(Tracker(TrackerConfig(), W, H), CELLS, STILL, 0, state)
    assert len(before) == 3
    committed = {t.id for t in before}
    # the new process numbers its frames from 0 again; the stage has not moved
    assert _frames(_restarted(state, committed, max(committed) + 1), CELLS, STILL, 0, state) == []
    # without the saved state, every cell in view was counted a second time
    (tmp_path / STATE_NAME).unlink()
    assert len(_frames(_restarted(state, committed, max(committed) + 1), CELLS, STILL, 0, state)) == 3


def test_a_cell_counted_but_not_stored_is_counted_again(tmp_path):
    state = TrackerState(tmp_path, lambda: SESSION)
    before = _frames(Tracker(TrackerConfig(), W, H), CELLS, STILL, 0, state)
    lost = before[-1].id  # its commit was still queued when the process died
    again = _frames(_restarted(state, {t.id for t in before} - {lost}), CELLS, STILL, 0, state)
    assert [t.id for t in again] == [lost]


def test_counted_cells_are_recognised_after_a_restart_with_the_stage_moved_a_little(tmp_path):
    """Pan right past three cells to two others; restart with the stage 60 px further on; pan back."""
    state = TrackerState(tmp_path, lambda: SESSION)
    there = [np.array([-12.0 * k, 0.0]) for k in range(50)]
    before = _frames(Tracker(TrackerConfig(max_missed=3), W, H), CELLS, there, 0, state)
    assert len(before) == 5
    tracker = _restarted(state, {t.id for t in before})
    back = [np.array([-12.0 * k, 0.0]) for k in range(54, -1, -1)]
    assert _frames(tracker, CELLS, back, 100, state) == []
    assert len(tracker.tracks) == 3  # found again where the map has them


def test_a_stage_moved_beyond_reach_forgets_the_restored_state(tmp_path, caplog):
    state = TrackerState(tmp_path, lambda: SESSION)
    before = _frames(Tracker(TrackerConfig(), W, H), CELLS, STILL, 0, state)
    tracker = _restarted(state, {t.id for t in before}, 10)
    elsewhere = np.array([[200.0, 300.0], [450.0, 120.0]])  # another field, nothing in common
    with caplog.at_level(logging.WARNING):
        counted = _frames(tracker, elsewhere, STILL, 0, state)
    assert "stage moved while the daemon was down: 3 counted cells" in caplog.text
    assert len(counted) == 2 and tracker.retired == []


def test_a_saved_state_of_another_session_or_unreadable_is_ignored(tmp_path, caplog):
    state = TrackerState(tmp_path, lambda: SESSION)
    before = _frames(Tracker(TrackerConfig(), W, H), CELLS, STILL, 0, state)
    committed = {t.id for t in before}
    tracker = Tracker(TrackerConfig(), W, H)
    assert state.restore(tracker, SESSION + 1, committed) == 0 and tracker.tracks == []
    path = tmp_path / STATE_NAME
    data = json.loads(path.read_bytes())
    leftover = tmp_path / f".{STATE_NAME}.123.456.tmp"  # a save cut short by kill -9
    leftover.write_bytes(b"{")
    assert state.restore(Tracker(TrackerConfig(), W, H), SESSION, committed) == 3
    assert not leftover.exists()
    for broken in (b"{not json", json.dumps({**data, "offset": "x"}).encode(), b"[]"):
        path.write_bytes(broken)
        tracker = Tracker(TrackerConfig(), W, H)
        with caplog.at_level(logging.WARNING):
            assert state.restore(tracker, SESSION, committed) == 0
        assert tracker.tracks == [] and tracker.restored_at is None
    assert "ignoring the tracker state" in caplog.text


def test_a_failing_save_is_counted_and_never_stops_the_tracker(tmp_path, caplog):
    (tmp_path / "blocked").write_text("a file where the state folder should be")
    state = TrackerState(tmp_path / "blocked", lambda: SESSION)
    with caplog.at_level(logging.WARNING):
        assert len(_frames(Tracker(TrackerConfig(), W, H), CELLS, STILL, 0, state)) == 3
    assert state.errors >= 2
    assert caplog.text.count("cannot save the tracker state") == 1
