"""Per-layer quantization error with TensorFlow's QuantizationDebugger.

For each quantized tensor the debugger compares the int8 result with the float one on the same
input. ``rmse / scale`` says how many quantization steps the error is: uniform rounding alone
gives 1/sqrt(12) ~ 0.29; well above that (> 0.7) means a layer loses more than rounding and is
worth keeping in float. A selectively quantized variant keeps such layers in float to show what
that would buy.
"""

from __future__ import annotations

import io
import logging
import math
from typing import Any

from leukoedge.quantize.representative import CalibrationSet

logger = logging.getLogger(__name__)

#: rmse/scale of pure rounding error: 1/sqrt(12).
IDEAL_RMSE_SCALE = 1.0 / math.sqrt(12.0)
#: Layers above this rmse/scale are flagged.
SUSPECT_RMSE_SCALE = 0.7


def _debugger(model: Any, calibration: CalibrationSet, denylisted: list[str] | None = None) -> Any:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = calibration.generator()
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=denylisted or None)
    return tf.lite.experimental.QuantizationDebugger(
        converter=converter, debug_dataset=calibration.generator(), debug_options=options
    )


def _short(name: str) -> str:
    """A readable layer name from a TFLite tensor name (the Keras layer of its first part)."""
    first = name.split(";")[0]
    parts = first.split("/")
    return parts[1] if len(parts) > 2 else f"model output ({first})"


def layer_statistics(model: Any, calibration: CalibrationSet) -> list[dict[str, Any]]:
    """One row per quantized tensor: op, tensor name, scale, rmse, rmse/scale, max |error|, flagged."""
    debugger = _debugger(model, calibration)
    debugger.run()
    buf = io.StringIO()
    debugger.layer_statistics_dump(buf)
    rows = []
    lines = buf.getvalue().strip().splitlines()
    header = lines[0].split(",")
    for line in lines[1:]:
        values = line.split(",", len(header) - 1)
        rec = dict(zip(header, values, strict=True))
        scale = float(rec["scale"])
        rmse = math.sqrt(max(float(rec["mean_squared_error"]), 0.0))
        ratio = rmse / scale if scale > 0 else float("nan")
        rows.append(
            {
                "op": rec["op_name"],
                "layer": _short(rec["tensor_name"]),
                "tensor_name": rec["tensor_name"],
                "scale": scale,
                "zero_point": int(float(rec["zero_point"])),
                "rmse": rmse,
                "rmse_over_scale": ratio,
                "max_abs_error": float(rec["max_abs_error"]),
                "flagged": bool(ratio > SUSPECT_RMSE_SCALE),
            }
        )
    return rows


def selective_variant(model: Any, calibration: CalibrationSet, flagged: list[str]) -> bytes:
    """int8 model with the flagged tensors' ops left in float (float input and output)."""
    debugger = _debugger(model, calibration, denylisted=flagged)
    return bytes(debugger.get_nondebug_quantized_model())


def debug_summary(model: Any, calibration: CalibrationSet) -> dict[str, Any]:
    """Layer statistics plus the flagged layers; a failing debugger is reported, not fatal."""
    try:
        rows = layer_statistics(model, calibration)
    except Exception as e:  # the debugger is experimental; the report goes on without it
        logger.warning("quantization debugger failed: %s: %s", type(e).__name__, e)
        return {"available": False, "error": f"{type(e).__name__}: {e}", "layers": [], "flagged": []}
    return {
        "available": True,
        "ideal_rmse_over_scale": IDEAL_RMSE_SCALE,
        "suspect_above": SUSPECT_RMSE_SCALE,
        "layers": rows,
        "flagged": [r["tensor_name"] for r in rows if r["flagged"]],
    }
