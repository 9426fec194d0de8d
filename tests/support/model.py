"""A tiny int8 model bundle for tests that need a real TFLite model but not a trained one.

``make_test_bundle(out_dir)`` builds a four-filter convolutional network with the contract's input
(64x64x3 raw uint8 RGB, Rescaling inside), converts it to full-integer int8 with uint8 input, and
writes it as a bundle. Only the test process imports TensorFlow; code under test loads the bundle
with the lite runtime. The weights are fixed by a seed, so its outputs are deterministic: it scores
purple-blue cells (high blue, low green) higher, which is enough to give both labels on smear images.
The same weights can also be written with int8 input/output or as float32, to compare variants.
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np

from leukoedge.contract import InputContract

#: The binary LeukoNet bundle shipped before the differential model (manifest schema 2): a real
#: trained binary model, for tests of binary bundles' behaviour.
BINARY_BUNDLE = (
    Path(__file__).resolve().parents[1] / "inference" / "fixtures" / "binary" / "leukonet_int8.json"
)

#: Name of the bundle this helper writes (``NAME.tflite`` + ``NAME.json``).
TEST_BUNDLE_NAME = "tiny_int8"


def _build_keras_model():  # pragma: no cover - exercised through make_test_bundle
    import keras

    keras.utils.set_random_seed(7)
    inputs = keras.Input((64, 64, 3))
    x = keras.layers.Rescaling(1.0 / 255)(inputs)
    x = keras.layers.Conv2D(4, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(1, activation="sigmoid")(x)
    model = keras.Model(inputs, outputs)
    # Fixed, readable weights: filter 0 passes blue, filter 1 passes green; the logit is
    # 12 * (mean blue - mean green) - 0.3, so stained (purple) nuclei push p up.
    conv_w = np.zeros((3, 3, 3, 4), np.float32)
    conv_w[1, 1, 2, 0] = 1.0
    conv_w[1, 1, 1, 1] = 1.0
    conv_w[1, 1, 0, 2] = 1.0
    model.layers[2].set_weights([conv_w, np.zeros(4, np.float32)])
    dense_w = np.array([[12.0], [-12.0], [0.0], [0.0]], np.float32)
    model.layers[4].set_weights([dense_w, np.array([-0.3], np.float32)])
    return model


def _representative():
    rng = np.random.default_rng(0)
    # Per-image channel levels spread the calibrated ranges over every colour the model may see.
    for _ in range(64):
        levels = rng.uniform(0, 255, (1, 1, 1, 3))
        noise = rng.normal(0, 20, (1, 64, 64, 3))
        yield [np.clip(levels + noise, 0, 255).astype(np.float32)]


def _convert(model, variant: str) -> bytes:  # pragma: no cover - exercised through make_test_bundle
    """TFLite flatbuffer of ``model``: "int8" (uint8 in/out), "int8_io" (int8 in/out) or "float32"."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if variant != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = _representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        io_type = tf.int8 if variant == "int8_io" else tf.uint8
        converter.inference_input_type = io_type
        converter.inference_output_type = io_type
    with warnings.catch_warnings():
        # TF warns about "statistics for quantized inputs" although the Rescaling layer makes them exact.
        warnings.filterwarnings("ignore", "Statistics for quantized inputs", UserWarning)
        return converter.convert()


def _to_int8(model) -> bytes:  # pragma: no cover - exercised through make_test_bundle
    return _convert(model, "int8")


#: dtype of the input/output tensors of each variant :func:`make_test_bundle` can write.
VARIANT_DTYPES = {"int8": "uint8", "int8_io": "int8", "float32": "float32"}


def make_test_bundle(out_dir: str | Path, variant: str = "int8") -> Path:
    """Write the tiny bundle into ``out_dir`` (once) and return its manifest path.

    ``variant`` "int8" (the default: uint8 input and output, as shipped models), "int8_io"
    (int8 input and output, to check that quantization is read from the tensors) or "float32"
    (same weights, no quantization). The bundle is named ``tiny_<variant>``.
    """
    from leukoedge.inference.bundle import write_bundle

    if variant not in VARIANT_DTYPES:
        raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANT_DTYPES)}")
    name = TEST_BUNDLE_NAME if variant == "int8" else f"tiny_{variant}"
    out = Path(out_dir)
    manifest_path = out / f"{name}.json"
    if manifest_path.exists():
        return manifest_path
    tflite_bytes = _convert(_build_keras_model(), variant)
    dtype = VARIANT_DTYPES[variant]
    manifest = {
        "model": {"name": name, "variant": variant, "version": "test", "purpose": "tests only (untrained)"},
        "input_contract": InputContract().to_dict(),
        "input": {"dtype": dtype, "shape": [1, 64, 64, 3]},
        "output": {"dtype": dtype, "shape": [1, 1]},
    }
    bundle = write_bundle(out, name, tflite_bytes, manifest)
    return bundle.manifest_path


def make_renamed_bundle(out_dir: str | Path, positive: str = "blast", negative: str = "other") -> Path:
    """The tiny int8 model under a contract whose classes have other names (``positive`` first).

    Nothing downstream of the classifier may know the class names of the shipped bundles; this one
    shows whether counts, exports and crop saving follow the bundle instead.
    """
    from leukoedge.inference.bundle import load_bundle, write_bundle

    out = Path(out_dir)
    manifest_path = out / f"renamed_{positive}.json"
    if manifest_path.exists():
        return manifest_path
    tiny = load_bundle(make_test_bundle(out))
    contract = InputContract(class_names=(positive, negative), positive_class=positive)
    manifest = replace(tiny.manifest, contract=contract).with_model(name=f"renamed_{positive}")
    return write_bundle(out, f"renamed_{positive}", tiny.tflite_path.read_bytes(), manifest).manifest_path


#: The cell types of :func:`make_differential_bundle`, in output order; "blast" is the blast class.
DIFFERENTIAL_TEST_CLASSES = ("blast", "neutrophil", "lymphocyte", "monocyte")


def _build_differential_keras_model():  # pragma: no cover - exercised through make_differential_bundle
    import keras

    keras.utils.set_random_seed(7)
    inputs = keras.Input((64, 64, 3))
    x = keras.layers.Rescaling(1.0 / 255)(inputs)
    x = keras.layers.Conv2D(4, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(len(DIFFERENTIAL_TEST_CLASSES), activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    # The same colour features as the binary model (mean blue, green, red), with weights that spread
    # the synthetic smear's cells over the types: much more blue than green leans to "blast", green
    # to "neutrophil", little red to "lymphocyte", the rest to "monocyte" (logit 0).
    conv_w = np.zeros((3, 3, 3, 4), np.float32)
    conv_w[1, 1, 2, 0] = 1.0
    conv_w[1, 1, 1, 1] = 1.0
    conv_w[1, 1, 0, 2] = 1.0
    model.layers[2].set_weights([conv_w, np.zeros(4, np.float32)])
    dense_w = np.array(
        [[40.0, 0.0, 0.0, 0.0], [-40.0, 40.0, 0.0, 0.0], [0.0, 0.0, -40.0, 0.0], [0.0, 0.0, 0.0, 0.0]],
        np.float32,
    )
    model.layers[4].set_weights([dense_w, np.array([-5.6, -22.8, 26.4, 0.0], np.float32)])
    return model


def make_differential_bundle(out_dir: str | Path, threshold: float = 0.5) -> Path:
    """A tiny int8 softmax bundle of :data:`DIFFERENTIAL_TEST_CLASSES` (once); returns its manifest.

    Converted with TFLite directly (full-integer, uint8 input and output) and written with a
    differential contract: p_blast is the "blast" probability, ``threshold`` its operating point.
    """
    from leukoedge.contract import OUTPUT_SOFTMAX
    from leukoedge.inference.bundle import write_bundle

    name = "tiny_differential"
    out = Path(out_dir)
    manifest_path = out / f"{name}.json"
    if manifest_path.exists():
        return manifest_path
    contract = InputContract(
        class_names=DIFFERENTIAL_TEST_CLASSES, positive_class="blast", threshold=threshold,
        output=OUTPUT_SOFTMAX, blast_classes=("blast",),
    )  # fmt: skip
    units = len(DIFFERENTIAL_TEST_CLASSES)
    manifest = {
        "model": {"name": name, "variant": "int8", "version": "test", "purpose": "tests only (untrained)"},
        "input_contract": contract.to_dict(),
        "input": {"dtype": "uint8", "shape": [1, 64, 64, 3]},
        "output": {"dtype": "uint8", "shape": [1, units]},
    }
    tflite_bytes = _convert(_build_differential_keras_model(), "int8")
    return write_bundle(out, name, tflite_bytes, manifest).manifest_path
