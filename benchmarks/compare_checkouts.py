"""Two checkouts of leukoedge side by side: per-frame pipeline CPU and per-crop wrapper overhead.

``python benchmarks/compare_checkouts.py OLD/.venv/bin/python NEW/.venv/bin/python [--rounds 5]``

Each round runs one child process per interpreter, alternately (A B A B ...), so a change of load hits
both alike. A child measures, with the bundled model on one thread:

- the CPU time per frame of the daemon's frame processor (detect, whole-cell test, track, classify,
  count) over a fixed synthetic stage sequence at 640x480 (``time.process_time``, after a warm-up);
- the wrapper's time per crop (``CellClassifier.predict_proba`` on one crop) over the bare
  interpreter's ``invoke`` on the same crop, measured interleaved in the child.

Medians over the rounds are printed with the ratio NEW/OLD. Either checkout's layout is accepted
(the frame processor and the timing helpers moved between versions).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

CHILD = r"""
import json, time
import numpy as np
try:
    from leukoedge.daemon.pipeline.frames import FrameProcessor
except ImportError:
    try:
        from leukoedge.daemon.pipeline.threads import FrameProcessor
    except ImportError:
        from leukoedge.daemon.pipeline import FrameProcessor
try:
    from leukoedge.bench import timing as bl
except ImportError:
    from leukoedge import benchlib as bl
try:
    from leukoedge.inference.bundle import load_bundle
    from leukoedge.inference.classifier import CellClassifier, ClassifierOptions
    from leukoedge.inference.runtime import get_runtime
except ImportError:
    from leukoedge.bundle import load_bundle
    from leukoedge.classifier import CellClassifier, ClassifierOptions
    from leukoedge.runtime import get_runtime
from leukoedge.daemon.config import DaemonConfig
from leukoedge.daemon.types import Frame
from leukoedge.synth import StageSequence

frames = int(__import__("sys").argv[1])
bundle = load_bundle(None)
config = DaemonConfig()
src = config.source
seq = StageSequence(src.width, src.height, seed=7, n_cells=max(1, round(src.cells_per_field * 16)),
                    speed_px_per_frame=src.stage_speed, n_frames=None)
images = [seq.frame(i)[0] for i in range(frames + 30)]
counted = []
proc = FrameProcessor(config, bundle, lambda cell, crop: counted.append(cell))
for i in range(30):
    proc.process(Frame(i, i / 30.0, images[i]))
t0 = time.process_time()
for i in range(30, frames + 30):
    proc.process(Frame(i, i / 30.0, images[i]))
frame_ms = (time.process_time() - t0) * 1000 / frames

clf = CellClassifier(bundle, ClassifierOptions(num_threads=1))
crop = bl.sample_crops(1)
interp = get_runtime(None).make_interpreter(str(bundle.tflite_path), 1, batch=1)
inp = interp.get_input_details()[0]
out_index = interp.get_output_details()[0]["index"]
tensor = crop[:1].astype(np.dtype(inp["dtype"]))  # the bundled model takes raw uint8 pixels (scale 1, zp 0)

def raw():
    interp.set_tensor(inp["index"], tensor)
    interp.invoke()
    return interp.get_tensor(out_index)

samplers = {
    "raw": bl.block_sampler(raw, 0.02),
    "wrap": bl.block_sampler(lambda: clf.predict_proba(crop), 0.02),
}
s = bl.interleave(samplers, 15)
ratio = bl.ratio(s["wrap"], s["raw"]).median
print(json.dumps({"frame_cpu_ms": frame_ms, "wrapper_over_invoke": ratio, "counted": len(counted)}))
"""


def run(python: str, frames: int) -> dict[str, float]:
    out = subprocess.run([python, "-c", CHILD, str(frames)], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{python} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    results: dict[str, list[dict[str, float]]] = {"old": [], "new": []}
    for r in range(args.rounds):
        for side in ("old", "new"):
            results[side].append(run(getattr(args, side), args.frames))
        print(f"round {r + 1}/{args.rounds}: {results['old'][-1]} | {results['new'][-1]}", file=sys.stderr)
    summary = {}
    for key in ("frame_cpu_ms", "wrapper_over_invoke"):
        old = statistics.median(x[key] for x in results["old"])
        new = statistics.median(x[key] for x in results["new"])
        ratios = [n[key] / o[key] for o, n in zip(results["old"], results["new"], strict=True)]
        summary[key] = {"old": old, "new": new, "new_over_old": statistics.median(ratios)}
    summary["counted"] = {s: results[s][0]["counted"] for s in ("old", "new")}
    if args.json:
        print(json.dumps({"rounds": results, "summary": summary}, indent=2))
        return
    for key in ("frame_cpu_ms", "wrapper_over_invoke"):
        s = summary[key]
        print(
            f"{key:22s} old {s['old']:.4f}  new {s['new']:.4f}  "
            f"new/old {s['new_over_old']:.3f} (median of rounds)"
        )
    print(f"cells counted over the run: old {summary['counted']['old']}, new {summary['counted']['new']}")


if __name__ == "__main__":
    main()
