"""The daemon's configuration: typed sections, defaults, validation with key paths.

This module is the schema. The documented example file (``systemd/leukoedge.toml.example``) is
rendered from it by :func:`render_example` (``leukoedge config example`` prints it), so the example
never drifts from what the daemon accepts: regenerate the example from here instead of editing it
by hand. Every key has a default; unknown keys are errors, reported with their key path, because a
misspelt key silently ignored is a setting the operator believes is in force but is not.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from leukoedge.errors import ConfigError
from leukoedge.finite import NotFiniteError, finite_float

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

#: Where the packaged service looks for its configuration.
DEFAULT_CONFIG_PATH = Path("/etc/leukoedge/leukoedge.toml")


def _key(default: Any, doc: str, *, choices: tuple[Any, ...] = (), lo: float | None = None,
         hi: float | None = None) -> Any:  # fmt: skip
    """A config key: its default, one line of documentation, and its allowed values."""
    meta = {"doc": doc, "choices": choices, "lo": lo, "hi": hi}
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class SourceConfig:
    """Where frames come from."""

    uri: str = _key(
        "synthetic://",
        "frame source: picamera2://, v4l2:///dev/video0, replay:///folder-or-video, synthetic:// "
        "(query parameters such as ?fps=10&loop=1 override the keys below)",
    )
    width: int = _key(640, "width of the image detection runs on (Pi camera: lores stream)", lo=64, hi=8192)
    height: int = _key(480, "height of the image detection runs on", lo=64, hi=8192)
    main_width: int = _key(0, "Pi camera main stream width, for crops; 0 = same as width", lo=0)
    main_height: int = _key(0, "Pi camera main stream height; 0 = same as height", lo=0)
    fps: float = _key(30.0, "frames per second; replay/synthetic: 0 = as fast as possible", lo=0)
    exposure_us: int = _key(0, "Pi camera exposure time in microseconds; 0 = automatic", lo=0)
    analogue_gain: float = _key(0.0, "Pi camera analogue gain; 0 = automatic", lo=0)
    loop: bool = _key(False, "replay: start again at the first image after the last")
    seed: int = _key(1, "synthetic: random seed of the generated slide", lo=0)
    cells_per_field: float = _key(3.0, "synthetic: white cells per field of view", lo=0.1, hi=30)
    stage_speed: float = _key(8.0, "synthetic: stage speed while panning, pixels per frame", lo=0.5, hi=200)
    start_frame: int = _key(0, "synthetic: frame of the stage path to start at", lo=0)
    hold_frame: int = _key(
        0, "synthetic: the stage stops at this frame of its path for good; 0 = never", lo=0
    )
    stall_timeout_s: float = _key(5.0, "no frame for this long counts as a camera failure", lo=0.1)
    max_failures: int = _key(10, "consecutive camera failures before the daemon exits non-zero", lo=1)
    backoff_s: float = _key(0.5, "first wait before reopening a failed camera (doubles each time)", lo=0)
    backoff_max_s: float = _key(10.0, "longest wait between reopen attempts", lo=0)


@dataclass(frozen=True)
class ModelConfig:
    """The classifier."""

    path: str = _key("", "model bundle (.json, .tflite or folder); empty = the model bundled with leukoedge")
    threshold: float = _key(0.0, "p(malignant) threshold; 0 = the bundle's own threshold", lo=0, hi=1)
    runtime: str = _key("", "TFLite runtime: ai_edge_litert, tflite_runtime; empty = first installed")
    num_threads: int = _key(1, "interpreter threads", lo=1, hi=16)


@dataclass(frozen=True)
class DetectorSection:
    """White-cell detection."""

    px_per_um: float = _key(0.0, "image scale in pixels per micrometre; 0 = calibrate from red cells", lo=0)


@dataclass(frozen=True)
class TrackerConfig:
    """Following one physical cell across frames, so it is counted once."""

    min_frames: int = _key(3, "frames a cell must be fully visible (not cut by the edge) to be counted", lo=1)
    edge_rule: str = _key(
        "extent",
        "whole cell: its nucleus and cytoplasm clear of the frame border (extent), or its stained "
        "region edge_margin diameters from it (margin)",
        choices=("extent", "margin"),
    )
    edge_margin: float = _key(
        0.25,
        "edge_rule = margin: how far a whole cell's stained region keeps from the edge, in diameters",
        lo=0,
        hi=2,
    )
    max_missed: int = _key(5, "frames a track may go unseen before it expires", lo=0)
    max_classifications: int = _key(3, "classifications per cell, averaged into its probability", lo=1)
    classify_every: int = _key(2, "frames between two classifications of the same cell", lo=1)
    aggregate: str = _key("mean_logit", "how classifications combine", choices=("mean_logit", "mean_p"))
    gate: float = _key(0.6, "largest match distance, as a fraction of the cell diameter", lo=0.05, hi=5)
    max_shift: float = _key(0.25, "largest stage shift between frames, fraction of the width", lo=0, hi=1)


@dataclass(frozen=True)
class PipelineConfig:
    """Threads and queues."""

    queue_size: int = _key(2, "frames waiting for processing; older ones are dropped and counted", lo=1, hi=8)
    lossless: bool = _key(False, "replay/synthetic: wait for processing instead of dropping frames (offline)")
    max_frames: int = _key(0, "stop after this many captured frames; 0 = run until stopped", lo=0)
    duration_s: float = _key(0.0, "stop after this many seconds; 0 = run until stopped", lo=0)
    stats_interval_s: float = _key(60.0, "period of the frame statistics written to the store", lo=1)


@dataclass(frozen=True)
class StoreConfig:
    """Where counts and crops are kept."""

    state_dir: str = _key("/var/lib/leukoedge", "folder of the SQLite database and the crops")
    crops: str = _key("blasts", "which crops to save", choices=("all", "blasts", "none"))
    disk_budget_mb: float = _key(2048.0, "most disk space crops may use", lo=0)
    min_free_mb: float = _key(512.0, "stop saving crops when the disk has less free space", lo=0)
    backlog_limit: int = _key(
        5000, "most writes kept while the store cannot be written; when reached, counting stops", lo=1
    )


@dataclass(frozen=True)
class HttpConfig:
    """The status page and API."""

    enabled: bool = _key(True, "serve /healthz, /metrics, /api and the live page")
    host: str = _key("127.0.0.1", "address to listen on (0.0.0.0 for every interface)")
    port: int = _key(8080, "TCP port; 0 = any free port", lo=0, hi=65535)
    token_file: str = _key(
        "", "file holding a bearer token (16 characters or more) required by the API; empty = no token"
    )
    max_connections: int = _key(
        32, "connections served at once; more are answered 503 and closed", lo=2, hi=1024
    )
    max_header_bytes: int = _key(
        16384, "largest request line plus headers, in bytes; larger requests get 431", lo=1024, hi=65536
    )
    request_timeout_s: float = _key(
        10.0,
        "time a client has to send a whole request (line, headers, body); slower ones are cut off",
        lo=0.1,
        hi=300,
    )
    max_streams: int = _key(4, "live-view (MJPEG) streams at once; more get 503", lo=1, hi=64)
    stream_write_timeout_s: float = _key(
        5.0,
        "a live-view reader that takes no data for this long is dropped, freeing its stream",
        lo=0.1,
        hi=300,
    )
    host_names: str = _key(
        "",
        "bound to loopback, the Host names answered besides localhost, 127.0.0.1 and [::1], comma "
        "separated (e.g. a reverse proxy's); other Host headers get 421 (DNS rebinding)",
    )


@dataclass(frozen=True)
class SessionConfig:
    """A session counts one smear."""

    sample_id: str = _key("", "start a session for this sample at startup; empty = wait for 'session start'")
    note: str = _key("", "operator note of that session")


@dataclass(frozen=True)
class DaemonConfig:
    """The whole configuration file: one attribute per [section]."""

    source: SourceConfig = field(default_factory=SourceConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    detector: DetectorSection = field(default_factory=DetectorSection)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    session: SessionConfig = field(default_factory=SessionConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _section_types() -> dict[str, type]:
    return {f.name: f.default_factory for f in fields(DaemonConfig)}  # type: ignore[misc]


def _check_value(f: dataclasses.Field, value: Any) -> tuple[Any, str | None]:
    """Coerce one value to its field's type; return (value, error message or None)."""
    kind: type[Any] = type(f.default)
    if kind is bool:
        if not isinstance(value, bool):
            return value, f"must be true or false, not {value!r}"
    elif kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            return value, f"must be an integer, not {value!r}"
    elif kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return value, f"must be a number, not {value!r}"
        try:
            value = finite_float(value, f.name)
        except NotFiniteError as e:
            return value, e.problem
    elif kind is str and not isinstance(value, str):
        return value, f"must be a string, not {value!r}"
    meta = f.metadata
    if meta["choices"] and value not in meta["choices"]:
        return value, f"must be one of {', '.join(map(str, meta['choices']))}, not {value!r}"
    if meta["lo"] is not None and value < meta["lo"]:
        return value, f"must be >= {meta['lo']}, not {value!r}"
    if meta["hi"] is not None and value > meta["hi"]:
        return value, f"must be <= {meta['hi']}, not {value!r}"
    return value, None


def config_from_dict(data: dict[str, Any], origin: str = "configuration") -> DaemonConfig:
    """Validate a parsed TOML document; every problem is reported at once, with its key path."""
    errors: list[tuple[str, str]] = []
    sections: dict[str, Any] = {}
    types = _section_types()
    for name, body in data.items():
        if name not in types:
            errors.append((name, f"unknown section (known: {', '.join(types)})"))
            continue
        if not isinstance(body, dict):
            errors.append((name, "must be a table ([section])"))
            continue
        known = {f.name: f for f in fields(types[name])}
        values: dict[str, Any] = {}
        for key, value in body.items():
            path = f"{name}.{key}"
            if key not in known:
                errors.append((path, "unknown key"))
                continue
            value, problem = _check_value(known[key], value)
            if problem:
                errors.append((path, problem))
            else:
                values[key] = value
        if not any(p.startswith(f"{name}.") for p, _ in errors):
            sections[name] = types[name](**values)
    errors.extend(_cross_checks(sections))
    if errors:
        lines = "\n".join(f"  {p}: {m}" for p, m in errors)
        raise ConfigError(f"{origin}: {len(errors)} error(s):\n{lines}", errors)
    return DaemonConfig(**sections)


def _cross_checks(sections: dict[str, Any]) -> list[tuple[str, str]]:
    errors = []
    src = sections.get("source")
    if src and (src.main_width == 0) != (src.main_height == 0):
        errors.append(("source.main_width", "set main_width and main_height together, or neither"))
    if src and src.backoff_max_s < src.backoff_s:
        errors.append(("source.backoff_max_s", f"must be >= source.backoff_s ({src.backoff_s})"))
    web = sections.get("http")
    if web and web.max_streams >= web.max_connections:
        errors.append(("http.max_streams", f"must be < http.max_connections ({web.max_connections})"))
    return errors


def load_config(path: str | os.PathLike | None) -> DaemonConfig:
    """Read and validate a TOML file; None gives the defaults."""
    if path is None:
        return DaemonConfig()
    p = Path(path)
    try:
        with open(p, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError as e:
        raise ConfigError(f"{p}: no such configuration file", [("", "file not found")]) from e
    except OSError as e:
        raise ConfigError(f"{p}: cannot read: {e}", [("", str(e))]) from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: not valid TOML: {e}", [("", f"not valid TOML: {e}")]) from e
    except UnicodeDecodeError as e:
        msg = f"not UTF-8 text (TOML files are UTF-8): byte {e.start}: {e.reason}"
        raise ConfigError(f"{p}: {msg}", [("", msg)]) from e
    return config_from_dict(data, origin=str(p))


def apply_overrides(config: DaemonConfig, overrides: dict[str, Any]) -> DaemonConfig:
    """Replace ``section.key`` values (from the command line); validated like the file."""
    data = config.to_dict()
    for path, value in overrides.items():
        if value is None:
            continue
        section, _, key = path.partition(".")
        data.setdefault(section, {})[key] = value
    return config_from_dict(data, origin="command line")


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)


def render_example(config: DaemonConfig | None = None) -> str:
    """The documented example configuration: every section and key, its default and meaning."""
    config = config or DaemonConfig()
    out = [
        "# leukoedge daemon configuration (TOML). Every key is optional; shown are the defaults.",
        "# Check a file with: leukoedge config check FILE",
        "# Research use only - not a medical device.",
    ]
    for section in fields(DaemonConfig):
        body = getattr(config, section.name)
        out += ["", f"# {(type(body).__doc__ or '').strip()}", f"[{section.name}]"]
        for f in fields(body):
            extra = ""
            if f.metadata["choices"]:
                extra = f" ({' | '.join(map(str, f.metadata['choices']))})"
            out.append(f"# {f.metadata['doc']}{extra}")
            out.append(f"{f.name} = {_toml_value(getattr(body, f.name))}")
    return "\n".join(out) + "\n"
