"""Frame sources, chosen by URI: one module per implementation, this one picks among them.

Every source follows :class:`~.base.FrameSource`, so the daemon, its tests and the demo run the same
pipeline whatever the camera: ``synthetic://?seed=1&fps=30`` (:mod:`.synthetic`),
``replay:///path/to/folder?fps=10&loop=1`` (:mod:`.replay`), ``v4l2:///dev/video0?width=1280&height=960``
(:mod:`.opencv`), ``picamera2://`` (:mod:`.picamera`). Query parameters override the ``[source]`` keys
of the configuration. A new source is a module here with a class that follows the protocol and calls
:func:`~.base.check_frame` on what it reads, plus its scheme below. Hardware libraries are imported
only when their source opens.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from leukoedge.daemon.config import SourceConfig, config_from_dict
from leukoedge.daemon.sources.base import FrameSource
from leukoedge.errors import ConfigError

logger = logging.getLogger(__name__)

SCHEMES = ("synthetic", "replay", "v4l2", "usb", "picamera2")


def parse_source_uri(uri: str, base: SourceConfig | None = None) -> tuple[str, str, SourceConfig]:
    """Split a source URI into (scheme, path, config with the query parameters applied)."""
    base = base or SourceConfig()
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise ConfigError(
            f"source URI {uri!r}: unknown scheme {scheme!r} (use {', '.join(s + '://' for s in SCHEMES)})",
            [("source.uri", f"unknown scheme {scheme!r}")],
        )
    path = unquote(parts.netloc + parts.path) if scheme in ("v4l2", "usb") else unquote(parts.path)
    overrides = {key: _coerce(uri, key, raw) for key, raw in parse_qsl(parts.query, keep_blank_values=True)}
    if not overrides:
        return scheme, path, dataclasses.replace(base, uri=uri)
    data = {"source": {**dataclasses.asdict(base), **overrides, "uri": uri}}
    return scheme, path, config_from_dict(data, origin=f"source URI {uri!r}").source


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _coerce(uri: str, key: str, raw: str) -> Any:
    """A query parameter as the type of the [source] key it overrides."""
    known = {f.name: f for f in dataclasses.fields(SourceConfig)}
    if key not in known or key == "uri":
        msg = f"unknown parameter {key!r}"
        raise ConfigError(f"source URI {uri!r}: {msg}", [(f"source.uri?{key}", msg)])
    kind: type[Any] = type(known[key].default)
    try:
        if kind is bool:
            if raw.lower() not in _TRUE + _FALSE:
                raise ValueError(raw)
            return raw.lower() in _TRUE
        return kind(raw)
    except ValueError as e:
        msg = f"{raw!r} is not a valid {kind.__name__}"
        raise ConfigError(f"source URI {uri!r}: parameter {key}: {msg}", [(f"source.uri?{key}", msg)]) from e


def open_source(config: SourceConfig) -> FrameSource:
    """Make (but do not open) the source a configuration names."""
    scheme, path, cfg = parse_source_uri(config.uri, config)
    if scheme == "synthetic":
        from leukoedge.daemon.sources.synthetic import SyntheticSource

        return SyntheticSource(cfg)
    if scheme == "replay":
        if not path:
            raise ConfigError("replay:// needs a path: replay:///folder or replay:///video.mp4")
        from leukoedge.daemon.sources.replay import ReplaySource

        return ReplaySource(cfg, Path(path))
    if scheme in ("v4l2", "usb"):
        from leukoedge.daemon.sources.opencv import OpenCVSource

        return OpenCVSource(cfg, path or "/dev/video0")
    from leukoedge.daemon.sources.picamera import PiCameraSource

    return PiCameraSource(cfg)
