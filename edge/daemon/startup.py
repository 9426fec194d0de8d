"""What the daemon checks before it starts, in one function that ``leukoedge config check`` runs too.

:func:`~.config.config_from_dict` checks each key on its own; :func:`check_startup` checks what
needs more than one key or something outside the file: that the source URI names a known source
with known parameters, that the API token file is readable and its token long enough, that a
server bound beyond loopback has a token, and that the startup sample id is one the store accepts.
A mistake here is a configuration error (exit status 2, which the systemd unit does not restart),
not a camera failure retried for a minute.
"""

from __future__ import annotations

from pathlib import Path

from leukoedge.daemon.config import DaemonConfig, HttpConfig
from leukoedge.errors import ConfigError

#: Fewest characters of an API token; a shorter one is refused (it could be guessed).
MIN_TOKEN_LENGTH = 16

Problems = list[tuple[str, str]]


def check_startup(config: DaemonConfig, origin: str = "configuration") -> str | None:
    """Every check the daemon makes before starting; returns the API token (None without one).

    Raises :class:`ConfigError` listing every problem with its key path, as the file's own checks do.
    """
    problems: Problems = []
    problems += source_problems(config)
    token, token_problems = read_token(config.http)
    problems += token_problems
    problems += bind_problems(config.http, token, token_problems)
    problems += session_problems(config)
    if problems:
        lines = "\n".join(f"  {p}: {m}" for p, m in problems)
        raise ConfigError(f"{origin}: {len(problems)} error(s):\n{lines}", problems)
    return token


def source_problems(config: DaemonConfig) -> Problems:
    from leukoedge.daemon.sources import parse_source_uri

    try:
        scheme, path, _ = parse_source_uri(config.source.uri, config.source)
    except ConfigError as e:
        return e.errors or [("source.uri", str(e))]
    if scheme == "replay" and not path:
        return [("source.uri", "replay:// needs a path: replay:///folder or replay:///video.mp4")]
    return []


def read_token(http: HttpConfig) -> tuple[str | None, Problems]:
    """The API token from ``http.token_file`` (None when unset or empty), and what is wrong with it."""
    if not http.token_file:
        return None, []
    try:
        token = Path(http.token_file).read_text(encoding="utf-8").strip() or None
    except (OSError, UnicodeDecodeError) as e:
        return None, [("http.token_file", f"cannot read {http.token_file}: {e}")]
    if token is not None and len(token) < MIN_TOKEN_LENGTH:
        too_short = f"token too short: {len(token)} of at least {MIN_TOKEN_LENGTH} characters"
        return None, [("http.token_file", too_short)]
    return token, []


def bind_problems(http: HttpConfig, token: str | None, token_problems: Problems) -> Problems:
    from leukoedge.daemon.http.server import is_loopback

    if not http.enabled or is_loopback(http.host) or token is not None or token_problems:
        return []
    return [("http.token_file", f"required when http.host ({http.host}) is not a loopback address")]


def session_problems(config: DaemonConfig) -> Problems:
    from leukoedge.daemon.store.database import validate_sample_id

    if not config.session.sample_id:
        return []
    try:
        validate_sample_id(config.session.sample_id, config.session.note)
    except ConfigError as e:
        return [("session.sample_id", str(e))]
    return []
