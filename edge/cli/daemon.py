"""``leukoedge daemon``, ``leukoedge config`` and ``leukoedge demo``: thin click wrappers.

All behaviour lives in :mod:`.runner` and :mod:`.config`; this module turns options into config
overrides and exit statuses. ``session_group`` is defined in :mod:`.sessions_cli` and re-exported
here because the top-level command table names this module.
"""

from __future__ import annotations

import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

import click

from leukoedge.cli.options import FiniteFloat
from leukoedge.cli.session import session_group
from leukoedge.daemon.config import DEFAULT_CONFIG_PATH, apply_overrides, load_config, render_example
from leukoedge.errors import ConfigError

__all__ = ["config_group", "daemon_cmd", "demo_cmd", "session_group"]

logger = logging.getLogger(__name__)

LOG_LEVELS = ("debug", "info", "warning", "error")


def _setup_logging(level: str) -> None:
    """Log to stderr (journald keeps it under systemd); the leukoedge loggers at the chosen level."""
    if not logging.getLogger().handlers:
        logging.basicConfig(stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("leukoedge").setLevel(level.upper())


def _overrides(**options: Any) -> dict[str, Any]:
    mapping = {
        "source": "source.uri",
        "state_dir": "store.state_dir",
        "model": "model.path",
        "http_host": "http.host",
        "http_port": "http.port",
        "sample_id": "session.sample_id",
        "note": "session.note",
        "max_frames": "pipeline.max_frames",
        "duration": "pipeline.duration_s",
        "crops": "store.crops",
        "lossless": "pipeline.lossless",
    }
    out = {mapping[k]: v for k, v in options.items() if k in mapping and v is not None}
    if options.get("no_http"):
        out["http.enabled"] = False
    if "model.path" in out:
        out["model.path"] = str(Path(out["model.path"]).resolve())
    return out


@click.command("daemon")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help=f"TOML configuration (default: {DEFAULT_CONFIG_PATH} if it exists, else built-in defaults).",
)
@click.option(
    "--source", help="Frame source URI, e.g. picamera2://, synthetic://?fps=30, replay:///dir?loop=1."
)
@click.option("--state-dir", help="Folder of the session database and crops.")
@click.option("--model", help="Model bundle (.json, .tflite or folder); default: the bundled model.")
@click.option("--http-host", help="Address of the status page and API.")
@click.option("--http-port", type=int, help="Port of the status page and API (0 = any free port).")
@click.option("--no-http", is_flag=True, help="Do not serve the status page and API.")
@click.option("--sample-id", help="Start (or continue) a session for this sample at startup.")
@click.option("--note", help="Operator note for that session.")
@click.option("--max-frames", type=int, help="Stop after this many captured frames.")
@click.option("--duration", type=FiniteFloat(), help="Stop after this many seconds.")
@click.option("--crops", type=click.Choice(["all", "blasts", "none"]), help="Which cell crops to save.")
@click.option("--lossless", is_flag=True, default=None, help="Replay/synthetic: never drop frames.")
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS),
    default="info",
    show_default=True,
    help="Log detail on stderr (journald keeps it under systemd).",
)
def daemon_cmd(config_path: Path | None, log_level: str, **options: Any) -> None:
    """Run the microscope daemon: capture, detect, track, classify and count white cells.

    Exits 0 after SIGTERM or the end of the frames, 3 when the camera fails for good (so systemd
    restarts it), 2 on a configuration, model or database error, 5 when counted cells could not be
    stored at the stop (they wait in the store's journal). SIGHUP reloads the configuration and model.
    """
    from leukoedge.daemon.service import Daemon

    _setup_logging(log_level)
    if config_path is None and DEFAULT_CONFIG_PATH.exists():
        config_path = DEFAULT_CONFIG_PATH
    overrides = _overrides(**options)
    config = apply_overrides(load_config(config_path), overrides)
    code = Daemon(config, config_path, overrides).run()
    sys.exit(code)


@click.group("config")
def config_group() -> None:
    """Check or print the daemon's configuration file."""


@config_group.command("check")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def config_check(file: Path) -> None:
    """Validate FILE as the daemon does at start: print each problem with its key path; exit 1 if any.

    Besides each key, this checks the source URI and its parameters, the API token file (readable,
    at least 16 characters), that a host beyond loopback has a token, and the startup sample id.
    """
    from leukoedge.daemon.startup import check_startup

    try:
        check_startup(load_config(file), origin=str(file))
    except ConfigError as e:
        problems = e.errors or [("", str(e))]
        for path, message in problems:
            click.echo(f"{file}: {path}: {message}" if path else f"{file}: {message}", err=True)
        sys.exit(1)
    click.echo(f"{file}: OK")


@config_group.command("example")
def config_example() -> None:
    """Print a documented configuration with every key at its default."""
    click.echo(render_example(), nl=False)


@click.command("demo")
@click.option("--duration", type=FiniteFloat(), default=20.0, show_default=True, help="Seconds to run.")
@click.option("--port", type=int, default=0, help="Port of the live page (default: any free port).")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), help="Keep the results here.")
@click.option("--model", help="Model bundle; default: the bundled model.")
@click.option("--seed", type=int, default=1, show_default=True, help="Seed of the synthetic slide.")
def demo_cmd(duration: float, port: int, state_dir: Path | None, model: str | None, seed: int) -> None:
    """Run the daemon on the synthetic microscope for a while, then print the session's summary.

    Needs nothing but the installed package: a generated smear under a moving stage, the bundled
    model, a session database in a temporary folder, and the live page on 127.0.0.1.
    """
    from leukoedge.daemon.service import Daemon

    _setup_logging("warning")
    state = state_dir or Path(tempfile.mkdtemp(prefix="leukoedge-demo-"))
    overrides = {
        "source.uri": f"synthetic://?seed={seed}&fps=30",
        "store.state_dir": str(state),
        "store.crops": "all",
        "http.host": "127.0.0.1",
        "http.port": port,
        "session.sample_id": "demo",
        "session.note": "synthetic microscope demo",
        "pipeline.duration_s": duration,
        "model.path": str(Path(model).resolve()) if model else "",
    }
    config = apply_overrides(load_config(None), overrides)
    daemon = Daemon(config, None, overrides)
    daemon.on_http_started = lambda url: click.echo(f"Live page: {url}  (running for {duration:g} s)")
    code = daemon.run()
    _print_demo_result(state)
    sys.exit(code)


def _print_demo_result(state: Path) -> None:
    from leukoedge.daemon.store.database import Store
    from leukoedge.daemon.store.summary import describe

    with Store(state) as store:
        sessions = store.list_sessions()
        if not sessions:
            click.echo("No session was recorded.")
            return
        session_id = int(sessions[0]["id"])
        summary = store.session_summary(session_id)
        click.echo(f"Session {session_id} ({summary['session']['sample_id']}): {describe(summary)}")
        try:
            from leukoedge.daemon.store.export import export_session
        except ImportError:
            click.echo(f"Results in {state}")
            return
        paths = export_session(store, session_id, state / "export")
        for kind, path in sorted(paths.items()):
            click.echo(f"{kind}: {path}")
    click.echo("Research use only - not a medical device.")
