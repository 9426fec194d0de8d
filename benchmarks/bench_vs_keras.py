"""leukoedge against the Keras baseline it replaces, and against the bare interpreter.

The design leukoedge grew from classified each image with Keras ``model.predict`` in a process
that imports TensorFlow. This script measures, in one run on this machine:

- the baseline: ``import tensorflow`` and a whole classify-one-image process (fresh processes),
  ``model.predict`` and a direct ``model(x)`` call per image;
- the floor: one bare TFLite interpreter call (set_tensor, invoke, get_tensor) on the int8 model;
- leukoedge: one crop through ``CellClassifier.predict_proba`` (target <= 1.2x the floor); a folder
  of single-cell JPEGs end to end through ``leukoedge classify``'s own code path, decoding
  included, with every core (target >= 1,000 images/s); the cold start of ``leukoedge classify
  one.jpg`` (target <= 0.5 s) and its peak memory on the folder (target <= 120 MB).

Per-image figures are measured in interleaved rounds (Keras predict, Keras call, floor, wrapper,
then again), so load changes hit all four alike. Needs TensorFlow (the ``[train]`` extra).

    python benchmarks/bench_vs_keras.py [--keras-model model.keras] [--bundle BUNDLE]
        [--images DIR] [--quick] [--json] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import Target, emit, find_images, row, with_load

from leukoedge.bench import timing as bl
from leukoedge.errors import BundleError

HERE = Path(__file__).resolve().parent
PLANS = {
    "quick": {"rounds": 5, "block_s": 0.02, "tf_runs": 1, "cold_runs": 3, "dir_limit": 400, "dir_passes": 2},
    "full": {"rounds": 15, "block_s": 0.05, "tf_runs": 3, "cold_runs": 11, "dir_limit": 0, "dir_passes": 3},
}
TARGETS = {
    "wrapper_over_floor": Target("<=", 1.2),
    "dir_images_per_s": Target(">=", 1000.0),
    "cold_start_s": Target("<=", 0.5),
    "classify_peak_rss_mb": Target("<=", 120.0),
}


def get_bundle(path: str | None, keras_model: Any, workdir: Path) -> tuple[Any, str]:
    """The int8 bundle: given, else the bundled model, else this Keras model converted here."""
    from leukoedge.inference.bundle import load_bundle

    if path:
        return load_bundle(path), "given"
    try:
        return load_bundle(None), "bundled model"
    except BundleError:
        pass
    from leukoedge.contract import InputContract
    from leukoedge.inference.bundle import write_bundle
    from leukoedge.quantize.convert import convert_int8
    from leukoedge.quantize.representative import CalibrationSet

    # Calibration pixels only set the int8 ranges; they change no timing.
    x = np.random.default_rng(0).integers(0, 256, (32, 64, 64, 3), dtype=np.uint8)
    x[0, 0, 0, 0] = 255
    calibration = CalibrationSet(x, [f"random_{i}" for i in range(len(x))], ["malignant"] * len(x), 0)
    manifest = {
        "model": {"name": "keras_int8", "variant": "int8", "version": "benchmark"},
        "input_contract": InputContract().to_dict(),
        "input": {"dtype": "uint8", "shape": [1, 64, 64, 3]},
        "output": {"dtype": "uint8", "shape": [1, 1]},
    }
    bundle = write_bundle(workdir, "keras_int8", convert_int8(keras_model, calibration), manifest)
    return bundle, "converted from the Keras model"


def list_images(folder: Path | None, limit: int, workdir: Path) -> tuple[list[str], str]:
    """Image paths to classify: the folder's (evenly thinned to ``limit``), else synthetic cells."""
    from leukoedge.inference.batch import expand_inputs

    if folder is None:
        from leukoedge.synth import write_cell_dataset

        write_cell_dataset(workdir / "cells", n_per_kind=max(1, (limit or 400) // 4), fmt="jpg")
        folder, what = workdir / "cells", "synthetic 400x400 JPEGs (aml-lmu not found)"
    else:
        what = str(folder)
    paths = [item.path for item in expand_inputs([folder])]
    if limit and len(paths) > limit:
        paths = [paths[i] for i in np.linspace(0, len(paths) - 1, limit).astype(int)]
    return paths, what


def per_image(keras_model: Any, bundle: Any, crop: np.ndarray, threads: int, plan: dict) -> dict[str, list]:
    """Keras predict, Keras call, interpreter floor and wrapper on one image, in interleaved rounds."""
    from leukoedge.inference.classifier import CellClassifier, ClassifierOptions
    from leukoedge.inference.runtime import get_runtime

    x = crop[None].astype(np.float32)
    classifier = CellClassifier(bundle, ClassifierOptions(num_threads=threads))
    samplers = {
        "keras_predict": bl.block_sampler(lambda: keras_model.predict(x, verbose=0), plan["block_s"]),
        "keras_call": bl.block_sampler(lambda: keras_model(x, training=False), plan["block_s"]),
        "floor": bl.block_sampler(bl.raw_invoke(get_runtime(), bundle, crop, threads), plan["block_s"]),
        "wrapper": bl.block_sampler(lambda: classifier.predict_proba(crop), plan["block_s"]),
    }
    return bl.interleave(samplers, plan["rounds"])


def folder_rate(bundle: Any, paths: list[str], threads: int, passes: int) -> tuple[bl.Stat, bl.Stat]:
    """Images per second through ``leukoedge classify``'s code path (after one warm-up pass).

    Also the process's CPU time per image (all threads): what an image costs whatever else runs,
    so ``cores / cost`` bounds the rate this machine would reach with every core free.
    """
    from leukoedge.inference.batch import FileClassifier, InputItem
    from leukoedge.inference.classifier import CellClassifier, ClassifierOptions

    runner = FileClassifier(CellClassifier(bundle, ClassifierOptions(num_threads=threads)))
    items = [InputItem(p) for p in paths]
    rates, cpu = [], []
    for i in range(passes + 1):
        start, cpu_start = time.perf_counter(), time.process_time()
        ok = sum(1 for record in runner.run(items) if record["ok"])
        if i:
            rates.append(ok / (time.perf_counter() - start))
            cpu.append((time.process_time() - cpu_start) / max(ok, 1))
    return bl.Stat.of(rates), bl.Stat.of(cpu)


def baseline_processes(image: str, keras_path: str | None, runs: int) -> tuple[bl.Stat, bl.Stat, bl.Stat]:
    """(import tensorflow s, whole process s, peak MB) of fresh Keras classify-one-image processes."""
    extra = ["--keras-model", keras_path] if keras_path else []
    imports, walls, peaks = [], [], []
    for _ in range(runs):
        run = bl.run_child(bl.module_argv(HERE / "keras_baseline.py", image, *extra), timeout_s=300)
        if run.returncode != 0:
            raise SystemExit(f"the Keras baseline process failed:\n{run.stderr[-1500:]}")
        imports.append(float(json.loads(run.stdout.strip().splitlines()[-1])["import_s"]))
        walls.append(run.wall_s)
        peaks.append(run.peak_rss_mb or 0.0)
    return bl.Stat.of(imports), bl.Stat.of(walls), bl.Stat.of(peaks)


def run(args: argparse.Namespace) -> dict[str, Any]:
    plan = PLANS["quick" if args.quick else "full"]
    from leukoedge.vision.images import load_cell

    with tempfile.TemporaryDirectory(prefix="leukoedge-bench-") as tmp:
        workdir = Path(tmp)
        paths, what = list_images(find_images(args.images), plan["dir_limit"], workdir)
        tf_import, tf_process, tf_peak = baseline_processes(paths[0], args.keras_model, plan["tf_runs"])
        sys.path.insert(0, str(HERE))
        from keras_baseline import load_model

        keras_model = load_model(args.keras_model)
        bundle, bundle_origin = get_bundle(args.bundle, keras_model, workdir)
        s = per_image(keras_model, bundle, load_cell(paths[0]), args.threads, plan)
        rate, cpu = folder_rate(bundle, paths, args.threads, plan["dir_passes"])
        cold = bl.cold_starts(bundle, paths[0], plan["cold_runs"], args.threads)
        folder_run = bl.run_child(bl.classify_argv(bundle, paths, args.threads), timeout_s=600)
    baseline = (tf_import, tf_process, tf_peak)
    return report(s, (rate, cpu), cold, folder_run, baseline, len(paths), what, bundle, bundle_origin, args)


def srow(label: str, unit: str, stat: bl.Stat, target: Target | None = None, note: str = "") -> dict:
    return row(label, unit, stat.median, stat, target, note)


def report(
    s: dict[str, list[float]],
    rates: tuple[bl.Stat, bl.Stat],
    cold: list[bl.ChildRun],
    folder_run: bl.ChildRun,
    baseline: tuple[bl.Stat, bl.Stat, bl.Stat],
    n_images: int,
    what: str,
    bundle: Any,
    origin: str,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """The result: figures with targets, ratios against Keras, and what was measured with what."""
    tf_import, tf_process, tf_peak = baseline
    rate, cpu = rates
    cores = bl.machine_info()["cores"] or 1
    ms = {k: bl.Stat.of(v).scaled(1e3) for k, v in s.items()}
    floor_ratio = bl.ratio(s["wrapper"], s["floor"])
    predict_ratio = bl.ratio(s["keras_predict"], s["wrapper"])
    cold_s = bl.Stat.of([r.wall_s for r in cold])
    folder_peak = folder_run.peak_rss_mb
    keras_rate = 1000.0 / ms["keras_predict"].median
    t = TARGETS
    figures = {
        "tf_import_s": srow("import tensorflow", "s", tf_import, note="fresh process"),
        "keras_process_s": srow(
            "Keras: process classifying one image", "s", tf_process, note="import, build/load, predict"
        ),
        "keras_peak_rss_mb": srow("Keras: peak RSS of that process", "MB", tf_peak),
        "keras_predict_ms": srow("Keras model.predict per image", "ms", ms["keras_predict"]),
        "keras_call_ms": srow("Keras model(x) per image", "ms", ms["keras_call"]),
        "floor_ms": srow("TFLite raw invoke (floor)", "ms", ms["floor"], note=bundle.variant),
        "wrapper_ms": srow("classify per crop (wrapper)", "ms", ms["wrapper"]),
        "wrapper_over_floor": srow("wrapper / floor", "x", floor_ratio, t["wrapper_over_floor"]),
        "dir_images_per_s": srow(
            f"folder of {n_images} JPEGs, end to end", "img/s", rate, t["dir_images_per_s"],
            note=f"decoding included, {cores} cores",
        ),
        "dir_cpu_ms_per_image": srow(
            "  CPU time per image (all threads)", "ms", cpu.scaled(1e3), note="independent of other load"
        ),
        "dir_images_per_s_free": srow(
            f"  = rate with {cores} free cores, at most", "img/s", cpu.inverted(cores),
            note="cores / CPU time per image",
        ),
        "cold_start_s": srow("cold start: classify one.jpg", "s", cold_s, t["cold_start_s"]),
        "classify_peak_rss_mb": row(
            f"peak RSS: classify the {n_images} JPEGs", "MB", folder_peak, None, t["classify_peak_rss_mb"]
        ),
    }  # fmt: skip
    ratios = {
        "predict_over_wrapper": predict_ratio.to_dict(),
        "call_over_wrapper": bl.ratio(s["keras_call"], s["wrapper"]).to_dict(),
        "folder_rate_over_keras_predict": rate.median / keras_rate,
        "keras_process_over_cold_start": tf_process.median / cold_s.median,
        "keras_peak_over_classify_peak": tf_peak.median / folder_peak if folder_peak else None,
    }
    from leukoedge.inference.runtime import get_runtime

    rt = get_runtime()
    return {
        "schema": "leukoedge-bench-vs-keras/1",
        "quick": args.quick,
        "machine": bl.machine_info(),
        "runtime": {"name": rt.name, "version": rt.version},
        "threads": args.threads,
        "bundle": {"name": bundle.name, "path": str(bundle.manifest_path), "origin": origin},
        "keras_model": args.keras_model or "untrained LeukoNet (build_leukonet)",
        "images": what,
        "figures": figures,
        "ratios": ratios,
    }


def ratio_lines(result: dict[str, Any]) -> list[str]:
    r = result["ratios"]
    peak = r["keras_peak_over_classify_peak"]
    return [
        "  ratios against the Keras baseline (same run):",
        f"    per image: model.predict / wrapper {r['predict_over_wrapper']['median']:.0f}x, "
        f"model(x) / wrapper {r['call_over_wrapper']['median']:.0f}x",
        f"    folder throughput / (1 / model.predict) {r['folder_rate_over_keras_predict']:.0f}x",
        f"    Keras one-image process / leukoedge cold start {r['keras_process_over_cold_start']:.0f}x",
        f"    Keras process peak RSS / leukoedge folder peak RSS {peak:.1f}x" if peak else "",
        f"  runtime {result['runtime']['name']} {result['runtime']['version']}, "
        f"{result['threads']} thread(s); bundle {result['bundle']['name']} ({result['bundle']['origin']})",
        f"  Keras: {result['keras_model']}",
        f"  images: {result['images']}",
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--keras-model", help="a trained model.keras (default: an untrained LeukoNet)")
    parser.add_argument(
        "--bundle", help="int8 bundle (default: the bundled model, else the Keras model converted)"
    )
    parser.add_argument("--images", help="folder of single-cell images (default: the shared aml-lmu set)")
    parser.add_argument("--quick", action="store_true", help="fewer rounds and at most 400 images")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--threads", type=int, default=1, help="interpreter threads (default 1)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    result = with_load(run, args)
    emit(result, args.json, "leukoedge vs Keras" + (" (quick)" if args.quick else ""), ratio_lines(result))


if __name__ == "__main__":
    main()
