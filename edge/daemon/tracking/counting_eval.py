"""Counting accuracy of the daemon's pipeline on the synthetic microscope, against its ground truth.

Runs the real :class:`~leukoedge.daemon.pipeline.frames.FrameProcessor` (detector, tracker, classifier) on
a :class:`~leukoedge.synth.StageSequence` made as the ``synthetic://`` source makes it, and follows
which truth cell every tracked detection is: a detection belongs to the truth cell whose box holds
its centre (the nearest such centre). A counted track is the truth cell most of its detections
belong to.

Ground truth: a cell is *countable* when the truth shows it whole (not cut by the frame edge) in
at least ``min_frames`` frames of the run; it is *detected-countable* when, besides, the detector
found it whole (its own ``touches_edge`` flag clear) in at least ``min_frames`` frames. A countable
cell that is not detected-countable is a detector miss; every other difference (a duplicate, a
count of a cell the truth never shows whole, a cell the tracker's stricter edge rule never took
for whole) is the tracker's. The stage path revisits
parts of the slide, so one cell can pass through the view several times: it is still one cell, and
a second count of it is a duplicate.

``python tools/counting_eval.py 1 2 3 4 --frames 1200`` prints the table for those seeds;
``--set tracker.edge_rule=margin`` scores the older whole-cell rule (a margin around the stained
region) instead of the measured cell extent (:mod:`leukoedge.vision.cellextent`).
"""

from __future__ import annotations

import collections
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from leukoedge.daemon.config import DaemonConfig
from leukoedge.daemon.types import Frame

COLUMNS = ("seed", "frames", "countable", "det_countable", "counted", "matched", "duplicates", "false",
           "missed", "det_missed")  # fmt: skip


@dataclass
class CountingResult:
    """What one run counted, next to what the truth says it should have."""

    seed: int
    frames: int
    countable: int
    det_countable: int
    counted: int
    matched: int
    duplicates: int
    false: int
    missed: int
    det_missed: int
    #: truth id -> number of counted tracks that are that cell (ids counted more than once only)
    duplicate_ids: dict[int, int] = field(default_factory=dict)
    #: for each false count: the truth cells its detections belonged to (None: no cell) and how often
    false_votes: list[dict[int | None, int]] = field(default_factory=list)

    @property
    def tracking_error(self) -> int:
        """Counted minus detected-countable cells: what the tracker adds or loses."""
        return self.counted - self.det_countable

    @property
    def raw_error(self) -> int:
        """Counted minus countable cells: tracker and detector together."""
        return self.counted - self.countable

    def row(self) -> tuple[int, ...]:
        return tuple(getattr(self, c) for c in COLUMNS)


def _truth_of(det: Any, cells: list[dict[str, Any]]) -> int | None:
    cx, cy = det.center
    best, best_d = None, float("inf")
    for c in cells:
        x0, y0, x1, y1 = c["bbox"]
        if x0 <= cx <= x1 and y0 <= cy <= y1:
            d = float(np.hypot(cx - c["center"][0], cy - c["center"][1]))
            if d < best_d:
                best, best_d = c["id"], d
    return best


def sequence_for(config: DaemonConfig, seed: int) -> Any:
    """The stage sequence the ``synthetic://`` source shows for this configuration and seed."""
    from leukoedge.synth import StageSequence

    src = config.source
    return StageSequence(
        src.width,
        src.height,
        seed=seed,
        n_cells=max(1, round(src.cells_per_field * 16)),
        speed_px_per_frame=src.stage_speed,
        n_frames=None,
    )


class TruthRecorder:
    """Follows which truth cell each tracked detection is, frame by frame, and scores the count."""

    def __init__(self, min_frames: int) -> None:
        self.min_frames = min_frames
        self.frames = 0
        self.truth_whole: collections.Counter = collections.Counter()
        self.det_whole: collections.Counter = collections.Counter()
        self.votes: dict[int, collections.Counter] = collections.defaultdict(collections.Counter)

    def observe(self, truth: dict[str, Any], assigned: list[tuple[Any, Any]]) -> None:
        """One processed frame: its truth and the tracker's (track, detection) pairs."""
        self.frames += 1
        cells = truth["cells"]
        self.truth_whole.update(c["id"] for c in cells if not c["cut_by_edge"])
        for track, det in assigned:
            tid = _truth_of(det, cells)
            self.votes[track.id][tid] += 1
            if tid is not None and not det.touches_edge:
                self.det_whole[tid] += 1

    def result(self, counted_ids: list[int], seed: int = -1) -> CountingResult:
        """Score the counted track ids against the cells the truth showed."""
        countable = {k for k, n in self.truth_whole.items() if n >= self.min_frames}
        det_countable = {k for k in countable if self.det_whole[k] >= self.min_frames}
        votes = self.votes
        identity = [votes[t].most_common(1)[0][0] if votes[t] else None for t in counted_ids]
        per_truth = collections.Counter(k for k in identity if k is not None)
        matched = set(per_truth) & countable
        false = [t for t, k in zip(counted_ids, identity, strict=True) if k is None or k not in countable]
        return CountingResult(
            seed=seed,
            frames=self.frames,
            countable=len(countable),
            det_countable=len(det_countable),
            counted=len(counted_ids),
            matched=len(matched),
            duplicates=sum(n - 1 for n in per_truth.values()),
            false=len(false),
            missed=len(countable - matched),
            det_missed=len(countable - det_countable),
            duplicate_ids={k: n for k, n in per_truth.items() if n > 1},
            false_votes=[dict(votes[t]) for t in false],
        )


def evaluate_counting(
    seed: int,
    n_frames: int,
    config: DaemonConfig | None = None,
    bundle: Any = None,
    restarts: Sequence[int] = (),
    restore: bool = True,
    down_frames: int = 0,
) -> CountingResult:
    """Run the pipeline over ``n_frames`` frames of seed ``seed`` and compare its count with the truth.

    At each frame of ``restarts`` the pipeline is replaced by a new one, as a daemon killed and
    restarted: the new one restores the saved tracker state (or, with ``restore=False``, starts
    afresh as a daemon without it would). The stage stays put while the daemon is down, or moves on
    along its path for ``down_frames`` frames that nobody sees.
    """
    from leukoedge.daemon.pipeline.frames import FrameProcessor
    from leukoedge.daemon.tracking.persist import TrackerState
    from leukoedge.inference.bundle import load_bundle

    config = config or DaemonConfig()
    bundle = bundle or load_bundle(None)
    counted_ids: list[int] = []
    sequence = sequence_for(config, seed)
    recorder = TruthRecorder(config.tracker.min_frames)
    with tempfile.TemporaryDirectory(prefix="leukoedge-eval-") as state_dir:
        state = TrackerState(state_dir, lambda: 1)
        processor = FrameProcessor(
            config, bundle, lambda cell, _: counted_ids.append(cell.track_id), 1, state
        )
        down: set[int] = set()
        for r in restarts:
            down.update(range(r, r + down_frames))
        for i in range(n_frames):
            if i in down:
                continue
            if i - down_frames in restarts:
                next_id = processor.tracker.next_id  # ids stay unique so the scoring can tell tracks apart
                processor = FrameProcessor(config, bundle, processor.on_counted, next_id, state)
                if restore:
                    state.restore(processor.tracker, 1, set(counted_ids))
            rgb, truth = sequence.frame(i)
            processor.process(Frame(i, i / 30.0, rgb, truth=truth))
            assert processor.latest is not None
            recorder.observe(truth, processor.latest[1])
        processor.flush()
    return recorder.result(counted_ids, seed)


def table(results: list[CountingResult]) -> str:
    """The results and their totals as a Markdown table."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    rows: list[tuple[int | str, ...]] = [r.row() for r in results]
    rows.append(("total", *np.sum([r.row()[1:] for r in results], axis=0).tolist()))
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def summary(results: list[CountingResult]) -> str:
    """The totals' errors in one line: counted against countable and detected-countable cells."""
    countable = sum(r.countable for r in results)
    det = sum(r.det_countable for r in results)
    counted = sum(r.counted for r in results)
    wrong = sum(r.duplicates + r.false + r.missed for r in results)
    raw, tracking = counted - countable, counted - det
    return (
        f"counted - countable = {raw:+d} ({100 * raw / max(countable, 1):+.1f} %), "
        f"counted - det_countable = {tracking:+d} ({100 * tracking / max(det, 1):+.1f} %), "
        f"errors (duplicates + false + missed) = {wrong}"
    )
