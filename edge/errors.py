"""One exception hierarchy for the whole package.

Library code raises these; the command line turns them into a message and an exit status, so a
user never sees a stack trace as the only explanation of what went wrong.
"""

from __future__ import annotations


class LeukoEdgeError(Exception):
    """Base class of every error leukoedge raises on purpose."""


class DataError(LeukoEdgeError):
    """A data set cannot be used as asked (no images, one class, bad manifest, ...)."""


class ImageError(DataError):
    """One image cannot be decoded (corrupt, truncated, empty, not an image, too large)."""


class ModelError(LeukoEdgeError):
    """A model file cannot be used (wrong shape, wrong kind of file, failed conversion)."""


class BundleError(ModelError):
    """A model bundle is missing, corrupt, tampered with, or of an unsupported schema."""


class RuntimeMissingError(ModelError):
    """No TFLite runtime is installed, or the one asked for is not."""


class CameraError(LeukoEdgeError):
    """A frame source failed (camera gone, stalled, wrong frame size)."""


class ConfigError(LeukoEdgeError):
    """A configuration file or value is invalid."""

    def __init__(self, message: str, errors: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        #: (key path, message) pairs, one per problem found.
        self.errors: list[tuple[str, str]] = list(errors or [])
