"""The daemon's small HTTP server: health, Prometheus metrics, a JSON API, and a live page.

Standard library only (``ThreadingHTTPServer``): the daemon runs on a Raspberry Pi and must not
pull a web framework in. Reading is open to whoever can reach the port; starting and stopping a
session needs ``Authorization: Bearer <token>``. Without a token the server only binds to loopback
and session control over HTTP is off. Every malformed request gets a 4xx answer and the server goes
on serving; a failing provider gets a 500 for that request only. What one client may cost (connections,
header bytes, time, live-view slots) is bounded by :mod:`leukoedge.daemon.http.limits`.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import json
import logging
import re
import socket
import threading
import time
from http import HTTPStatus
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

from leukoedge import RESEARCH_USE_NOTICE
from leukoedge.daemon.http import prometheus
from leukoedge.daemon.http.limits import (
    STREAM_SNDBUF,
    BoundedRequestHandler,
    CappedHTTPServer,
    HttpLimits,
    host_allowed,
    parse_json_object,
)
from leukoedge.daemon.types import StatusProvider
from leukoedge.errors import ConfigError, HttpError, LeukoEdgeError
from leukoedge.finite import json_safe

logger = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
BOUNDARY = "leukoedgeframe"
STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
}
_GET_ROUTES = {"/healthz", "/metrics", "/api/status", "/api/sessions", "/stream.mjpeg", *STATIC}
_POST_ROUTES = {"/api/sessions/start", "/api/sessions/stop"}
_SESSION_PATH = re.compile(r"^/api/sessions/([^/]+)$")


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _load_static() -> dict[str, tuple[bytes, str]]:
    folder = resources.files("leukoedge.daemon.http") / "static"
    return {route: ((folder / name).read_bytes(), ctype) for route, (name, ctype) in STATIC.items()}


class _Server(CappedHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], owner: StatusServer) -> None:
        self.owner = owner
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler, owner.limits)


class StatusServer:
    """The HTTP server, run in a background thread. ``port=0`` picks a free port (see :attr:`port`)."""

    def __init__(
        self,
        host: str,
        port: int,
        provider: StatusProvider,
        token: str | None = None,
        stream_fps: float = 4.0,
        limits: HttpLimits | None = None,
    ) -> None:
        token = token or None
        if not is_loopback(host) and token is None:
            raise ConfigError(
                f"refusing to serve HTTP on {host!r} without a token: set an API token, or bind to 127.0.0.1",
                [("http.token", "required when http.host is not a loopback address")],
            )
        if not 0 <= int(port) <= 65535:
            raise ConfigError(f"HTTP port {port} is not in 0-65535", [("http.port", "not in 0-65535")])
        self.host, self.provider, self.token = host, provider, token
        self.limits = limits or HttpLimits.from_config()
        self.stream_interval = 1.0 / max(0.1, float(stream_fps))
        self.streams = threading.BoundedSemaphore(max(1, self.limits.max_streams))
        self.stopping = threading.Event()
        self.static = _load_static()
        self._requested_port = int(port)
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._httpd.server_address[1] if self._httpd else self._requested_port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> StatusServer:
        try:
            self._httpd = _Server((self.host, self._requested_port), self)
        except OSError as e:
            raise ConfigError(
                f"cannot listen on {self.host}:{self._requested_port}: {e.strerror or e}"
            ) from e
        self.stopping.clear()
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.1,), name="leukoedge-http", daemon=True
        )
        self._thread.start()
        logger.info("HTTP server on %s", self.url)
        return self

    def stop(self) -> None:
        """Stop serving; open MJPEG streams end within one frame interval."""
        self.stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = self._thread = None

    def __enter__(self) -> StatusServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what the routes answer ----------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """The provider's status, plus the active session's summary, storage health and the notice."""
        status = dict(self.provider.status())
        storage = self.provider.storage_health()
        if storage is not None:
            if "summary" not in status:
                status["summary"] = self.provider.active_summary()
            status.setdefault("storage", storage)
        status.setdefault("notice", RESEARCH_USE_NOTICE)
        return status

    def session(self, raw_id: str) -> dict[str, Any]:
        if not re.fullmatch(r"[0-9]{1,15}", raw_id):
            raise HttpError(400, f"bad session id {raw_id[:40]!r}: expected a positive integer")
        return self.provider.session_summary(int(raw_id))

    def check_host(self, header: str | None) -> None:
        """Bound to loopback, answer only requests for this machine's names (DNS rebinding)."""
        if is_loopback(self.host) and not host_allowed(header, self.host, self.limits.host_names):
            raise HttpError(421, f"unknown Host {str(header)[:80]!r}: add it to http.host_names")

    def check_token(self, header: str | None) -> None:
        if self.token is None:
            raise HttpError(403, "session control over HTTP is disabled: no API token is configured")
        scheme, _, given = (header or "").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            raise HttpError(401, "missing bearer token", {"WWW-Authenticate": 'Bearer realm="leukoedge"'})
        if not hmac.compare_digest(given.strip().encode(), self.token.encode()):
            raise HttpError(403, "wrong token")


class _Handler(BoundedRequestHandler):
    server: _Server
    server_version = "leukoedge"
    sys_version = ""
    timeout = 30

    # Answer even a garbled request line with a status line and headers (not HTTP/0.9's bare body).
    default_request_version = "HTTP/1.0"

    @property
    def app(self) -> StatusServer:
        return self.server.owner

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        logger.debug("%s %s", self.address_string(), format % args)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The base class's errors (bad request line, too long headers) as JSON like ours."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self._json(code, {"error": message or HTTPStatus(code).phrase})

    def __getattr__(self, name: str) -> Any:
        # Any other method (PUT, DELETE, OPTIONS, made-up ones) gets 405/404, never the base class's 501.
        if name.startswith("do_"):
            return self._other_method
        raise AttributeError(name)

    # -- dispatch ------------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._dispatch(self._get)

    def do_HEAD(self) -> None:
        self._dispatch(self._head)

    def _head(self, path: str) -> None:
        if path == "/stream.mjpeg":
            raise HttpError(405, "HEAD not allowed here", {"Allow": "GET"})
        self._get(path)  # _send leaves the body out for HEAD

    def do_POST(self) -> None:
        self._dispatch(self._post)

    def _other_method(self) -> None:
        self._dispatch(self._other_method_raise)

    def _other_method_raise(self, path: str) -> None:
        if path in _GET_ROUTES or (_SESSION_PATH.match(path) and path not in _POST_ROUTES):
            raise HttpError(405, f"{self.command} not allowed here", {"Allow": "GET"})
        if path in _POST_ROUTES:
            raise HttpError(405, f"{self.command} not allowed here", {"Allow": "POST"})
        raise HttpError(404, "not found")

    def _dispatch(self, route: Any) -> None:
        path = urlsplit(self.path).path
        try:
            self.app.check_host(self.headers.get("Host"))
            route(path)
        except ConnectionError as e:
            self.close_connection = True
            logger.debug("HTTP client %s went away: %s", self.address_string(), e)
        except LeukoEdgeError as e:
            # every error says its own status (errors.py); a refused request also ends the connection
            if isinstance(e, HttpError):
                self.close_connection = True
            self._json(e.http_status, {"error": str(e)}, e.http_headers)
        except Exception:
            logger.exception("HTTP %s %s failed", self.command, path)
            self._json(500, {"error": "internal error; see the daemon's log"})

    def _get(self, path: str) -> None:
        app = self.app
        if path in app.static:
            body, ctype = app.static[path]
            return self._send(200, body, ctype)
        if path == "/healthz":
            try:
                ok = bool(app.provider.healthy())
                reason = "" if ok else str(getattr(app.provider, "health_reason", str)())
            except Exception:
                logger.exception("health check failed")
                ok, reason = False, "the health check failed; see the daemon's log"
            answer = {"status": "ok" if ok else "unhealthy", **({"reason": reason} if reason else {})}
            return self._json(200 if ok else 503, answer)
        if path == "/metrics":
            text = prometheus.render(app.provider.metrics(), app.provider.healthy())
            return self._send(200, text.encode("utf-8"), prometheus.CONTENT_TYPE)
        if path == "/api/status":
            return self._json(200, app.status())
        if path == "/api/sessions":
            return self._json(200, app.provider.list_sessions())
        if path == "/stream.mjpeg":
            return self._stream()
        match = _SESSION_PATH.match(path)
        if match and path not in _POST_ROUTES:
            return self._json(200, app.session(match.group(1)))
        self._other_method_raise(path)

    def _post(self, path: str) -> None:
        if path not in _POST_ROUTES:
            return self._other_method_raise(path)
        # Read the body before answering anything: closing a socket with unread data resets it, and the
        # client would see a reset instead of our 401/403.
        raw = self._read_body()
        self.app.check_token(self.headers.get("Authorization"))
        body = parse_json_object(raw)
        if path == "/api/sessions/start":
            sample_id, note = body.get("sample_id"), body.get("note", "")
            if not isinstance(sample_id, str) or not isinstance(note, str):
                raise HttpError(400, 'expected JSON {"sample_id": string, "note": string}')
            return self._json(201, self.app.provider.start_session(sample_id, note))
        return self._json(200, self.app.provider.stop_session())

    def _read_body(self) -> bytes:
        raw_length = self.headers.get("Content-Length")
        if raw_length is None:
            raise HttpError(411, "Content-Length required")
        try:
            length = int(raw_length)
        except ValueError:
            raise HttpError(400, "bad Content-Length") from None
        if length < 0:
            raise HttpError(400, "bad Content-Length")
        if length > MAX_BODY:
            raise HttpError(413, f"request body over {MAX_BODY} bytes")
        return self.read_body(length) if length else b"{}"

    # -- responses -----------------------------------------------------------------------------
    def _send(self, status: int, body: bytes, ctype: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for key, value in {**SECURITY_HEADERS, **(headers or {})}.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, data: Any, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(json_safe(data), default=str, allow_nan=False).encode("utf-8")
        self._send(status, body, "application/json", headers)

    def _stream(self) -> None:
        """multipart/x-mixed-replace of the latest annotated frame, until the client or server goes."""
        app = self.app
        if not app.streams.acquire(blocking=False):
            raise HttpError(503, "too many open streams", {"Retry-After": "5"})
        try:
            # a reader that stops reading fills a small buffer and is dropped after the write timeout
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, STREAM_SNDBUF)
            self.connection.settimeout(app.limits.stream_write_timeout_s)
            self.send_response(200)
            self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
            for key, value in SECURITY_HEADERS.items():
                self.send_header(key, value)
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            self._stream_frames()
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError):
            logger.debug("stream client %s went away or stopped reading", self.address_string())
        finally:
            app.streams.release()

    def _stream_frames(self) -> None:
        app, last, last_sent = self.app, None, 0.0
        while not app.stopping.is_set():
            jpeg = app.provider.latest_jpeg()
            now = time.monotonic()
            # A new frame goes out at once; the same frame again once a second, so a vanished client
            # is noticed (by a failed write) even while the camera is stalled.
            if jpeg and (jpeg is not last or now - last_sent >= 1.0):
                head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
                self.wfile.write(head.encode("ascii") + jpeg + b"\r\n")
                self.wfile.flush()
                last, last_sent = jpeg, now
            app.stopping.wait(app.stream_interval)
        self.wfile.write(f"--{BOUNDARY}--\r\n".encode("ascii"))
