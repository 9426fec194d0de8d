"""One exception hierarchy for the whole package.

Library code raises these; the command line turns them into a message and an exit status, and the
HTTP server into a JSON answer with a status code, so a user never sees a stack trace as the only
explanation of what went wrong. Each class carries both numbers (``exit_code``, ``http_status``),
so a new error is answered correctly everywhere by being declared here once.
"""

from __future__ import annotations

from typing import ClassVar


class LeukoEdgeError(Exception):
    """Base class of every error leukoedge raises on purpose."""

    #: Exit status of the ``leukoedge`` command that fails with this error.
    exit_code: ClassVar[int] = 2
    #: HTTP status the daemon's server answers with: the daemon cannot serve the request right now.
    http_status: int = 503

    @property
    def http_headers(self) -> dict[str, str]:
        """Extra response headers for the HTTP answer (an authentication challenge, a retry delay)."""
        return {}


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


class SourceUnavailable(CameraError):
    """A source that reopening cannot fix (a replay folder without images, OpenCV not installed)."""


class ConfigError(LeukoEdgeError):
    """A configuration file or value is invalid."""

    http_status = 400

    def __init__(self, message: str, errors: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        #: (key path, message) pairs, one per problem found.
        self.errors: list[tuple[str, str]] = list(errors or [])


class SynthError(ConfigError, ValueError):
    """A synthetic-data setting is invalid. Also a ValueError, as Python callers expect."""


class SessionError(LeukoEdgeError):
    """A session cannot be started, stopped or written to as asked (one is active, it has ended)."""

    http_status = 409


class NoSuchSession(SessionError):
    """The session asked for does not exist."""

    http_status = 404


class StoreUnavailable(LeukoEdgeError):
    """There is no session store to answer from (the daemon has not opened it)."""


class HttpError(LeukoEdgeError):
    """A request the HTTP server refuses by itself (bad path, method, body or token)."""

    http_status = 400

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.http_status, self.message, self._headers = status, message, dict(headers or {})

    @property
    def http_headers(self) -> dict[str, str]:
        return self._headers
