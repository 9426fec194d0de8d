"""The synthetic microscope's error: a bad setting (unknown kind, impossible size, ...)."""

from __future__ import annotations

from leukoedge.errors import ConfigError


class SynthError(ConfigError, ValueError):
    """A synthetic-data setting is invalid. Also a ValueError, as Python callers expect."""
