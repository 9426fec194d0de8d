"""Keras LeukoNet -> TFLite flatbuffers: full-integer int8, float32 and float16.

The int8 model takes raw uint8 RGB pixels (the Rescaling layer inside the model makes the input
quantization scale 1.0, zero point 0), so the device feeds camera pixels with no float
preprocessing. That is checked on the converted model's own tensor details, never assumed.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from leukoedge.contract import INPUT_CHANNELS, INPUT_SIZE, OUTPUT_SOFTMAX, InputContract
from leukoedge.errors import ModelError
from leukoedge.quantize.representative import CalibrationSet

logger = logging.getLogger(__name__)

VARIANTS = ("int8", "float32", "float16")


@dataclass(frozen=True)
class IOSpec:
    """dtype, shape and quantization of a converted model's input and output tensors."""

    input: dict[str, Any]
    output: dict[str, Any]


def load_keras_model(path: str | os.PathLike, contract: InputContract | None = None) -> Any:
    """Load a Keras model and check it is LeukoNet-shaped for ``contract`` (default: the binary one).

    Every failure is a :class:`ModelError`.
    """
    import keras

    try:
        model = keras.models.load_model(os.fspath(path), compile=False)
    except Exception as e:  # Keras raises ValueError, OSError, zipfile errors, ... on a bad file
        raise ModelError(f"{path}: cannot load this Keras model: {type(e).__name__}: {e}") from e
    check_leukonet_shape(model, str(path), contract)
    return model


def check_leukonet_shape(model: Any, name: str = "model", contract: InputContract | None = None) -> None:
    """One 64x64x3 input and the output ``contract`` names, as the edge expects.

    A binary contract needs one sigmoid unit; a differential one a softmax with one unit per
    class name, in the contract's order. Anything else is refused.
    """
    inputs, outputs = list(model.inputs), list(model.outputs)
    if len(inputs) != 1 or len(outputs) != 1:
        raise ModelError(f"{name}: expected one input and one output, got {len(inputs)} and {len(outputs)}")
    in_shape = tuple(inputs[0].shape)[1:]
    expected = (INPUT_SIZE, INPUT_SIZE, INPUT_CHANNELS)
    if in_shape != expected:
        raise ModelError(f"{name}: input shape {in_shape} is not LeukoNet's {expected} (raw RGB crops)")
    out_shape = tuple(outputs[0].shape)[1:]
    last = model.layers[-1]
    activation = getattr(getattr(last, "activation", None), "__name__", None)
    if contract is not None and contract.output == OUTPUT_SOFTMAX:
        _check_softmax(name, out_shape, activation, last.name, contract)
    else:
        _check_sigmoid(name, out_shape, activation, last.name)
    if not any(type(layer).__name__ == "Rescaling" for layer in model.layers):
        logger.warning("%s: no Rescaling layer: the model must take raw 0-255 pixels as the edge feeds", name)


def _check_sigmoid(name: str, out_shape: tuple, activation: str | None, layer: str) -> None:
    if out_shape != (1,):
        raise ModelError(
            f"{name}: output shape {out_shape} is not one sigmoid probability (1,); a model with one "
            "output per cell type needs a run whose input contract says output 'softmax'"
        )
    if activation != "sigmoid":
        raise ModelError(
            f"{name}: the last layer {layer!r} has activation {activation!r}, not sigmoid; "
            "LeukoNet ends in one sigmoid unit giving p(malignant)"
        )


def _check_softmax(
    name: str, out_shape: tuple, activation: str | None, layer: str, contract: InputContract
) -> None:
    units = len(contract.class_names)
    if out_shape != (units,):
        raise ModelError(
            f"{name}: output shape {out_shape} does not match the input contract's {units} classes "
            f"({', '.join(contract.class_names)}): expected a softmax of shape ({units},)"
        )
    if activation != "softmax":
        raise ModelError(
            f"{name}: the last layer {layer!r} has activation {activation!r}, not softmax; a differential "
            "LeukoNet ends in a softmax giving one probability per cell type"
        )


def _converter(model: Any) -> Any:
    import tensorflow as tf

    return tf.lite.TFLiteConverter.from_keras_model(model)


def _convert(converter: Any, what: str) -> bytes:
    try:
        return bytes(converter.convert())
    except Exception as e:  # the converter raises ConverterError, RuntimeError, ValueError ...
        raise ModelError(f"{what} conversion failed: {type(e).__name__}: {e}") from e


def int8_converter(model: Any, calibration: CalibrationSet) -> Any:
    """The full-integer converter: builtin int8 ops only, uint8 pixels in, uint8 probability out."""
    import tensorflow as tf

    converter = _converter(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = calibration.generator()
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8
    converter.inference_output_type = tf.uint8
    return converter


def convert_int8(model: Any, calibration: CalibrationSet) -> bytes:
    """Full-integer post-training quantization; refuses a result whose input is not raw pixels."""
    tflite = _convert(int8_converter(model, calibration), "int8")
    check_raw_pixel_input(io_spec(tflite))
    return tflite


def convert_float32(model: Any) -> bytes:
    return _convert(_converter(model), "float32")


def convert_float16(model: Any) -> bytes:
    """float16 weights, float32 input and output (the runtime dequantizes the weights)."""
    import tensorflow as tf

    converter = _converter(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_types = [tf.float16]
    return _convert(converter, "float16")


def io_spec(tflite: bytes) -> IOSpec:
    """Input and output tensor details of a flatbuffer, read with the edge's TFLite runtime."""
    from leukoedge.inference.classifier import TensorQuant
    from leukoedge.inference.runtime import get_runtime

    try:
        interpreter = get_runtime().interpreter_class(model_content=tflite)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        raise ModelError(f"the converted model does not load in the TFLite runtime: {e}") from e
    inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
    if len(inputs) != 1 or len(outputs) != 1:
        raise ModelError(
            f"converted model has {len(inputs)} inputs and {len(outputs)} outputs, expected 1 and 1"
        )
    return IOSpec(
        TensorQuant.from_details(inputs[0]).to_dict(), TensorQuant.from_details(outputs[0]).to_dict()
    )


def check_raw_pixel_input(spec: IOSpec) -> None:
    """The int8 model must take uint8 pixels with scale 1.0 and zero point 0, and give a quantized p."""
    inp, out = spec.input, spec.output
    if (
        inp["dtype"] != "uint8"
        or not np.isclose(inp["scale"], 1.0, rtol=0, atol=1e-6)
        or inp["zero_point"] != 0
    ):
        raise ModelError(
            f"the int8 model's input is {inp['dtype']} with scale {inp['scale']} and zero point "
            f"{inp['zero_point']}, not uint8 with scale 1.0 and zero point 0: the device could not feed raw "
            "camera pixels. Is the Rescaling(1/255) layer inside the model, and are the calibration "
            "images raw 0-255 pixels?"
        )
    if out["dtype"] not in ("uint8", "int8") or out["scale"] <= 0:
        raise ModelError(f"the int8 model's output is {out['dtype']} scale {out['scale']}, not a quantized p")


def tool_versions() -> dict[str, str]:
    """Versions of the tools that made a bundle, for its manifest."""
    import platform

    import keras
    import tensorflow as tf

    import leukoedge
    from leukoedge.inference.runtime import get_runtime

    runtime = get_runtime()
    return {
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "leukoedge": leukoedge.__version__,
        "tflite_runtime": f"{runtime.name} {runtime.version}",
    }
