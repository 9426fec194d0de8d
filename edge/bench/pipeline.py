"""The daemon pipeline, timed: processed frames per second, latency, dropped frames, memory.

This runs the real daemon (:class:`leukoedge.daemon.service.Daemon`: capture thread, freshest-frame
queue, detection, tracking, classification, SQLite store) on the synthetic microscope, with two
clocks on its frame and commit hooks (:class:`DaemonClocks`): one where each frame's processing
ends, one where each counted cell is committed to the store. It runs in two phases:

- throughput: the source delivers frames as fast as it can and waits for room in the queue
  (lossless), so the figure is what processing sustains, not what the source renders;
- live: the source is paced like a camera (30 fps) and frames are dropped when processing falls
  behind, as on the microscope; latency and the dropped share are measured here.

:func:`run_pipeline_child` runs both in a fresh process (``python -m leukoedge.bench.pipeline SPEC``)
so the peak resident memory reported is the daemon's own. Where the daemon is not installed the
same stages (the field analyzer and the classifier) are timed in a plain loop, and the result says so.
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from leukoedge.bench.timing import Stat, module_argv, percentiles, run_child
from leukoedge.errors import LeukoEdgeError

if TYPE_CHECKING:
    from leukoedge.daemon.service import Daemon
    from leukoedge.daemon.types import CountedCell, FrameTiming

logger = logging.getLogger(__name__)

#: What a result's ``kind`` says about how it was measured.
KIND_DAEMON = "daemon pipeline (capture thread, queue, detect, track, classify, SQLite store)"
KIND_LOOP = "detect+whole-cell test+crop+classify loop (daemon pipeline not available)"


@dataclass(frozen=True)
class PipelineSpec:
    """What to run: the model, frame size, cells per frame, and how long each phase lasts."""

    model: str = ""
    threads: int = 1
    frames: int = 600
    warmup: int = 30
    live_s: float = 5.0
    live_fps: float = 30.0
    width: int = 640
    height: int = 480
    cells_per_field: float = 3.0
    seed: int = 1
    blocks: int = 8


def _config(spec: PipelineSpec, state_dir: str, **pipeline: Any) -> Any:
    from leukoedge.daemon.config import apply_overrides, load_config

    overrides = {
        "source.uri": "synthetic://",
        "source.width": spec.width,
        "source.height": spec.height,
        "source.seed": spec.seed,
        "source.cells_per_field": spec.cells_per_field,
        "store.state_dir": state_dir,
        "http.enabled": False,
        "session.sample_id": "bench",
        "model.path": spec.model,
        "model.num_threads": spec.threads,
    }
    overrides.update(pipeline)
    return apply_overrides(load_config(None), overrides)


class DaemonClocks:
    """The daemon's frame and commit hooks, recording when each frame ended and each cell was stored."""

    def __init__(self) -> None:
        #: (capture time.time(), end time.time(), end perf_counter, processing s, crops,
        #: cells wholly in view, cells partly in view, processing thread's CPU s)
        self.frames: list[tuple[float, float, float, float, int, int, int, float]] = []
        #: seconds from the capture of the frame that completed a cell to its committed row
        self.stored: list[float] = []

    def on_frame(self, timing: FrameTiming) -> None:
        cells = (timing.frame.truth or {}).get("cells", ())
        whole = sum(1 for c in cells if not c.get("cut_by_edge"))
        self.frames.append(
            (
                timing.frame.ts,
                time.time(),
                timing.ended,
                timing.seconds,
                timing.crops,
                whole,
                len(cells) - whole,
                timing.cpu_s,
            )
        )

    def on_commit(self, cell: CountedCell, _cell_id: int) -> None:
        self.stored.append(time.time() - cell.last_seen_ts)


def _run_daemon(spec: PipelineSpec, **pipeline: Any) -> tuple[Daemon, DaemonClocks]:
    from leukoedge.daemon.service import Daemon

    clocks = DaemonClocks()
    with tempfile.TemporaryDirectory(prefix="leukoedge-bench-") as state:
        daemon = Daemon(_config(spec, state, **pipeline))
        daemon.on_frame, daemon.on_commit = clocks.on_frame, clocks.on_commit
        code = daemon.run(install_signals=False)
        if code != 0:
            raise LeukoEdgeError(f"the daemon stopped with status {code}: {daemon.exit_reason}")
    return daemon, clocks


def _block_fps(ends: np.ndarray, blocks: int) -> Stat:
    """Processed frames per second in consecutive blocks of frames (one sample per block)."""
    gaps = np.diff(ends)
    parts = [p for p in np.array_split(gaps, max(1, min(blocks, len(gaps)))) if len(p)]
    return Stat.of([len(p) / float(p.sum()) for p in parts])


def throughput_phase(spec: PipelineSpec) -> dict[str, Any]:
    """Frames as fast as processing takes them: sustained fps, processing time, cells per frame."""
    daemon, clocks = _run_daemon(
        spec,
        **{"source.fps": 0.0, "pipeline.lossless": True, "pipeline.max_frames": spec.warmup + spec.frames},
    )
    rows = clocks.frames[spec.warmup :]
    if len(rows) < 2:
        raise LeukoEdgeError(f"the pipeline processed only {len(clocks.frames)} frames")
    ends = np.array([r[2] for r in rows])
    return {
        "frames": len(rows),
        "fps": _block_fps(ends, spec.blocks).to_dict(),
        "fps_overall": (len(rows) - 1) / float(ends[-1] - ends[0]),
        "process_ms": Stat.of([1000 * r[3] for r in rows]).to_dict(),
        # CPU time of the processing thread: what a frame costs whatever else runs on the machine.
        "process_cpu_ms": Stat.of([1000 * r[7] for r in rows]).to_dict(),
        "crops_per_frame": float(np.mean([r[4] for r in rows])),
        "cells_in_view_per_frame": float(np.mean([r[5] for r in rows])),
        "cells_cut_by_edge_per_frame": float(np.mean([r[6] for r in rows])),
        "cells_counted": daemon.stats.cells_total,
    }


def live_phase(spec: PipelineSpec) -> dict[str, Any]:
    """A camera-paced source: latency from capture to result and to stored row; dropped frames."""
    daemon, clocks = _run_daemon(
        spec, **{"source.fps": spec.live_fps, "pipeline.lossless": False, "pipeline.duration_s": spec.live_s}
    )
    rows = clocks.frames[spec.warmup :] or clocks.frames
    metrics = daemon.stats.metrics()
    captured = int(metrics["frames_captured_total"])
    dropped = int(metrics["frames_dropped_total"])
    return {
        "source_fps": spec.live_fps,
        "seconds": spec.live_s,
        "frames_captured": captured,
        "frames_processed": int(metrics["frames_processed_total"]),
        "frames_dropped": dropped,
        "dropped_fraction": dropped / captured if captured else 0.0,
        "latency_frame_ms": percentiles([1000 * (r[1] - r[0]) for r in rows]),
        "latency_stored_ms": percentiles([1000 * s for s in clocks.stored]),
        "cells_stored": len(clocks.stored),
    }


def loop_analyzer(contract: Any) -> Any:
    """The field analyzer the daemon builds with its default configuration (see ``FrameProcessor``)."""
    from leukoedge.vision.detect import CellDetector
    from leukoedge.vision.field import FieldAnalyzer

    return FieldAnalyzer(CellDetector(), contract)


def loop_frames(spec: PipelineSpec) -> list[np.ndarray]:
    """The synthetic stage frames the loop cycles through (at most 120, rendered before timing)."""
    from leukoedge.synth import StageSequence

    n_cells = max(1, round(spec.cells_per_field * 16))
    seq = StageSequence(spec.width, spec.height, seed=spec.seed, n_cells=n_cells)
    return [seq.frame(i)[0] for i in range(min(spec.frames, 120))]


def loop_fps(spec: PipelineSpec) -> dict[str, Any]:
    """The daemon's stages in a plain loop: the same field analyzer (detect, whole-cell test, crops at
    the measured scale) and classifier, without threads, queue, tracker or store."""
    from leukoedge.inference.bundle import load_bundle
    from leukoedge.inference.classifier import CellClassifier, ClassifierOptions

    bundle = load_bundle(spec.model or None)
    classifier = CellClassifier(bundle, ClassifierOptions(num_threads=spec.threads, batch_size=8))
    analyzer = loop_analyzer(bundle.contract)
    frames = loop_frames(spec)
    ends = []
    for i in range(spec.warmup + spec.frames):
        _, crops = analyzer.analyze(frames[i % len(frames)])
        if len(crops):
            classifier.predict_proba(crops)
        if i >= spec.warmup:
            ends.append(time.perf_counter())
    return {"frames": len(ends), "fps": _block_fps(np.array(ends), spec.blocks).to_dict()}


def measure_pipeline(spec: PipelineSpec) -> dict[str, Any]:
    """Both phases (or the plain loop where the daemon is missing), in this process."""
    try:
        import leukoedge.daemon.service  # noqa: F401
    except ImportError as e:
        logger.warning("daemon pipeline not available (%s): timing the stages in a loop", e)
        result: dict[str, Any] = {"kind": KIND_LOOP, "throughput": loop_fps(spec), "live": None}
    else:
        result = {"kind": KIND_DAEMON, "throughput": throughput_phase(spec)}
        result["live"] = live_phase(spec) if spec.live_s > 0 else None
    result["spec"] = asdict(spec)
    result["tensorflow_loaded"] = "tensorflow" in sys.modules
    return result


def run_pipeline_child(spec: PipelineSpec, timeout_s: float = 600.0) -> dict[str, Any]:
    """:func:`measure_pipeline` in a fresh process; adds its peak RSS and wall time."""
    run = run_child(module_argv("leukoedge.bench.pipeline", json.dumps(asdict(spec))), timeout_s)
    lines = run.stdout.strip().splitlines()
    if run.returncode != 0 or not lines:
        raise LeukoEdgeError(f"pipeline benchmark failed (status {run.returncode}): {run.stderr[-800:]}")
    result = json.loads(lines[-1])
    result["peak_rss_mb"] = run.peak_rss_mb
    result["wall_s"] = run.wall_s
    return result


def main(argv: list[str] | None = None) -> int:
    """Child entry: SPEC is a JSON object of :class:`PipelineSpec` fields; prints one JSON line."""
    args = sys.argv[1:] if argv is None else argv
    spec = PipelineSpec(**(json.loads(args[0]) if args else {}))
    try:
        result = measure_pipeline(spec)
    except LeukoEdgeError as e:
        print(f"Error: {e}", file=sys.stderr)
        return e.exit_code
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
