"""``leukoedge bench``: how fast this machine runs the model, the detector and the daemon.

Everything is measured here, on the machine the command runs on, with the bundle that would be
used (the bundled model unless ``--model`` names another): raw interpreter calls (int8, and
float32 when a ``*_float32.json`` bundle lies beside it), one crop through the inference wrapper,
batches of 32, detection on 640x480 and 1280x960 synthetic fields, the daemon pipeline on the
synthetic microscope, and ``leukoedge classify`` as a fresh process. Each figure is a median with
its quartiles and range; compared variants run in interleaved rounds. See :mod:`leukoedge.bench.timing`.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np

from leukoedge.bench import timing as bl

logger = logging.getLogger(__name__)

SCHEMA = "leukoedge-bench/1"
NO_FLOAT32 = "n/a (no float32 variant in this bundle)"


@dataclass(frozen=True)
class Plan:
    """How much to repeat: rounds of interleaved samples, seconds per sample, process runs."""

    rounds: int
    block_s: float
    cold_runs: int
    pipeline_frames: int
    live_s: float


QUICK = Plan(rounds=5, block_s=0.02, cold_runs=3, pipeline_frames=150, live_s=2.0)
FULL = Plan(rounds=21, block_s=0.05, cold_runs=11, pipeline_frames=1200, live_s=15.0)

Progress = Callable[[str], None]


def _stat_figure(label: str, unit: str, stat: bl.Stat, note: str = "") -> dict[str, Any]:
    return {"label": label, "unit": unit, "value": stat.median, "stat": stat.to_dict(), "note": note}


def _pct_figure(
    label: str, unit: str, pct: dict[str, float | None], n: int, note: str = ""
) -> dict[str, Any]:
    return {"label": label, "unit": unit, "value": pct["p50"], **pct, "n": n, "note": note}


def _na_figure(label: str, unit: str, note: str) -> dict[str, Any]:
    return {"label": label, "unit": unit, "value": None, "note": note}


def measure_model(bundle: Any, runtime: str | None, threads: int, plan: Plan) -> tuple[dict, dict]:
    """Raw invoke (int8, float32), one crop through the wrapper, batches of 32: interleaved."""
    from leukoedge.inference.classifier import CellClassifier, ClassifierOptions
    from leukoedge.inference.runtime import get_runtime

    rt = get_runtime(runtime)
    crops = bl.sample_crops(8)
    batch = crops[np.arange(32) % len(crops)]
    options = ClassifierOptions(runtime=runtime, num_threads=threads, batch_size=32)
    classifier = CellClassifier(bundle, options)
    samplers = {"int8": bl.block_sampler(bl.raw_invoke(rt, bundle, crops[0], threads), plan.block_s)}
    f32 = bl.float32_variant(bundle)
    if f32 is not None:
        samplers["float32"] = bl.block_sampler(bl.raw_invoke(rt, f32, crops[0], threads), plan.block_s)
    samplers["wrapper"] = bl.block_sampler(lambda: classifier.predict_proba(crops[0]), plan.block_s)
    samplers["batch"] = bl.block_sampler(lambda: classifier.predict_proba(batch), plan.block_s, 32)
    s = bl.interleave(samplers, plan.rounds)
    figures = {
        "invoke_int8_ms": _stat_figure(
            f"raw invoke per crop, {bundle.variant}", "ms", bl.Stat.of(s["int8"]).scaled(1e3)
        ),
        "classify_crop_ms": _stat_figure(
            "classify per crop (wrapper)", "ms", bl.Stat.of(s["wrapper"]).scaled(1e3), "predict_proba, 1 crop"
        ),
        "batch32_crops_per_s": _stat_figure(
            "batch throughput (32 crops)", "crops/s", bl.Stat.of(s["batch"]).inverted()
        ),
    }
    ratios = {"wrapper_over_raw": bl.ratio(s["wrapper"], s["int8"]).to_dict()}
    if f32 is not None:
        figures["invoke_float32_ms"] = _stat_figure(
            "raw invoke per crop, float32", "ms", bl.Stat.of(s["float32"]).scaled(1e3), f32.name
        )
        ratios["float32_over_int8"] = bl.ratio(s["float32"], s["int8"]).to_dict()
    else:
        note = "n/a (the bundle itself is float32)" if bundle.variant == "float32" else NO_FLOAT32
        figures["invoke_float32_ms"] = _na_figure("raw invoke per crop, float32", "ms", note)
    return figures, ratios


def measure_detection(plan: Plan) -> tuple[dict, dict]:
    """White-cell detection on a 640x480 and a 1280x960 view of the same field, interleaved."""
    sizes = {"640x480": (640, 480), "1280x960": (1280, 960)}
    samplers = {k: bl.block_sampler(bl.detection_call(w, h), plan.block_s) for k, (w, h) in sizes.items()}
    s = bl.interleave(samplers, plan.rounds)
    figures = {
        f"detect_{k}_ms": _stat_figure(
            f"detection per frame, {k}", "ms", bl.Stat.of(s[k]).scaled(1e3), "synthetic field, ~3 cells"
        )
        for k in sizes
    }
    return figures, {"detect_1280_over_640": bl.ratio(s["1280x960"], s["640x480"]).to_dict()}


def measure_pipeline(bundle: Any, threads: int, plan: Plan) -> tuple[dict, dict]:
    """The daemon on the synthetic microscope, in a child process (see :mod:`leukoedge.bench.pipeline`)."""
    from leukoedge.bench.pipeline import PipelineSpec, run_pipeline_child

    spec = PipelineSpec(
        model=str(bundle.manifest_path), threads=threads, frames=plan.pipeline_frames, live_s=plan.live_s
    )
    result = run_pipeline_child(spec)
    tp = result["throughput"]
    note = (
        f"640x480, {tp.get('cells_in_view_per_frame', 0):.1f} whole cells in view/frame "
        f"(+{tp.get('cells_cut_by_edge_per_frame', 0):.1f} cut by the edge)"
    )
    figures = {"pipeline_fps": _stat_figure("full pipeline", "fps", bl.Stat(**tp["fps"]), note)}
    if "process_cpu_ms" in tp:
        cpu = bl.Stat(**tp["process_cpu_ms"])
        figures["pipeline_cpu_fps"] = _stat_figure(
            "full pipeline, CPU-bound",
            "fps",
            cpu.inverted(1000.0),
            "1 / CPU time per frame: fps on a free core",
        )
    if "loop" in result["kind"]:
        figures["pipeline_fps"]["note"] = (
            "detect+whole-cell test+crop+classify loop: the daemon pipeline is not available"
        )
    live = result.get("live")
    if live:
        at = f"at a {live['source_fps']:g} fps source"
        figures["latency_frame_ms"] = _pct_figure(
            "latency capture -> frame result", "ms", live["latency_frame_ms"], live["frames_processed"], at
        )
        figures["latency_stored_ms"] = _pct_figure(
            "latency capture -> stored cell", "ms", live["latency_stored_ms"], live["cells_stored"], at
        )
        figures["dropped_fraction_30fps"] = {
            "label": "dropped frames",
            "unit": "%",
            "value": 100.0 * live["dropped_fraction"],
            "note": f"{live['frames_dropped']} of {live['frames_captured']} {at}",
        }
    rss_note = "TensorFlow loaded!" if result["tensorflow_loaded"] else "no TensorFlow loaded"
    figures["daemon_peak_rss_mb"] = {
        "label": "peak RSS, daemon",
        "unit": "MB",
        "value": result["peak_rss_mb"],
        "note": rss_note,
    }
    return figures, {"pipeline": result}


def measure_cold_start(bundle: Any, threads: int, plan: Plan) -> dict:
    """Fresh ``leukoedge classify one.jpg`` processes: wall time and each one's peak memory."""
    with tempfile.TemporaryDirectory(prefix="leukoedge-bench-") as tmp:
        image = bl.write_sample_cell(tmp)
        runs = bl.cold_starts(bundle, image, plan.cold_runs, threads)
    wall = bl.Stat.of([r.wall_s for r in runs])
    figures = {"cold_start_s": _stat_figure("cold start, classify one.jpg", "s", wall, "fresh process")}
    rss = [r.peak_rss_mb for r in runs if r.peak_rss_mb is not None]
    if rss:
        figures["classify_peak_rss_mb"] = _stat_figure("peak RSS, classify one.jpg", "MB", bl.Stat.of(rss))
    else:
        figures["classify_peak_rss_mb"] = _na_figure("peak RSS, classify", "MB", "not measurable here")
    return figures


def run_bench(
    model: str | None = None,
    quick: bool = False,
    threads: int = 1,
    runtime: str | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Measure everything; return the JSON-ready result (see ``leukoedge bench --json``)."""
    from leukoedge.inference.bundle import load_bundle
    from leukoedge.inference.runtime import get_runtime

    say = progress or (lambda _msg: None)
    plan = QUICK if quick else FULL
    bundle = load_bundle(model)
    rt = get_runtime(runtime)
    f32 = bl.float32_variant(bundle)
    result: dict[str, Any] = {
        "schema": SCHEMA,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "quick": quick,
        "machine": bl.machine_info(),
        "runtime": {"name": rt.name, "version": rt.version},
        "threads": threads,
        "model": {
            "name": bundle.name,
            "variant": bundle.variant,
            "sha256": bundle.sha256,
            "path": str(bundle.manifest_path),
            "float32": str(f32.manifest_path) if f32 else None,
        },
    }
    load_start = bl.load_average()
    figures: dict[str, Any] = {}
    ratios: dict[str, Any] = {}
    say("model: raw invoke, wrapper, batch ...")
    f, r = measure_model(bundle, runtime, threads, plan)
    figures.update(f)
    ratios.update(r)
    say("detection ...")
    f, r = measure_detection(plan)
    figures.update(f)
    ratios.update(r)
    say("daemon pipeline (child process) ...")
    f, detail = measure_pipeline(bundle, threads, plan)
    figures.update(f)
    say("cold start of leukoedge classify ...")
    figures.update(measure_cold_start(bundle, threads, plan))
    result["load_average"] = {"start": load_start, "end": bl.load_average()}
    result["figures"] = {k: figures[k] for k in FIGURE_ORDER if k in figures}
    result["ratios"] = ratios
    result.update(detail)
    return result


FIGURE_ORDER = (
    "invoke_int8_ms", "invoke_float32_ms", "classify_crop_ms", "batch32_crops_per_s", "detect_640x480_ms",
    "detect_1280x960_ms", "pipeline_fps", "pipeline_cpu_fps", "latency_frame_ms", "latency_stored_ms",
    "dropped_fraction_30fps", "cold_start_s", "classify_peak_rss_mb", "daemon_peak_rss_mb",
)  # fmt: skip

RATIO_LABELS = {
    "float32_over_int8": "float32 / int8, raw invoke",
    "wrapper_over_raw": "wrapper / raw invoke, one crop",
    "detect_1280_over_640": "detection 1280x960 / 640x480",
}


# -- output ---------------------------------------------------------------------------------------
def fmt_num(v: float | None) -> str:
    """Three significant figures without exponents: 0.215, 3.62, 24.5, 1234."""
    if v is None:
        return "-"
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def _figure_line(fig: dict[str, Any]) -> str:
    label, unit = fig["label"], fig["unit"]
    if fig["value"] is None:
        return f"  {label:<36} {fig['note']}"
    if "stat" in fig:
        s = fig["stat"]
        spread = f"{fmt_num(s['p25'])}-{fmt_num(s['p75'])}  ({fmt_num(s['min'])}-{fmt_num(s['max'])})"
        body = f"{fmt_num(fig['value']):>8} {unit:<7} {spread:<28} n={s['n']}"
    elif "p99" in fig:
        body = f"{'p50 ' + fmt_num(fig['p50']):>8} {unit:<7} {'p99 ' + fmt_num(fig['p99']):<28} n={fig['n']}"
    else:
        body = f"{fmt_num(fig['value']):>8} {unit:<7} {'':<28}"
    note = f"  {fig['note']}" if fig.get("note") else ""
    return f"  {label:<36} {body}{note}".rstrip()


def _load_line(load: dict[str, float | None], cores: int | None) -> str:
    start, end = load.get("start"), load.get("end")
    if start is None or end is None:
        return "load:    unknown"
    busy = (
        "; other work was running, expect slower and noisier figures"
        if max(start, end) > 0.5 * (cores or 1)
        else ""
    )
    return f"load:    1-min load average {start:.2f} at start, {end:.2f} at end ({cores} cores){busy}"


def format_table(result: dict[str, Any]) -> str:
    """The human-readable report of a :func:`run_bench` result."""
    m, rt, model = result["machine"], result["runtime"], result["model"]
    threads = result["threads"]
    lines = [
        f"leukoedge bench, {result['date']}{' (quick)' if result['quick'] else ''}",
        f"machine: {m['cpu']}, {m['cores']} cores, {m['arch']}, {m['os']}, Python {m['python']}",
        f"runtime: {rt['name']} {rt['version']}, {threads} interpreter thread{'s' if threads != 1 else ''}",
        f"model:   {model['name']} ({model['variant']}, sha256 {model['sha256'][:12]})",
        _load_line(result.get("load_average") or {}, m["cores"]),
        "",
        f"  {'figure':<36} {'median':>8} {'unit':<7} {'p25-p75  (min-max)':<28} samples",
    ]
    lines += [_figure_line(fig) for fig in result["figures"].values()]
    if result.get("ratios"):
        lines += ["", "  ratios, measured side by side in the same rounds (median, min-max):"]
        for key, r in result["ratios"].items():
            label = RATIO_LABELS.get(key, key)
            lines.append(
                f"  {label:<36} {fmt_num(r['median']):>8}x   ({fmt_num(r['min'])}-{fmt_num(r['max'])})"
            )
    return "\n".join(lines)
