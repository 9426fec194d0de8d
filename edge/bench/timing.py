"""Measurements behind ``leukoedge bench`` and the scripts in ``benchmarks/``.

A single timing on a shared, throttling or busy machine says little, so every figure here is the
median of repeated samples with its spread (quartiles and range). Variants that are compared (int8
against float32, the wrapper against the bare interpreter, two frame sizes) are measured in
interleaved rounds, A B A B ..., so a change of load during the run hits both sides alike, and
their ratio is taken round by round. Commands are timed as child processes, whose peak resident
memory the kernel reports when they exit. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import io
import logging
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from leukoedge.errors import BundleError, LeukoEdgeError
from leukoedge.inference.bundle import ModelBundle, load_bundle
from leukoedge.inference.classifier import TensorQuant, quantize_input
from leukoedge.inference.runtime import Runtime

logger = logging.getLogger(__name__)

Sampler = Callable[[], float]


# -- statistics ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Stat:
    """Median of repeated samples with quartiles and range: a figure and how far to trust it."""

    median: float
    p25: float
    p75: float
    min: float
    max: float
    n: int

    @classmethod
    def of(cls, samples: Sequence[float]) -> Stat:
        if not len(samples):
            raise ValueError("no samples")
        a = np.asarray(samples, dtype=np.float64)
        p25, p50, p75 = np.percentile(a, [25, 50, 75])
        return cls(float(p50), float(p25), float(p75), float(a.min()), float(a.max()), len(a))

    def scaled(self, factor: float) -> Stat:
        """The same figure in other units (seconds -> milliseconds: 1000)."""
        m, p25, p75, lo, hi = (v * factor for v in (self.median, self.p25, self.p75, self.min, self.max))
        return Stat(m, p25, p75, lo, hi, self.n)

    def inverted(self, factor: float = 1.0) -> Stat:
        """``factor / x`` of each value (seconds per item -> items per second); quartiles swap."""
        m, p25, p75, lo, hi = (
            factor / v if v > 0 else float("inf")
            for v in (self.median, self.p75, self.p25, self.max, self.min)
        )
        return Stat(m, p25, p75, lo, hi, self.n)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def percentiles(samples: Sequence[float], qs: Sequence[float] = (50, 99)) -> dict[str, float | None]:
    """``{"p50": ..., "p99": ...}`` of the samples (None each when there are none)."""
    if not len(samples):
        return {f"p{q:g}": None for q in qs}
    values = np.percentile(np.asarray(samples, dtype=np.float64), list(qs))
    return {f"p{q:g}": float(v) for q, v in zip(qs, values, strict=True)}


# -- timing ---------------------------------------------------------------------------------------
def block_sampler(fn: Callable[[], Any], target_s: float, items_per_call: int = 1) -> Sampler:
    """A sampler timing enough calls of ``fn`` to last about ``target_s``; it returns seconds per item.

    Timing a block rather than one call keeps the clock's resolution and the loop's own cost out
    of sub-millisecond figures. ``fn`` runs twice first (warm caches, lazy allocation).
    """
    fn()
    start = time.perf_counter()
    fn()
    once = time.perf_counter() - start
    inner = max(1, int(target_s / max(once, 1e-7)))

    def sample() -> float:
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        return (time.perf_counter() - t0) / (inner * items_per_call)

    return sample


def interleave(samplers: Mapping[str, Sampler], rounds: int) -> dict[str, list[float]]:
    """Run each sampler once per round, in turn (A B C A B C ...); return every sample by name."""
    samples: dict[str, list[float]] = {name: [] for name in samplers}
    for _ in range(max(1, rounds)):
        for name, sampler in samplers.items():
            samples[name].append(sampler())
    return samples


def ratio(numerator: Sequence[float], denominator: Sequence[float]) -> Stat:
    """Round-by-round ratio of two interleaved variants."""
    return Stat.of([a / b for a, b in zip(numerator, denominator, strict=True)])


# -- the model ------------------------------------------------------------------------------------
def float32_variant(bundle: ModelBundle) -> ModelBundle | None:
    """A ``*_float32.json`` bundle beside ``bundle``, to compare against; None when there is none."""
    if bundle.variant == "float32":
        return None
    for manifest in sorted(bundle.manifest_path.parent.glob("*_float32.json")):
        try:
            return load_bundle(manifest)
        except BundleError as e:
            logger.warning("ignoring %s: %s", manifest, e)
    return None


def raw_invoke(
    runtime: Runtime, bundle: ModelBundle, crop: np.ndarray, threads: int | None
) -> Callable[[], Any]:
    """One bare interpreter call on a ready input: set_tensor, invoke, get_tensor (the floor)."""
    interpreter = runtime.make_interpreter(str(bundle.tflite_path), threads, batch=1)
    inp = interpreter.get_input_details()[0]
    out_index = interpreter.get_output_details()[0]["index"]
    tensor = quantize_input(TensorQuant.from_details(inp), crop[None])

    def call() -> Any:
        interpreter.set_tensor(inp["index"], tensor)
        interpreter.invoke()
        return interpreter.get_tensor(out_index)

    return call


def sample_crops(n: int, seed: int = 0) -> np.ndarray:
    """``n`` decoded model inputs: synthetic cells encoded as JPEG and read back by ``load_cell``.

    The crops go through the same decode and resize as ``leukoedge classify``; only the pixels are
    synthetic, which does not change a timing.
    """
    from PIL import Image

    from leukoedge.synth import KINDS, render_cell
    from leukoedge.vision.images import load_cell

    crops = []
    for i in range(n):
        rgb, _ = render_cell(KINDS[i % len(KINDS)], seed=seed + i, size=128)
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format="JPEG", quality=92)
        crops.append(load_cell(buf.getvalue()))
    return np.stack(crops)


# -- detection ------------------------------------------------------------------------------------
def detection_call(width: int, height: int, seed: int = 1) -> Callable[[], Any]:
    """Detection on one synthetic field of ``width`` x ``height`` showing the same area (~3 cells).

    The field covers the area of a 640x480 frame at 10 px/um whatever its size, so a bigger frame
    is the same view at a higher resolution, as a camera's main stream is. The detector is first
    run past its scale calibration, so what is timed is the steady state of a running daemon.
    """
    from leukoedge.synth import FIELD_PX_PER_UM, render_field
    from leukoedge.vision.detect import CellDetector

    frame, _ = render_field(width, height, seed=seed, n_cells=3, px_per_um=FIELD_PX_PER_UM * width / 640)
    detector = CellDetector()
    for _ in range(detector.config.calibration_window):
        detector.detect(frame)
    return lambda: detector.detect(frame)


# -- child processes ------------------------------------------------------------------------------
#: Marker of the line a child writes to stderr with its peak resident memory, in kB.
PEAK_MARK = "leukoedge-bench-peak-rss-kb="

# A child's ``ru_maxrss`` (from wait4 or RUSAGE_CHILDREN) starts at its parent's resident size,
# because Linux carries the pre-exec high-water mark over ``exec``; a child started from a 140 MB
# benchmark would "peak" at 140 MB. So the child reports its own VmHWM, which counts only memory
# mapped after ``exec``, from an exit hook. The module runs through runpy, as ``python -m`` does.
_PEAK_WRAPPER = f"""
import atexit, runpy, sys
def _peak():
    try:
        with open("/proc/self/status") as f:
            kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration, ValueError):
        try:
            import resource
        except ImportError:
            return
        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // (1024 if sys.platform == "darwin" else 1)
    sys.stderr.write("\\n{PEAK_MARK}%d\\n" % kb)
    sys.stderr.flush()
atexit.register(_peak)
target = sys.argv[1]
sys.argv = [target, *sys.argv[2:]]
if target.endswith(".py"):
    runpy.run_path(target, run_name="__main__")
else:
    runpy.run_module(target, run_name="__main__", alter_sys=True)
"""


def module_argv(module: str | os.PathLike, *args: str | os.PathLike) -> list[str]:
    """``python -m MODULE ARGS`` (or ``python SCRIPT.py ARGS``) as a child that reports its peak memory.

    See :func:`run_child`.
    """
    return [sys.executable, "-c", _PEAK_WRAPPER, str(module), *map(str, args)]


@dataclass(frozen=True)
class ChildRun:
    """A finished child process: exit status, wall time, peak resident memory and output."""

    returncode: int
    wall_s: float
    peak_rss_mb: float | None
    stdout: str
    stderr: str


def run_child(argv: Sequence[str], timeout_s: float = 300.0) -> ChildRun:
    """Run a command to its end; the wall time includes process start, imports and exit.

    ``peak_rss_mb`` is what a child started by :func:`module_argv` reports, else None.
    """
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            list(argv), stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired as e:
        raise LeukoEdgeError(f"{' '.join(map(str, argv[-4:]))}: did not finish within {timeout_s:g} s") from e
    wall = time.perf_counter() - start
    stderr = proc.stderr.decode("utf-8", "replace")
    peak = None
    kept = []
    for line in stderr.splitlines():
        if line.startswith(PEAK_MARK):
            peak = int(line[len(PEAK_MARK) :]) / 1024
        else:
            kept.append(line)
    return ChildRun(proc.returncode, wall, peak, proc.stdout.decode("utf-8", "replace"), "\n".join(kept))


def write_sample_cell(folder: str | os.PathLike, name: str = "one.jpg", seed: int = 0) -> Path:
    """A 400x400 synthetic single-cell JPEG, like an AML-LMU image, to classify."""
    from leukoedge.synth import render_cell, save_image

    rgb, _ = render_cell("blast", seed=seed)
    return save_image(rgb, Path(folder) / name, "jpg")


def classify_argv(model: ModelBundle, paths: Sequence[str | os.PathLike], threads: int = 1) -> list[str]:
    """``python -m leukoedge classify PATH... --format json`` with this interpreter and bundle."""
    return module_argv(
        "leukoedge", "classify", *paths, "--format", "json", "-q",
        "--model", str(model.manifest_path), "--threads", str(threads),
    )  # fmt: skip


def cold_starts(model: ModelBundle, image: str | os.PathLike, runs: int, threads: int = 1) -> list[ChildRun]:
    """``runs`` fresh ``leukoedge classify IMAGE`` processes; each must classify the image."""
    results = []
    for _ in range(max(1, runs)):
        run = run_child(classify_argv(model, [image], threads), timeout_s=120)
        if run.returncode != 0 or '"ok": true' not in run.stdout:
            raise LeukoEdgeError(f"leukoedge classify failed (status {run.returncode}): {run.stderr[-500:]}")
        results.append(run)
    return results


# -- the machine ----------------------------------------------------------------------------------
def cpu_model() -> str:
    """The processor's name, as ``lscpu`` shows it (from /proc/cpuinfo where there is one)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> float | None:
    """The 1-minute load average: how much else was running while measuring."""
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return None


def machine_info() -> dict[str, Any]:
    return {
        "cpu": cpu_model(),
        "arch": platform.machine(),
        "cores": os.cpu_count(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }
