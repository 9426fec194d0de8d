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

#: Version of the bundle manifest schema. The edge reads this one and converts older ones; it refuses
#: newer ones, whose meaning it cannot know.
MANIFEST_SCHEMA_VERSION = 2

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

    @property
    def decision_threshold(self) -> float:
        """The threshold scores are compared against: the snapped one when the model has a grid."""
        return self.threshold if self.threshold_snapped is None else self.threshold_snapped

    @property
    def negative_class(self) -> str:
        return next(c for c in self.class_names if c != self.positive_class)

    def label_for(self, p_positive: float, threshold: float | None = None) -> str:
        t = self.decision_threshold if threshold is None else threshold
        return self.positive_class if p_positive >= t else self.negative_class

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["class_names"] = list(self.class_names)
        d["crop"] = self.crop.to_dict()
        if self.threshold_snapped is None:
            del d["threshold_snapped"]
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InputContract:
        crop = CropGeometry.from_dict(data.get("crop", {}))
        names = tuple(data.get("class_names", CLASS_NAMES))
        positive = data.get("positive_class", POSITIVE_CLASS)
        snapped = data.get("threshold_snapped")
        if len(names) != 2 or positive not in names:
            raise ValueError(f"class_names {list(names)} must be two names including {positive!r}")
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
        )
