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

__version__ = "0.1.0"

#: The one research-use notice: every report page, the live page's status and ``classify`` show it.
#: Defined here, not in the report room, so that importing the package stays cheap (a Pi's start-up).
RESEARCH_USE_NOTICE = (
    "Research use only - not a medical device. Results are not a diagnosis and must be reviewed "
    "by a qualified person."
)


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
