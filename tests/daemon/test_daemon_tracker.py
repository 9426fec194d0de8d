"""Tracking counts each cell once, whether the stage is still, panning or jumping; queues keep the newest."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from leukoedge.daemon.config import TrackerConfig
from leukoedge.daemon.pipeline.queues import LatestQueue, RateMeter
from leukoedge.daemon.tracking.tracker import Tracker
from leukoedge.vision.detect import Detection

W, H = 640, 480


def Det(  # noqa: N802  (reads as the detection it builds)
    bbox: tuple[int, int, int, int], center: tuple[float, float], diameter: float, touches_edge: bool
) -> Detection:
    return Detection(bbox, center, diameter, touches_edge, 1.0)


def _detections(cells: np.ndarray, offset: np.ndarray, diameter: float = 40.0) -> list[Det]:
    out = []
    r = diameter / 2
    for cx, cy in cells + offset:
        if cx + r <= 0 or cy + r <= 0 or cx - r >= W or cy - r >= H:
            continue
        x0, y0 = max(0, int(cx - r)), max(0, int(cy - r))
        x1, y1 = min(W, int(cx + r)), min(H, int(cy + r))
        edge = x0 <= 2 or y0 <= 2 or x1 >= W - 2 or y1 >= H - 2
        out.append(Det((x0, y0, x1, y1), (float(cx), float(cy)), diameter, edge))
    return out


def _run(tracker: Tracker, cells: np.ndarray, offsets: list[np.ndarray], skip: set[int] = frozenset()):
    counted = []
    for i, off in enumerate(offsets):
        dets = [d for k, d in enumerate(_detections(cells, off)) if (i, k) not in skip]
        for track, det in tracker.update(i, float(i), dets):
            if tracker.is_whole(det) and track.wants_classification(i, tracker.config):
                tracker.record(track, i, 0.8, det.bbox, np.zeros((64, 64, 3), np.uint8))
        counted += tracker.collect()
    counted += tracker.flush()
    return counted


def _slide(n: int, seed: int = 0) -> np.ndarray:
    """Cell centres on a slide, at least 90 px apart (cells are 40 px across)."""
    rng = np.random.default_rng(seed)
    cells: list[np.ndarray] = []
    while len(cells) < n:
        p = rng.uniform([0, 0], [3 * W, 3 * H])
        if all(np.hypot(*(p - q)) > 90 for q in cells):
            cells.append(p)
    return np.array(cells)


def test_still_stage_counts_each_cell_once():
    cells = np.array([[100.0, 100.0], [300.0, 200.0], [500.0, 400.0]])
    counted = _run(Tracker(TrackerConfig(), W, H), cells, [np.zeros(2)] * 50)
    assert len(counted) == 3
    assert all(t.whole_frames == 50 and len(t.probs) == 3 for t in counted)


def _pan(rng: np.random.Generator, legs: int, max_step: float, pause: int = 5) -> list[np.ndarray]:
    """Field offsets of a stage that pans in legs (a new velocity each leg) and pauses between them."""
    offsets, pos = [], np.zeros(2)
    for _leg in range(legs):
        step = rng.uniform(-max_step, max_step, 2)  # a jump in velocity at every leg
        for _ in range(15):
            pos = pos + step
            offsets.append(-np.clip(-pos, [0, 0], [2 * W, 2 * H]))
        offsets += [offsets[-1]] * pause
    return offsets


def _whole_cells(tracker: Tracker, cells: np.ndarray, offsets: list[np.ndarray], min_frames: int = 3) -> int:
    """Truth: cells whole (by the tracker's own edge rule) in >= min_frames frames, however often
    the stage brings them back (one cell is one count)."""
    expected = 0
    for c in cells:
        dets = [_detections(c[None], off) for off in offsets]
        expected += sum(tracker.is_whole(d[0]) for d in dets if d) >= min_frames
    return expected


def test_panning_and_jumping_stage_counts_each_cell_once():
    cells = _slide(60)
    offsets = _pan(np.random.default_rng(1), legs=12, max_step=30)
    tracker = Tracker(TrackerConfig(min_frames=3, gate=0.6, max_shift=0.25), W, H)
    counted = _run(tracker, cells, offsets)
    expected = _whole_cells(tracker, cells, offsets)
    assert expected >= 10
    assert abs(len(counted) - expected) <= max(1, 0.02 * expected)
    assert len({t.id for t in counted}) == len(counted)


def test_a_cell_the_stage_brings_back_is_counted_once():
    """Pan away until the track expires, come back: the map recognises the cell, no second count."""
    # the first two leave on the left and come back; the third stays in view and links the map
    cells = np.array([[320.0, 240.0], [200.0, 150.0], [900.0, 350.0]])
    out_and_back = [np.array([-12.0 * k, 0.0]) for k in range(31)]
    offsets = [np.zeros(2)] * 10 + out_and_back + out_and_back[::-1] + [np.zeros(2)] * 10
    tracker = Tracker(TrackerConfig(max_missed=3), W, H)
    counted = _run(tracker, cells, offsets)
    assert len(counted) == 3
    assert sorted(len(t.probs) for t in counted) == [3, 3, 3]


def test_without_a_linking_cell_the_map_starts_afresh():
    """All cells out of view long enough for every track to expire: the stage may have gone
    anywhere, so a cell seen afterwards is not matched against the old map."""
    tracker = Tracker(TrackerConfig(max_missed=2), W, H)
    one = np.array([[320.0, 240.0]])
    for i in range(5):
        tracker.update(i, float(i), _detections(one, np.zeros(2)))
    for i in range(5, 9):
        tracker.update(i, float(i), [])
    assert len(tracker.retired) == 1 and tracker.tracks == []
    tracker.update(20, 20.0, _detections(one, np.zeros(2)))
    assert tracker.retired == [] and tracker.tracks[0].id == 2


def test_the_map_follows_a_long_pan_without_drifting():
    cells = _slide(60, seed=2)
    offsets = _pan(np.random.default_rng(4), legs=30, max_step=12)
    tracker = Tracker(TrackerConfig(), W, H)
    for i, off in enumerate(offsets):
        tracker.update(i, float(i), _detections(cells, off))
        assert np.hypot(*(tracker.offset - off)) < 3.0, i


def test_cells_entering_at_the_edge_give_the_true_shift():
    """A cell cut by the edge grows as it enters; its centre alone would halve the stage's speed."""
    cells = np.array([[660.0, 200.0], [700.0, 300.0]])  # off the right edge, entering
    tracker = Tracker(TrackerConfig(), W, H)
    for i in range(6):
        tracker.update(i, float(i), _detections(cells, np.array([-8.0 * i, 0.0])))
    assert np.allclose(tracker.velocity, [-8.0, 0.0], atol=1.0)


def test_a_missed_detection_does_not_split_a_track():
    cells = np.array([[200.0, 200.0], [400.0, 250.0]])
    offsets = [np.array([i * 5.0, 0.0]) for i in range(30)]
    counted = _run(
        Tracker(TrackerConfig(max_missed=3), W, H), cells, offsets, skip={(10, 0), (11, 0), (12, 1)}
    )
    assert len(counted) == 2


def test_cells_cut_by_the_edge_are_never_counted():
    cells = np.array([[5.0, 200.0], [320.0, 475.0]])  # half out of the frame
    assert _run(Tracker(TrackerConfig(), W, H), cells, [np.zeros(2)] * 20) == []


def test_a_brief_visit_is_counted_at_expiry_or_not_at_all():
    cells = np.array([[300.0, 200.0]])
    config = TrackerConfig(min_frames=3, max_classifications=5, max_missed=2)
    tracker = Tracker(config, W, H)
    counted = _run(tracker, cells, [np.zeros(2)] * 4 + [np.array([5000.0, 0.0])] * 5)
    assert len(counted) == 1 and counted[0].whole_frames == 4 and len(counted[0].probs) == 2
    assert _run(Tracker(config, W, H), cells, [np.zeros(2)] * 2 + [np.array([5000.0, 0.0])] * 5) == []


def test_probabilities_aggregate_as_mean_logit_or_mean_p():
    tracker = Tracker(TrackerConfig(), W, H)
    track = tracker.update(0, 0.0, _detections(np.array([[100.0, 100.0]]), np.zeros(2)))[0][0]
    p = np.array([0.9, 0.5, 0.99])
    track.probs = [np.array([1 - v, v]) for v in p]  # a binary model's (non_malignant, malignant)
    mean_logit = 1 / (1 + np.exp(-np.mean(np.log(p / (1 - p)))))
    assert abs(track.probability("mean_logit")[1] - mean_logit) < 1e-9
    assert abs(track.probability("mean_p")[1] - np.mean(p)) < 1e-9
    # a differential model: the normalised geometric mean of the probability vectors
    track.probs = [np.array([0.7, 0.2, 0.1]), np.array([0.1, 0.6, 0.3])]
    g = np.sqrt(np.array([0.07, 0.12, 0.03]))
    assert np.allclose(track.probability("mean_logit"), g / g.sum())
    assert np.allclose(track.probability("mean_p"), [0.4, 0.4, 0.2])


def test_latest_queue_drops_the_oldest_and_counts():
    q = LatestQueue(2)
    assert [q.put(i) for i in range(5)] == [0, 0, 1, 1, 1]
    assert q.dropped == 3
    assert [q.get(0), q.get(0), q.get(0)] == [3, 4, None]


def test_rate_meter():
    meter = RateMeter(window_s=2.0)
    for i in range(21):
        meter.tick(100.0 + i * 0.1)
    assert abs(meter.rate(now=102.0) - 10.0) < 0.6
    assert meter.rate(now=200.0) == 0.0
    assert meter.total == 21


def _run_flagged(tracker: Tracker, dets: list[Detection], whole: list[bool] | None, frames: int = 12) -> list:
    if whole is not None:
        dets = [replace(d, whole=w) for d, w in zip(dets, whole, strict=True)]
    counted = []
    for i in range(frames):
        for track, det in tracker.update(i, float(i), dets):
            if tracker.is_whole(det) and track.wants_classification(i, tracker.config):
                tracker.record(track, i, 0.8, det.bbox, np.zeros((64, 64, 3), np.uint8))
        counted += tracker.collect()
    return counted + tracker.flush()


def test_whole_set_on_the_detections_decides_over_the_margin():
    """A cell's measured extent (the analyzer's ``whole``) overrides the margin around its stained region."""
    near = Det((585, 200, 630, 245), (607.5, 222.5), 45.0, False)  # 10 px from the edge: margin says cut
    inside = Det((300, 200, 345, 245), (322.5, 222.5), 45.0, False)  # margin says whole
    tracker = Tracker(TrackerConfig(), W, H)
    assert not tracker.is_whole(near) and tracker.is_whole(inside)
    assert len(_run_flagged(Tracker(TrackerConfig(), W, H), [near], None)) == 0
    assert len(_run_flagged(Tracker(TrackerConfig(), W, H), [near], [True])) == 1
    assert len(_run_flagged(Tracker(TrackerConfig(), W, H), [inside], [False])) == 0
    # the decision travels with the detection it was made for, not with the tracker's last frame
    tracker = Tracker(TrackerConfig(), W, H)
    flagged = replace(near, whole=True)
    tracker.update(0, 0.0, [flagged])
    assert tracker.is_whole(flagged)
    tracker.update(1, 1.0, [near])
    assert not tracker.is_whole(near) and tracker.is_whole(flagged)
