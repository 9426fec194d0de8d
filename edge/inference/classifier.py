"""The inference wrapper: options -> preprocess -> invoke -> postprocess -> result.

Every caller that runs a TFLite model (``leukoedge classify``, the daemon and the quantization
report) goes through :class:`CellClassifier`, so the accuracy a report measures is the accuracy
the device gets. Quantization parameters are read from the interpreter's tensor details, never
guessed from a dtype.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from leukoedge.contract import UNCLASSIFIED, InputContract
from leukoedge.errors import ModelError
from leukoedge.inference.bundle import ModelBundle
from leukoedge.inference.runtime import Runtime, get_runtime

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClassifierOptions:
    """How to run a bundle. ``threshold=None`` uses the bundle's own operating threshold."""

    threshold: float | None = None
    runtime: str | None = None
    num_threads: int | None = 1
    #: Crops per invoke for large inputs; smaller remainders run one by one on a batch-1 interpreter.
    batch_size: int = 32


@dataclass(frozen=True)
class CellResult:
    """One cell's answer: its type, p_blast, the blast decision and every class's probability.

    ``label`` is the most probable cell type of a differential model, or the binary model's
    label; ``suspected_blast`` is ``p_blast >= threshold``, decided here from the bundle's
    contract. ``unclassified`` (label "unclassified") marks a cell that is not a suspected blast and
    whose top type is below the bundle's ``min_confidence``: it is neither called blast nor normal.
    ``p_malignant`` is an alias of ``p_blast`` kept for older readers.
    """

    label: str
    p_blast: float
    threshold: float
    suspected_blast: bool
    probabilities: dict[str, float]
    unclassified: bool = False

    @property
    def p_malignant(self) -> float:
        return self.p_blast

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "suspected_blast": self.suspected_blast,
            "p_blast": round(self.p_blast, 6),
            "p_malignant": round(self.p_blast, 6),
            "probabilities": {k: round(v, 6) for k, v in self.probabilities.items()},
            "unclassified": self.unclassified,
            "threshold": self.threshold,
        }


def decide(contract: InputContract, probabilities: np.ndarray, threshold: float) -> CellResult:
    """A :class:`CellResult` from one cell's class probabilities (the one place a cell is decided)."""
    probs = np.asarray(probabilities, dtype=np.float64).reshape(-1)
    p_blast = float(contract.p_blast(probs))
    unclassified = contract.abstains(probs, p_blast, threshold)
    return CellResult(
        label=UNCLASSIFIED if unclassified else contract.cell_type(probs, threshold),
        p_blast=p_blast,
        threshold=threshold,
        suspected_blast=p_blast >= threshold,
        probabilities={name: float(v) for name, v in zip(contract.class_names, probs, strict=True)},
        unclassified=unclassified,
    )


@dataclass(frozen=True)
class TensorQuant:
    """dtype, shape and affine quantization of one tensor, as the interpreter reports them."""

    dtype: np.dtype
    shape: tuple[int, ...]
    scale: float
    zero_point: int

    @classmethod
    def from_details(cls, details: dict[str, Any]) -> TensorQuant:
        scale, zero_point = details.get("quantization", (0.0, 0))
        return cls(
            np.dtype(details["dtype"]), tuple(int(s) for s in details["shape"]), float(scale), int(zero_point)
        )

    @property
    def quantized(self) -> bool:
        return self.scale != 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "dtype": self.dtype.name,
            "shape": list(self.shape),
            "scale": self.scale,
            "zero_point": self.zero_point,
        }


def input_table(spec: TensorQuant) -> np.ndarray | None:
    """Pixel value -> quantized input value for all 256 values, or None when no mapping is needed.

    A lookup is several times faster than quantizing in floating point per crop, and a uint8
    input whose scale is 1 to within rounding (calibration saw 0-255) maps every value to itself.
    """
    if not (spec.quantized and spec.dtype in (np.uint8, np.int8)):
        return None
    info = np.iinfo(spec.dtype)
    q = np.round(np.arange(256, dtype=np.float64) / spec.scale) + spec.zero_point
    table = np.clip(q, info.min, info.max).astype(spec.dtype)
    if spec.dtype == np.uint8 and np.array_equal(table, np.arange(256)):
        return None
    return table


#: ``quantize_input``'s default: work the lookup table out from the spec on this call.
_FROM_SPEC = np.empty(0, np.uint8)


def quantize_input(spec: TensorQuant, cells: np.ndarray, table: np.ndarray | None = _FROM_SPEC) -> np.ndarray:
    """Raw RGB uint8 pixels -> the input tensor, using the input tensor's own quantization.

    The classifier and the benchmark's bare-interpreter floor both feed the model through here, so
    the floor measures the same input the device gets. ``table`` is :func:`input_table` of ``spec``
    (None: no mapping needed), computed once by a caller that quantizes many batches; left out, it
    is worked out here, which costs more than the lookup itself on a single crop.
    """
    if cells.dtype != np.uint8:
        raise ValueError(f"cells must be uint8 RGB pixels, got {cells.dtype}")
    lut = input_table(spec) if table is _FROM_SPEC else table
    if lut is not None:
        return lut[cells]
    if spec.dtype == np.uint8:
        return np.ascontiguousarray(cells)  # set_tensor refuses strided views
    return cells.astype(spec.dtype)


class _Session:
    """One allocated interpreter with a fixed batch size."""

    def __init__(self, runtime: Runtime, model_path: str, num_threads: int | None, batch: int) -> None:
        self.interpreter = runtime.make_interpreter(model_path, num_threads, batch=batch)
        inp = self.interpreter.get_input_details()
        out = self.interpreter.get_output_details()
        if len(inp) != 1 or len(out) != 1:
            raise ModelError(
                f"{model_path}: expected one input and one output, got {len(inp)} and {len(out)}"
            )
        self.input_index = inp[0]["index"]
        self.output_index = out[0]["index"]
        self.batch = batch
        self.input = TensorQuant.from_details(inp[0])
        self.output = TensorQuant.from_details(out[0])

    def run(self, tensor: np.ndarray) -> np.ndarray:
        self.interpreter.set_tensor(self.input_index, tensor)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output_index)


class CellClassifier:
    """Classifies 64x64 RGB uint8 cell crops with a verified model bundle.

    The interpreter is created once and reused. Not thread-safe: give each thread its own.
    """

    def __init__(self, bundle: ModelBundle, options: ClassifierOptions | None = None) -> None:
        self.bundle = bundle
        self.options = options or ClassifierOptions()
        self.contract = bundle.contract
        self.runtime = get_runtime(self.options.runtime)
        self._single = _Session(self.runtime, str(bundle.tflite_path), self.options.num_threads, 1)
        self._batched: _Session | None = None
        self.input = self._single.input
        self.output = self._single.output
        expected = (1, self.contract.size, self.contract.size, self.contract.channels)
        if self.input.shape != expected:
            raise ModelError(
                f"{bundle.tflite_path}: input shape {self.input.shape} is not the contract's {expected}"
            )
        units = len(self.contract.class_names) if self.contract.differential else 1
        if self.output.shape not in ((1, units), (units,)):
            what = f"{units} class probabilities" if self.contract.differential else "one sigmoid probability"
            raise ModelError(f"{bundle.tflite_path}: output shape {self.output.shape} is not {what}")
        self._units = units
        #: Output units summed into p_blast; None for the sigmoid, whose one unit is p_blast.
        self._blast = list(self.contract.blast_indices) if self.contract.differential else None
        if self.input.dtype not in (np.uint8, np.int8, np.float32, np.float16):
            raise ModelError(f"{bundle.tflite_path}: unsupported input dtype {self.input.dtype}")
        self._lut = input_table(self.input)

    @property
    def threshold(self) -> float:
        t = self.options.threshold
        return self.contract.decision_threshold if t is None else float(t)

    # -- stages -------------------------------------------------------------------------------
    def _preprocess(self, cells: np.ndarray) -> np.ndarray:
        return quantize_input(self.input, cells, self._lut)

    def _postprocess(self, raw: np.ndarray) -> np.ndarray:
        """Output tensor -> N x units float64, dequantized with the tensor's own parameters."""
        spec = self.output
        values = raw.reshape(-1, self._units).astype(np.float64)
        if spec.quantized:
            values = (values - spec.zero_point) * spec.scale
        return np.clip(values, 0.0, 1.0)

    def _session_for(self, n: int) -> _Session:
        if n == 1:
            return self._single
        if self._batched is None:
            self._batched = _Session(
                self.runtime, str(self.bundle.tflite_path), self.options.num_threads, self.options.batch_size
            )
        return self._batched

    # -- public API -----------------------------------------------------------------------------
    def predict_proba(self, cells: np.ndarray) -> np.ndarray:
        """p_blast for an N x size x size x 3 uint8 array (or one size x size x 3 crop).

        The contract's p_blast of :meth:`predict_probabilities`, taken straight from the outputs
        (the sigmoid's one unit, or the sum of the blast units), which is all a per-crop caller
        needs and saves the per-class arrays on the device's hot path.
        """
        out = self._outputs(cells)
        return out[:, 0] if self._blast is None else out[:, self._blast].sum(axis=1)

    def predict_probabilities(self, cells: np.ndarray) -> np.ndarray:
        """N x classes probabilities, in the contract's class order, for N crops."""
        return self.contract.probabilities(self._outputs(cells))

    def _outputs(self, cells: np.ndarray) -> np.ndarray:
        """N x output units, dequantized and clipped to [0, 1]."""
        cells = np.asarray(cells)
        if cells.ndim == 3:
            cells = cells[None]
        size = self.contract.size
        if cells.shape[1:] != (size, size, 3):
            raise ValueError(f"cells must be N x {size} x {size} x 3, got {cells.shape}")
        n = len(cells)
        out = np.empty((n, self._units), dtype=np.float64)
        b = self.options.batch_size
        full = (n // b) * b if b > 1 else 0
        for start in range(0, full, b):
            session = self._session_for(b)
            out[start : start + b] = self._postprocess(
                session.run(self._preprocess(cells[start : start + b]))
            )
        for i in range(full, n):
            out[i] = self._postprocess(self._single.run(self._preprocess(cells[i : i + 1])))[0]
        return out

    def classify(self, cells: np.ndarray) -> list[CellResult]:
        """Cell types, p_blast and the blast decision for N crops at the configured threshold."""
        return self.decide(self.predict_probabilities(cells))

    def decide(self, probabilities: np.ndarray) -> list[CellResult]:
        """Results for rows of class probabilities (e.g. aggregated over a track) at the threshold."""
        t = self.threshold
        return [decide(self.contract, row, t) for row in np.atleast_2d(probabilities)]

    def describe(self) -> dict[str, Any]:
        return {
            "runtime": self.runtime.name,
            "runtime_version": self.runtime.version,
            "num_threads": self.options.num_threads,
            "input": self.input.to_dict(),
            "output": self.output.to_dict(),
        }
