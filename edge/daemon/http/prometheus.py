"""The daemon's figures in the Prometheus text exposition format, version 0.0.4.

Names are what an operator asks about ("are frames being dropped?", "how long does inference
take?"), prefixed ``leukoedge_``; counters end in ``_total``; inference time is a histogram in
seconds. Figures the provider does not report are left out rather than shown as zero.
"""

from __future__ import annotations

import math
from typing import Any

PREFIX = "leukoedge_"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: key in StatusProvider.metrics() -> (type, help)
METRICS: dict[str, tuple[str, str]] = {
    "capture_fps": ("gauge", "Frames per second captured from the camera (recent average)."),
    "processed_fps": ("gauge", "Frames per second through detection and classification (recent average)."),
    "frames_captured_total": ("counter", "Frames captured from the camera."),
    "frames_processed_total": ("counter", "Frames that went through detection and classification."),
    "frames_dropped_total": ("counter", "Frames dropped because processing was still busy."),
    "cells_counted_total": ("counter", "White cells counted, each physical cell once."),
    "blasts_counted_total": ("counter", "Counted cells labelled as suspected blasts."),
    "cells_counted_by_type_total": ("counter", "White cells counted, by the cell type the model gave."),
    "camera_reconnects_total": ("counter", "Times the camera was reopened after a failure."),
    "crops_saved_total": ("counter", "Cell crops saved to disk."),
    "disk_budget_used_ratio": ("gauge", "Share of the crop disk budget in use (1 = full)."),
    "store_errors_total": ("counter", "Failed writes to the session store (each retry counts)."),
    "store_backlog": ("gauge", "Writes (counted cells, frame figures) waiting for the session store."),
    "inference_seconds": ("histogram", "Time to detect and classify the cells of one frame, in seconds."),
}

#: Metrics with one series per label value: key -> label name. Their value is {label value: figure}.
LABELLED: dict[str, str] = {"cells_counted_by_type_total": "type"}


def label_value(value: str) -> str:
    """A label value escaped as the exposition format wants (backslash, double quote, newline)."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def format_value(value: float) -> str:
    """A sample value as Prometheus writes it (+Inf, -Inf, NaN; integers without a decimal point)."""
    v = float(value)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return str(int(v)) if v.is_integer() and abs(v) < 2**53 else repr(v)


def _histogram_lines(name: str, hist: dict[str, Any]) -> list[str]:
    lines = []
    buckets = hist.get("buckets", [])
    items = buckets.items() if isinstance(buckets, dict) else buckets
    has_inf = False
    for bound, count in items:
        le = format_value(float(bound))
        has_inf = has_inf or le == "+Inf"
        lines.append(f'{name}_bucket{{le="{le}"}} {format_value(count)}')
    if not has_inf:
        lines.append(f'{name}_bucket{{le="+Inf"}} {format_value(hist.get("count", 0))}')
    lines.append(f"{name}_sum {format_value(hist.get('sum', 0.0))}")
    lines.append(f"{name}_count {format_value(hist.get('count', 0))}")
    return lines


def render(metrics: dict[str, Any], healthy: bool | None = None) -> str:
    """The exposition text for ``metrics`` (a StatusProvider.metrics() dict) and the health flag."""
    out: list[str] = []
    if healthy is not None:
        out += [
            f"# HELP {PREFIX}healthy 1 while frames flow, the model is loaded and counts are saved, else 0.",
            f"# TYPE {PREFIX}healthy gauge",
            f"{PREFIX}healthy {int(bool(healthy))}",
        ]
    for key, (kind, help_text) in METRICS.items():
        value = metrics.get(key)
        if value is None:
            continue
        name = PREFIX + key
        out += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        if kind == "histogram":
            out += _histogram_lines(name, value)
        elif key in LABELLED:
            label = LABELLED[key]
            out += [
                f'{name}{{{label}="{label_value(k)}"}} {format_value(v)}' for k, v in sorted(value.items())
            ]
        else:
            out.append(f"{name} {format_value(value)}")
    return "\n".join(out) + "\n"
