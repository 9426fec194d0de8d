"""``leukoedge bench`` and the scripts in benchmarks/ run and report every figure.

Only the quick forms run, and no test asserts a time: the figures must be there, be numbers and be
positive; their size depends on the machine and its load.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from leukoedge.bench import timing as bl
from leukoedge.bench.suite import FIGURE_ORDER, NO_FLOAT32, format_table
from leukoedge.cli import cli
from leukoedge.inference.bundle import load_bundle

REPO = Path(__file__).resolve().parents[2]
BENCHMARKS = REPO / "benchmarks"


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the tiny int8 bundle and its float32 sibling."""
    pytest.importorskip("tensorflow")
    from support.model import make_test_bundle

    out = tmp_path_factory.mktemp("bench-bundles")
    make_test_bundle(out)
    make_test_bundle(out, "float32")
    return out


@pytest.fixture(scope="module")
def quick_result(bundles: Path) -> dict:
    result = CliRunner().invoke(
        cli, ["bench", "--quick", "--json", "--model", str(bundles / "tiny_int8.json")]
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _positive(value: object) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


# -- the measuring pieces ---------------------------------------------------------------------------
def test_stat_median_quartiles_range_and_inversion() -> None:
    s = bl.Stat.of([5.0, 1.0, 3.0, 2.0, 4.0])
    assert (s.median, s.p25, s.p75, s.min, s.max, s.n) == (3.0, 2.0, 4.0, 1.0, 5.0, 5)
    assert s.scaled(1000).median == 3000.0
    inv = s.inverted()
    assert inv.median == pytest.approx(1 / 3) and inv.min == pytest.approx(1 / 5) and inv.max == 1.0
    assert bl.ratio([2.0, 4.0, 6.0], [1.0, 2.0, 2.0]).median == 2.0
    assert bl.percentiles([]) == {"p50": None, "p99": None}
    with pytest.raises(ValueError):
        bl.Stat.of([])


def test_interleave_alternates_variants_round_by_round() -> None:
    calls: list[str] = []

    def sampler(name: str):
        return lambda: calls.append(name) or 1.0

    samples = bl.interleave({"a": sampler("a"), "b": sampler("b")}, rounds=3)
    assert calls == ["a", "b", "a", "b", "a", "b"]
    assert samples == {"a": [1.0] * 3, "b": [1.0] * 3}


def test_float32_variant_is_found_beside_the_bundle_or_none(bundles: Path, tmp_path: Path) -> None:
    found = bl.float32_variant(load_bundle(bundles / "tiny_int8.json"))
    assert found is not None and found.variant == "float32"
    for name in ("tiny_int8.json", "tiny_int8.tflite"):
        shutil.copy(bundles / name, tmp_path / name)
    assert bl.float32_variant(load_bundle(tmp_path)) is None


def test_child_process_reports_its_own_peak_memory(tmp_path: Path) -> None:
    run = bl.run_child(bl.module_argv("platform"), timeout_s=60)
    assert run.returncode == 0 and run.stdout.strip()
    # Its own peak, not the parent's carried over exec: a bare interpreter is a few MB to a few tens.
    assert run.peak_rss_mb is not None and 1 < run.peak_rss_mb < 100
    assert bl.PEAK_MARK not in run.stderr


# -- leukoedge bench ----------------------------------------------------------------------------------
def test_bench_quick_json_has_every_figure(quick_result: dict) -> None:
    r = quick_result
    assert r["schema"] == "leukoedge-bench/1" and r["quick"] is True
    assert r["runtime"]["name"] and r["runtime"]["version"] and r["threads"] == 1
    assert r["model"]["name"] == "tiny_int8" and r["model"]["float32"].endswith("tiny_float32.json")
    assert r["machine"]["cores"] >= 1 and r["machine"]["python"]
    assert list(r["figures"]) == list(FIGURE_ORDER)
    for key, fig in r["figures"].items():
        if key == "dropped_fraction_30fps":
            assert 0 <= fig["value"] <= 100
        else:
            assert _positive(fig["value"]), (key, fig)
        if "stat" in fig:
            s = fig["stat"]
            assert s["min"] <= s["p25"] <= s["median"] <= s["p75"] <= s["max"] and s["n"] >= 3, key
    for key in ("float32_over_int8", "wrapper_over_raw", "detect_1280_over_640"):
        assert _positive(r["ratios"][key]["median"]), key


def test_bench_pipeline_is_the_daemon_without_tensorflow(quick_result: dict) -> None:
    p = quick_result["pipeline"]
    assert p["kind"].startswith("daemon pipeline") and p["tensorflow_loaded"] is False
    assert p["throughput"]["frames"] >= 100 and p["throughput"]["cells_in_view_per_frame"] > 0
    assert p["live"]["frames_captured"] > 0 and p["live"]["latency_frame_ms"]["p99"] > 0


def test_bench_table_lists_every_figure_and_says_when_float32_is_missing(quick_result: dict) -> None:
    table = format_table(quick_result)
    for fig in quick_result["figures"].values():
        assert fig["label"] in table
    assert "float32 / int8" in table
    no_f32 = json.loads(json.dumps(quick_result))
    no_f32["figures"]["invoke_float32_ms"] = {
        "label": "raw invoke per crop, float32", "unit": "ms", "value": None, "note": NO_FLOAT32,
    }  # fmt: skip
    assert NO_FLOAT32 in format_table(no_f32)


def test_bench_with_a_missing_model_is_a_clean_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["bench", "--quick", "--model", str(tmp_path / "nothing.json")])
    assert result.exit_code != 0
    assert "nothing.json" in str(result.exception) + result.output


def test_pipeline_loop_fallback_times_the_stages(bundles: Path) -> None:
    from leukoedge.bench.pipeline import PipelineSpec, loop_fps

    result = loop_fps(PipelineSpec(model=str(bundles / "tiny_int8.json"), frames=12, warmup=2, blocks=2))
    assert result["frames"] == 12 and _positive(result["fps"]["median"]) and result["fps"]["n"] == 2


def test_pipeline_loop_makes_the_daemons_whole_cut_decisions_and_crops(bundles: Path, tmp_path: Path) -> None:
    """The benchmark loop times the pipeline that counts: same detections, whole/cut flags and crops."""
    import numpy as np
    from support.daemon import daemon_config

    from leukoedge.bench.pipeline import PipelineSpec, loop_analyzer, loop_frames
    from leukoedge.daemon.pipeline.frames import FrameProcessor
    from leukoedge.daemon.types import Frame

    model = bundles / "tiny_int8.json"
    bundle = load_bundle(model)
    processor = FrameProcessor(daemon_config(tmp_path, model), bundle, lambda cell, crop: None)
    analyzer = loop_analyzer(bundle.contract)
    decisions = {True: 0, False: 0}
    compared = 0
    for i, rgb in enumerate(loop_frames(PipelineSpec(frames=60, cells_per_field=3.0))):
        detections, crops = analyzer.analyze(rgb)
        loop = {d.bbox: d.whole for d in detections}
        loop_crops = dict(zip([d.bbox for d in detections if d.whole], crops, strict=True))
        processor.process(Frame(i, float(i), rgb))
        assert processor.latest is not None
        for track, det in processor.latest[1]:
            assert loop[det.bbox] is det.whole is not None
            decisions[bool(det.whole)] += 1
            if track.last_classified == i:
                assert track.crop is not None and np.array_equal(track.crop, loop_crops[det.bbox])
                compared += 1
    assert decisions[True] > 0 and decisions[False] > 0 and compared > 0, (decisions, compared)


# -- the benchmark scripts ------------------------------------------------------------------------------
def _script(name: str, *args: str, timeout: float = 120) -> dict:
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / name), "--quick", "--json", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def test_bench_pipeline_script_quick(bundles: Path) -> None:
    r = _script("bench_pipeline.py", "--model", str(bundles / "tiny_int8.json"))
    figures = r["figures"]
    assert _positive(figures["fps"]["value"]) and figures["fps"]["result"] in ("PASS", "MISS")
    assert _positive(figures["peak_rss_mb"]["value"]) and figures["peak_rss_mb"]["result"] in ("PASS", "MISS")
    for key in (
        "process_ms",
        "process_cpu_ms",
        "fps_cpu_bound",
        "latency_frame_p50_ms",
        "latency_frame_p99_ms",
    ):
        assert _positive(figures[key]["value"]), key
    assert 0 <= figures["dropped_fraction"]["value"] <= 100
    assert r["tensorflow_loaded"] is False


@pytest.mark.tf
@pytest.mark.slow
def test_bench_vs_keras_script_quick(bundles: Path, tmp_path: Path) -> None:
    from leukoedge.synth import write_cell_dataset

    write_cell_dataset(tmp_path / "cells", n_per_kind=4, size=128, fmt="jpg")
    r = _script(
        "bench_vs_keras.py", "--bundle", str(bundles / "tiny_int8.json"), "--images", str(tmp_path / "cells"),
        timeout=240,
    )  # fmt: skip
    figures = r["figures"]
    expected = (
        "tf_import_s", "keras_process_s", "keras_peak_rss_mb", "keras_predict_ms", "keras_call_ms",
        "floor_ms", "wrapper_ms", "wrapper_over_floor", "dir_images_per_s", "dir_cpu_ms_per_image",
        "dir_images_per_s_free", "cold_start_s", "classify_peak_rss_mb",
    )  # fmt: skip
    assert list(figures) == list(expected)
    for key in expected:
        assert _positive(figures[key]["value"]), key
    for key in ("wrapper_over_floor", "dir_images_per_s", "cold_start_s", "classify_peak_rss_mb"):
        assert figures[key]["result"] in ("PASS", "MISS"), key
    assert _positive(r["ratios"]["predict_over_wrapper"]["median"])
    assert r["bundle"]["origin"] == "given"


def test_compare_checkouts_script_runs_both_sides_alike() -> None:
    # the same interpreter on both sides: every round must count the same cells on the same frames
    argv = [sys.executable, str(BENCHMARKS / "compare_checkouts.py"), sys.executable, sys.executable]
    proc = subprocess.run(
        [*argv, "--rounds", "1", "--frames", "20", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    old, new = result["rounds"]["old"][0], result["rounds"]["new"][0]
    assert old["counted"] == new["counted"]
    assert old["frame_cpu_ms"] > 0 and new["frame_cpu_ms"] > 0
    assert result["summary"]["wrapper_over_invoke"]["old"] > 0
