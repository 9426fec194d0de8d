"""What one client may cost the HTTP server: connections, header bytes, time, and Host names.

The server runs on a Raspberry Pi with 1 GB of memory and answers anyone who can reach the port,
token or not, so every resource a request can take is bounded before the request is understood:

- at most ``max_connections`` connections are served at once; the next one gets a short 503 from
  the accepting thread and is closed, without a thread or a buffer of its own;
- a request's line and headers together are at most ``max_header_bytes`` (431 beyond);
- a request's line, headers and body must all arrive within ``request_timeout_s`` of the server
  starting to wait for it, however slowly they trickle (a per-read timeout would let one byte
  every few seconds hold a connection for ever);
- when bound to loopback, the ``Host`` header must name this machine (or one of ``host_names``),
  so a web page whose name was rebound to 127.0.0.1 cannot read the API (DNS rebinding).

A client that goes away mid-request is one debug line, never a traceback.
"""

from __future__ import annotations

import io
import json
import logging
import socket
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from leukoedge.daemon.config import HttpConfig
from leukoedge.errors import HttpError

logger = logging.getLogger(__name__)

#: Names a loopback-bound server always answers to.
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
#: Kernel send buffer of a live-view stream: small, so a reader that stops reading blocks the next
#: frame's write (and is dropped after the write timeout) instead of the kernel queueing megabytes.
STREAM_SNDBUF = 128 * 1024


@dataclass(frozen=True)
class HttpLimits:
    """The bounds above, and the live view's: streams at once and how long a stalled reader keeps one."""

    max_connections: int
    max_header_bytes: int
    request_timeout_s: float
    max_streams: int
    stream_write_timeout_s: float
    host_names: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, config: HttpConfig | None = None) -> HttpLimits:
        """The limits of an ``[http]`` section (the defaults without one)."""
        c = config or HttpConfig()
        names = tuple(n for n in (host_name(part) for part in c.host_names.split(",")) if n)
        return cls(
            c.max_connections, c.max_header_bytes, c.request_timeout_s, c.max_streams,
            c.stream_write_timeout_s, names,
        )  # fmt: skip


def host_name(value: str) -> str:
    """The name in a Host header (or a configured name): lower case, without port, brackets, final dot."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:].partition("]")[0]
    if value.count(":") == 1:
        value = value.partition(":")[0]
    return value.rstrip(".")


def host_allowed(header: str | None, bind_host: str, names: tuple[str, ...]) -> bool:
    """Whether a loopback-bound server answers a request with this Host header (none: HTTP/1.0)."""
    if header is None:
        return True
    name = host_name(header)
    return name in LOOPBACK_NAMES or name == host_name(bind_host) or name in names


class HeadTooLarge(Exception):
    """The request line and headers are over the byte limit."""


class Deadline:
    """A point in time by which a request must have arrived, applied to every read of its socket."""

    def __init__(self, sock: socket.socket, seconds: float) -> None:
        self.sock, self.seconds = sock, seconds
        self.at = time.monotonic() + seconds

    def arm(self) -> None:
        """Let the next read wait no longer than the time that is left; TimeoutError if none is."""
        left = self.at - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"request not complete within {self.seconds:g} s")
        self.sock.settimeout(left)

    def read_exact(self, rfile: io.BufferedIOBase, n: int) -> bytes:
        """Up to ``n`` bytes, fewer only if the client closes or the deadline passes first."""
        chunks, got = [], 0
        try:
            while got < n:
                self.arm()
                chunk = rfile.read1(n - got)  # at most one recv
                if not chunk:
                    break
                chunks.append(chunk)
                got += len(chunk)
        except TimeoutError:
            pass
        return b"".join(chunks)


class HeadReader:
    """Stands in for a handler's ``rfile`` while the request line and headers are read.

    ``readline`` takes what the buffered socket file already holds or one ``recv`` at a time, each
    bounded by the :class:`Deadline`, and counts every byte against ``max_bytes``.
    """

    def __init__(self, rfile: io.BufferedIOBase, deadline: Deadline, max_bytes: int) -> None:
        self.rfile, self.deadline, self.left = rfile, deadline, max_bytes
        self.max_bytes = max_bytes

    def readline(self, limit: int = -1) -> bytes:
        line = bytearray()
        while limit < 0 or len(line) < limit:
            self.deadline.arm()
            buffered = self.rfile.peek(1)  # type: ignore[attr-defined]  # at most one recv
            if not buffered:
                break
            end = buffered.find(b"\n")
            take = len(buffered) if end < 0 else end + 1
            if limit >= 0:
                take = min(take, limit - len(line))
            if take > self.left:
                raise HeadTooLarge(f"request line and headers over {self.max_bytes} bytes")
            line += self.rfile.read(take)
            self.left -= take
            if line.endswith(b"\n"):
                break
        return bytes(line)


class CappedHTTPServer(ThreadingHTTPServer):
    """A thread per connection, at most ``limits.max_connections`` at once; the rest get a quick 503."""

    daemon_threads = True
    _last_refusal_log = 0.0

    def __init__(self, address: tuple[str, int], handler: Any, limits: HttpLimits) -> None:
        self.limits = limits
        self._slots = threading.BoundedSemaphore(limits.max_connections)
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self._refuse(request, client_address)
            return
        try:
            super().process_request(request, client_address)  # starts the connection's thread
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def _refuse(self, request: socket.socket, client_address: Any) -> None:
        body = b'{"error": "too many connections"}'
        head = (
            "HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n"
        )
        try:
            request.setblocking(False)  # the accepting thread never waits on a client
            request.send(head.encode("ascii") + body)
        except OSError:
            pass
        self.shutdown_request(request)
        now = time.monotonic()
        if now - self._last_refusal_log >= 60:
            self._last_refusal_log = now
            logger.warning(
                "HTTP: %d connections open (http.max_connections); refusing more, e.g. from %s",
                self.limits.max_connections,
                client_address[0],
            )
        else:
            logger.debug("HTTP: refused a connection from %s: too many open", client_address[0])

    def handle_error(self, request: Any, client_address: Any) -> None:
        """What escapes a handler: a vanished client is a debug line, anything else an error and trace."""
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError)):
            logger.debug("HTTP client %s went away: %s", client_address[0], error)
        else:
            logger.error("HTTP request from %s failed", client_address[0], exc_info=True)


class BoundedRequestHandler(BaseHTTPRequestHandler):
    """A request handler whose requests are bounded in header bytes and in total time (``server.limits``)."""

    timeout = 30  # per socket operation once the request is in (writing the answer)

    def handle_one_request(self) -> None:
        limits: HttpLimits = self.server.limits  # type: ignore[attr-defined]
        self.deadline = Deadline(self.connection, limits.request_timeout_s)
        self.plain_rfile = self.rfile
        self.rfile = HeadReader(self.plain_rfile, self.deadline, limits.max_header_bytes)  # type: ignore[assignment]
        try:
            super().handle_one_request()  # a timeout there ends the connection with a debug line
        except HeadTooLarge as e:
            self.end_head()
            self.requestline, self.request_version, self.command = "", "HTTP/1.0", ""
            self.send_error(431, str(e))
        except ConnectionError as e:
            self.close_connection = True
            logger.debug("HTTP client %s went away: %s", self.address_string(), e)
        finally:
            self.end_head()

    def parse_request(self) -> bool:
        ok = super().parse_request()
        self.end_head()
        return ok

    def end_head(self) -> None:
        """Back to the socket's own file and per-operation timeout once the headers are in."""
        self.rfile = self.plain_rfile
        self.connection.settimeout(self.timeout)

    def read_body(self, length: int) -> bytes:
        """The body, all ``length`` bytes of it by the request's deadline, or a 400."""
        raw = self.deadline.read_exact(self.rfile, length)
        if len(raw) < length:
            raise HttpError(400, f"the body is shorter than its Content-Length: {len(raw)} of {length} bytes")
        return raw


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """A request body as a JSON object; anything else (however malformed) is a 400 that says why."""
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise HttpError(400, "the body is not valid JSON") from None
    except RecursionError:
        raise HttpError(400, "the body's JSON nests too deeply") from None
    if not isinstance(body, dict):
        raise HttpError(400, "the body must be a JSON object")
    try:
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise HttpError(400, "the body's strings are not valid Unicode (a lone surrogate)") from None
    return body
