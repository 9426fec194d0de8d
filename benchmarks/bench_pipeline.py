"""The daemon pipeline on the synthetic microscope: sustained fps, latency, dropped frames, memory.

Runs the real daemon (capture thread, freshest-frame queue, detection, tracking, classification,
SQLite store) in a fresh process on 640x480 frames of a moving stage with about three white cells
per field (see :mod:`leukoedge.bench.pipeline`):

- sustained processed frames per second, the source as fast as processing takes frames
  (target >= 240 fps on the development machine);
- at a camera-paced 30 fps source: latency from capture to each frame's result and to each
  counted cell's committed row (p50, p99), and the share of frames dropped;
- the daemon process's peak resident memory (target <= 150 MB) and that it never loaded TensorFlow.

    python benchmarks/bench_pipeline.py [--model BUNDLE] [--quick] [--json] [--threads N] [--runs N]
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from common import Target, emit, row, with_load

from leukoedge.bench import timing as bl
from leukoedge.bench.pipeline import PipelineSpec, run_pipeline_child

TARGETS = {"fps": Target(">=", 240.0), "peak_rss_mb": Target("<=", 150.0)}
PLANS = {
    "quick": {"frames": 150, "live_s": 2.0, "runs": 1},
    "full": {"frames": 1200, "live_s": 15.0, "runs": 3},
}


def run(args: argparse.Namespace) -> dict[str, Any]:
    from leukoedge.inference.bundle import load_bundle

    plan = PLANS["quick" if args.quick else "full"]
    bundle = load_bundle(args.model)
    spec = PipelineSpec(
        model=str(bundle.manifest_path), threads=args.threads, frames=plan["frames"], live_s=plan["live_s"]
    )
    runs = [run_pipeline_child(spec) for _ in range(args.runs or plan["runs"])]
    return summarize(runs, bundle)


def _median_of(runs: list[dict], phase: str, key: str, q: str) -> float | None:
    values = [r[phase][key][q] for r in runs if r.get(phase) and r[phase][key][q] is not None]
    return bl.Stat.of(values).median if values else None


def summarize(runs: list[dict[str, Any]], bundle: Any) -> dict[str, Any]:
    """Figures over all runs: fps per block of one run, or per run; latency as the median over runs."""
    if len(runs) > 1:
        fps = bl.Stat.of([r["throughput"]["fps_overall"] for r in runs])
    else:
        fps = bl.Stat(**runs[0]["throughput"]["fps"])
    tp = runs[0]["throughput"]
    live = [r["live"] for r in runs if r.get("live")]
    peak = max((r["peak_rss_mb"] for r in runs if r["peak_rss_mb"] is not None), default=None)
    tf_loaded = any(r["tensorflow_loaded"] for r in runs)
    captured = sum(x["frames_captured"] for x in live)
    dropped = sum(x["frames_dropped"] for x in live)
    at = f"at a {live[0]['source_fps']:g} fps source" if live else ""
    cells = f"{tp['cells_in_view_per_frame']:.1f} whole cells in view/frame"
    figures = {
        "fps": row("sustained processed fps, 640x480", "fps", fps.median, fps, TARGETS["fps"], cells),
        "process_ms": row(
            "processing per frame", "ms", tp["process_ms"]["median"], bl.Stat(**tp["process_ms"])
        ),
    }
    if "process_cpu_ms" in tp:
        cpu = bl.Stat(**tp["process_cpu_ms"])
        figures["process_cpu_ms"] = row("  CPU time per frame (processing)", "ms", cpu.median, cpu)
        free = cpu.inverted(1000.0)
        figures["fps_cpu_bound"] = row(
            "  = fps with a free core", "fps", free.median, free, TARGETS["fps"], "1 / CPU time per frame"
        )
    for what, key in (("frame result", "latency_frame_ms"), ("stored cell", "latency_stored_ms")):
        for q in ("p50", "p99"):
            label = f"latency capture -> {what}, {q}"
            figures[f"{key[:-3]}_{q}_ms"] = row(label, "ms", _median_of(runs, "live", key, q), note=at)
    share = 100.0 * dropped / captured if captured else None
    figures["dropped_fraction"] = row("dropped frames", "%", share, note=f"{dropped} of {captured} {at}")
    tf_note = "TensorFlow LOADED" if tf_loaded else "no TensorFlow loaded"
    figures["peak_rss_mb"] = row(
        "peak RSS, daemon process", "MB", peak, None, TARGETS["peak_rss_mb"], tf_note
    )
    return {
        "schema": "leukoedge-bench-pipeline/1",
        "machine": bl.machine_info(),
        "bundle": {"name": bundle.name, "path": str(bundle.manifest_path)},
        "kind": runs[0]["kind"],
        "tensorflow_loaded": tf_loaded,
        "figures": figures,
        "runs": runs,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", help="model bundle (default: the bundled model)")
    parser.add_argument("--quick", action="store_true", help="a short run (about 10 s)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--threads", type=int, default=1, help="interpreter threads (default 1)")
    parser.add_argument("--runs", type=int, help="daemon runs (default: 1 quick, 3 full)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    result = with_load(run, args)
    extra = [f"  {result['kind']}; bundle {result['bundle']['name']}"]
    if result["tensorflow_loaded"]:
        extra.append("  MISS: the daemon process loaded TensorFlow")
    emit(result, args.json, "leukoedge daemon pipeline" + (" (quick)" if args.quick else ""), extra)


if __name__ == "__main__":
    main()
