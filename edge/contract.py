"""The input contract shared by training, quantization and the edge.

This module is the single source of truth for what the model sees: the input size, the pixel
format, the class names, the default threshold, the crop geometry and the model manifest's schema.
Training and quantization import it and write the values they used into the bundle manifest; the
edge reads them back from the manifest and never guesses. Nothing here imports TensorFlow.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from leukoedge.finite import finite_float

#: Side of the square model input, in pixels.
INPUT_SIZE = 64
#: Colour channels of the model input.
INPUT_CHANNELS = 3
#: What the model's input tensor holds: raw 8-bit RGB pixels, 0-255, no normalisation.
#: The model scales them itself (a Rescaling layer), so int8 models take camera pixels directly.
PIXEL_FORMAT = "rgb_uint8"
#: How a decoded image becomes the model input: centre square crop, then this resampling filter.
RESIZE_METHOD = "center_square_crop+bilinear"

#: Class names in output order: the model's single sigmoid output is p(CLASS_NAMES[1]).
CLASS_NAMES: tuple[str, str] = ("non_malignant", "malignant")
#: The class the sigmoid output scores, and the one a missed detection costs most.
POSITIVE_CLASS = "malignant"
#: Threshold on p(positive) used when a bundle does not choose one (it always should).
DEFAULT_THRESHOLD = 0.5

#: Output layouts. ``sigmoid``: one unit, p(positive class), with two class names (negative,
#: positive): the binary LeukoNet. ``softmax``: one unit per class name, summing to one: the
#: differential LeukoNet, whose p_blast is the sum over the contract's blast classes.
OUTPUT_SIGMOID = "sigmoid"
OUTPUT_SOFTMAX = "softmax"
OUTPUTS = (OUTPUT_SIGMOID, OUTPUT_SOFTMAX)

#: The white-cell types of the differential model, in output order.
DIFFERENTIAL_CLASSES: tuple[str, ...] = (
    "blast",
    "neutrophil",
    "lymphocyte",
    "atypical_lymphocyte",
    "monocyte",
    "eosinophil",
    "basophil",
    "immature_granulocyte",
    "erythroblast",
    "smudge_cell",
)
#: The differential classes whose probabilities add up to p_blast (a "suspected blast").
DIFFERENTIAL_BLAST_CLASSES: tuple[str, ...] = ("blast",)
#: The label of a cell the model abstains on (see ``InputContract.min_confidence``).
UNCLASSIFIED = "unclassified"

#: Version of the bundle manifest schema. The edge reads this one and converts older ones; it refuses
#: newer ones, whose meaning it cannot know.
MANIFEST_SCHEMA_VERSION = 3
#: Version 3 added the contract's ``output`` and ``blast_classes``; a version 2 manifest is a binary
#: (sigmoid) model and reads unchanged.

#: Typical diameter of a red blood cell in micrometres: the ruler for self-calibrating scale.
RBC_DIAMETER_UM = 7.5


@dataclass(frozen=True)
class CropGeometry:
    """How big a white cell is inside a model input, as measured on the training images.

    ``cell_fraction`` is the white cell's diameter divided by the side of the square crop
    (median over the training images); a detector cuts a square of side
    ``cell_diameter / cell_fraction`` around each cell so crops look like training images.
    ``rbc_fraction`` is the same for red cells, when it was measured: it ties the crop to the
    microscope's scale through the red-cell ruler.
    """

    cell_fraction: float = 0.45
    cell_fraction_p10: float | None = None
    cell_fraction_p90: float | None = None
    rbc_fraction: float | None = None
    measured_on: int = 0

    def crop_side(self, cell_diameter_px: float) -> float:
        """Side of the square crop, in field pixels, for a cell of the given diameter."""
        return float(cell_diameter_px) / self.cell_fraction

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CropGeometry:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        for k in ("cell_fraction", "cell_fraction_p10", "cell_fraction_p90", "rbc_fraction"):
            if known.get(k) is not None:
                known[k] = finite_float(known[k], f"input_contract.crop.{k}")
        geometry = cls(**known)
        if not 0.05 <= geometry.cell_fraction <= 1.0:
            raise ValueError(f"crop geometry cell_fraction {geometry.cell_fraction} is not in [0.05, 1]")
        return geometry


@dataclass(frozen=True)
class InputContract:
    """The model input and output conventions, as recorded in a bundle manifest."""

    size: int = INPUT_SIZE
    channels: int = INPUT_CHANNELS
    pixel_format: str = PIXEL_FORMAT
    resize: str = RESIZE_METHOD
    class_names: tuple[str, ...] = CLASS_NAMES
    positive_class: str = POSITIVE_CLASS
    threshold: float = DEFAULT_THRESHOLD
    crop: CropGeometry = field(default_factory=CropGeometry)
    #: ``threshold`` moved onto an int8 model's output grid, so the device compares against a value
    #: its output can take (same decisions); None for a float model straight from training.
    threshold_snapped: float | None = None
    #: ``sigmoid`` (binary) or ``softmax`` (one probability per class name).
    output: str = OUTPUT_SIGMOID
    #: Classes summed into p_blast; empty means ``(positive_class,)`` (the binary model's).
    blast_classes: tuple[str, ...] = ()
    #: Abstention: a differential call whose top class probability is below this is "unclassified"
    #: (counted and shown, never called blast or normal); chosen on validation. None: never.
    min_confidence: float | None = None

    @property
    def differential(self) -> bool:
        """True for a softmax model with one output per cell type."""
        return self.output == OUTPUT_SOFTMAX

    @property
    def suspect_classes(self) -> tuple[str, ...]:
        """The classes whose probabilities sum to p_blast."""
        return self.blast_classes or (self.positive_class,)

    @property
    def blast_indices(self) -> tuple[int, ...]:
        return tuple(self.class_names.index(c) for c in self.suspect_classes)

    @property
    def decision_threshold(self) -> float:
        """The threshold scores are compared against: the snapped one when the model has a grid."""
        return self.threshold if self.threshold_snapped is None else self.threshold_snapped

    @property
    def negative_class(self) -> str:
        return next(c for c in self.class_names if c != self.positive_class)

    def label_for(self, p_positive: float, threshold: float | None = None) -> str:
        """The binary model's label for p(positive) at the threshold."""
        t = self.decision_threshold if threshold is None else threshold
        return self.positive_class if p_positive >= t else self.negative_class

    def probabilities(self, outputs: Any) -> Any:
        """Model outputs (N x units, dequantized) -> N x len(class_names) class probabilities.

        A sigmoid output p becomes (1 - p, p) in class-name order. Softmax rows are used as the
        model gives them: an int8 model's rows sum to one only to within a few steps of its 1/256
        grid, and leaving them so keeps p_blast, a sum of outputs, on that grid, where the bundle's
        snapped threshold is.
        """
        import numpy as np

        out = np.clip(np.asarray(outputs, dtype=np.float64), 0.0, 1.0)
        if out.ndim == 1:
            out = out[:, None]
        if self.output == OUTPUT_SIGMOID:
            p = out[:, -1]
            probs = np.zeros((len(p), 2))
            probs[:, self.class_names.index(self.positive_class)] = p
            probs[:, self.class_names.index(self.negative_class)] = 1.0 - p
            return probs
        if out.shape[1] != len(self.class_names):
            raise ValueError(f"model gives {out.shape[1]} outputs for {len(self.class_names)} classes")
        return out

    def p_blast(self, probabilities: Any) -> Any:
        """p_blast per row of class probabilities: the sum over the blast classes."""
        import numpy as np

        probs = np.asarray(probabilities, dtype=np.float64)
        return probs[..., list(self.blast_indices)].sum(axis=-1)

    def cell_type(self, probabilities: Any, threshold: float | None = None) -> str:
        """The label of one cell: its most probable type (differential), or the binary label."""
        import numpy as np

        probs = np.asarray(probabilities, dtype=np.float64).reshape(-1)
        if self.output == OUTPUT_SIGMOID:
            return self.label_for(float(self.p_blast(probs)), threshold)
        return self.class_names[int(np.argmax(probs))]

    def abstains(self, probabilities: Any, p_blast: float, threshold: float) -> bool:
        """True for a cell the model is not competent to call: not a suspected blast, and its top
        type below ``min_confidence``. A suspected blast is always reported as one."""
        import numpy as np

        if self.min_confidence is None or p_blast >= threshold:
            return False
        return float(np.max(probabilities)) < self.min_confidence

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["class_names"] = list(self.class_names)
        d["crop"] = self.crop.to_dict()
        d["blast_classes"] = list(self.suspect_classes)
        for optional in ("threshold_snapped", "min_confidence"):
            if d[optional] is None:
                del d[optional]
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InputContract:
        crop = CropGeometry.from_dict(data.get("crop", {}))
        names = tuple(str(n) for n in data.get("class_names", CLASS_NAMES))
        output = str(data.get("output", OUTPUT_SIGMOID))
        blast = tuple(str(n) for n in data.get("blast_classes", ()))
        positive = data.get("positive_class", blast[0] if blast else POSITIVE_CLASS)
        snapped = data.get("threshold_snapped")
        confidence = data.get("min_confidence")
        if confidence is not None and not 0.0 <= float(confidence) <= 1.0:
            raise ValueError(f"min_confidence {confidence} is not in [0, 1]")
        if output not in OUTPUTS:
            raise ValueError(f"output {output!r} is not one of {', '.join(OUTPUTS)}")
        if len(set(names)) != len(names):
            raise ValueError(f"class_names {list(names)} repeat a name")
        if output == OUTPUT_SIGMOID and (len(names) != 2 or positive not in names):
            raise ValueError(f"class_names {list(names)} must be two names including {positive!r}")
        if output == OUTPUT_SOFTMAX and len(names) < 2:
            raise ValueError(f"a softmax model needs at least two class_names, not {list(names)}")
        unknown = [b for b in (*blast, positive) if b not in names]
        if unknown:
            raise ValueError(f"blast class(es) {unknown} are not among class_names {list(names)}")
        if output == OUTPUT_SIGMOID and blast not in ((), (positive,)):
            raise ValueError(
                f"a sigmoid model's blast class is its positive class {positive!r}, not {list(blast)}"
            )
        return cls(
            size=int(data.get("size", INPUT_SIZE)),
            channels=int(data.get("channels", INPUT_CHANNELS)),
            pixel_format=str(data.get("pixel_format", PIXEL_FORMAT)),
            resize=str(data.get("resize", RESIZE_METHOD)),
            class_names=names,
            positive_class=positive,
            threshold=finite_float(data.get("threshold", DEFAULT_THRESHOLD), "input_contract.threshold"),
            crop=crop,
            threshold_snapped=None
            if snapped is None
            else finite_float(snapped, "input_contract.threshold_snapped"),
            output=output,
            blast_classes=blast if output == OUTPUT_SOFTMAX else (),
            min_confidence=None
            if confidence is None
            else finite_float(confidence, "input_contract.min_confidence"),
        )
