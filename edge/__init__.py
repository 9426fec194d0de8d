"""leukoedge: finds AML blasts among white blood cells on peripheral blood smear images.

Research use only. Not a medical device: results must not be used for diagnosis.

Importing this package is cheap and never imports TensorFlow; the TFLite runtime is loaded only
when a model is opened.
"""

from leukoedge.errors import (
    BundleError,
    CameraError,
    ConfigError,
    DataError,
    ImageError,
    LeukoEdgeError,
    ModelError,
    RuntimeMissingError,
)
from leukoedge.report.page import RESEARCH_USE_NOTICE

__version__ = "0.1.0"


__all__ = [
    "RESEARCH_USE_NOTICE",
    "BundleError",
    "CameraError",
    "ConfigError",
    "DataError",
    "ImageError",
    "LeukoEdgeError",
    "ModelError",
    "RuntimeMissingError",
    "__version__",
]
