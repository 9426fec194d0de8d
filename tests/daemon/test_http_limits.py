"""The status server under hostile clients, over real sockets on loopback: header floods, slow
headers, too many connections, stalled live-view readers, malformed bodies, dropped clients and
foreign Host names."""

from __future__ import annotations

import http.client
import logging
import os
import select
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.provider import FakeProvider

from leukoedge.daemon.config import HttpConfig, config_from_dict
from leukoedge.daemon.http.limits import HttpLimits
from leukoedge.daemon.http.server import StatusServer
from leukoedge.daemon.store.database import Store
from leukoedge.errors import ConfigError

TESTS = Path(__file__).resolve().parents[1]
TOKEN = "t0ken-for-tests"


def vm_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def exchange(port: int, data: bytes) -> bytes:
    """Send ``data`` on a fresh connection; everything the server answers until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def _get(port: int) -> bytes:
    return exchange(port, b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
def test_a_header_flood_leaves_the_server_s_memory_near_idle(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "support.http_process", str(tmp_path / "state")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
    )
    try:
        port = int(proc.stdout.readline())
        for _ in range(20):  # warm up: threads, buffers, the first answers
            assert _get(port).startswith(b"HTTP/1.0 200")
        time.sleep(0.5)
        idle = vm_rss_mb(proc.pid)
        socks, answers = [], []
        for _ in range(40):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            socks.append(s)
        line = b"X-Fill: " + b"a" * 65000 + b"\r\n"
        alive = set(range(len(socks)))
        peak = idle
        for _ in range(100):
            for i in sorted(alive):
                try:
                    socks[i].sendall(line)
                except OSError:
                    alive.discard(i)
            peak = max(peak, vm_rss_mb(proc.pid))
        for _ in range(10):  # held while the sockets stay open
            time.sleep(0.1)
            peak = max(peak, vm_rss_mb(proc.pid))
        for s in socks:
            try:
                answers.append(s.recv(64)[:12])
            except OSError:
                answers.append(b"")
            s.close()
        assert peak - idle < 20, f"RSS grew from {idle:.1f} to {peak:.1f} MB"
        # each flooding connection was refused (431: headers too large; 503: over the connection cap)
        assert set(answers) <= {b"HTTP/1.0 431", b"HTTP/1.0 503", b""}, set(answers)
        assert _get(port).startswith(b"HTTP/1.0 200")  # and it still answers
    finally:
        proc.stdin.close()
        proc.wait(timeout=10)


@pytest.fixture
def store(tmp_path: Path):
    with Store(tmp_path / "state") as s:
        yield s


@pytest.fixture
def provider(store: Store) -> FakeProvider:
    return FakeProvider(store)


def serve(provider: FakeProvider, host: str = "127.0.0.1", **keys: object) -> StatusServer:
    limits = HttpLimits.from_config(HttpConfig(**keys))
    return StatusServer(host, 0, provider, token=TOKEN, stream_fps=50, limits=limits)


def closed_by_server(s: socket.socket, wait_s: float) -> bool:
    """Whether the server has closed (or reset) the connection, waiting at most ``wait_s``."""
    readable, _, _ = select.select([s], [], [], wait_s)
    if not readable:
        return False
    try:
        return s.recv(65536) == b""
    except ConnectionError:
        return True


def test_connections_beyond_the_cap_are_refused_at_once(provider: FakeProvider) -> None:
    with serve(provider, max_connections=4, request_timeout_s=60) as srv:
        idle = [socket.create_connection(("127.0.0.1", srv.port), timeout=5) for _ in range(4)]
        extra = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        answer = extra.recv(65536)  # without sending anything: the server answers and closes
        assert answer.startswith(b"HTTP/1.0 503") and b"too many connections" in answer
        assert extra.recv(65536) == b""
        extra.close()
        idle.pop().close()  # a slot comes free once its connection ends
        deadline = time.monotonic() + 10
        while not _get(srv.port).startswith(b"HTTP/1.0 200"):
            assert time.monotonic() < deadline, "a freed slot was not reused"
            time.sleep(0.05)
        for s in idle:
            s.close()


def test_a_slow_header_client_is_cut_off(provider: FakeProvider) -> None:
    with serve(provider, request_timeout_s=1.0) as srv:
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        sent, cut = 0, False
        while sent < 60 and not cut:  # one byte every 0.25 s: each read is quick, the request never ends
            try:
                s.sendall(b"a")
                sent += 1
                cut = closed_by_server(s, 0.25)
            except ConnectionError:
                cut = True
        s.close()
        assert cut, f"still connected after {sent} bytes"
        assert sent < 60
        assert _get(srv.port).startswith(b"HTTP/1.0 200")


def test_headers_over_the_byte_limit_get_431(provider: FakeProvider) -> None:
    with serve(provider, max_header_bytes=8192) as srv:
        head = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        lines = [b"X-Fill-%d: %s\r\n" % (i, b"a" * 1000) for i in range(9)]  # each under 64 kB
        answer = exchange(srv.port, head + b"".join(lines) + b"\r\n")
        assert answer.startswith(b"HTTP/1.0 431") and b"over 8192 bytes" in answer
        under = exchange(srv.port, head + b"".join(lines[:4]) + b"\r\n")  # under the limit: answered
        assert under.startswith(b"HTTP/1.0 200")


class BigFrames(FakeProvider):
    """Frames of 100 kB, a fresh object each time, so every frame interval sends one."""

    frame = b"\xff\xd8" + bytes(100_000)

    def latest_jpeg(self) -> bytes | None:
        return bytes(bytearray(self.frame))


def test_stalled_live_view_readers_are_dropped(store: Store) -> None:
    with serve(BigFrames(store), max_streams=2, stream_write_timeout_s=2.0) as srv:
        stalled = []
        for _ in range(2):  # connect, ask for the stream, never read, with a small receive buffer
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.connect(("127.0.0.1", srv.port))
            s.sendall(b"GET /stream.mjpeg HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            stalled.append(s)
        time.sleep(0.2)
        status, _ = open_stream(srv)
        assert status == 503  # the stalled readers hold both streams
        deadline = time.monotonic() + 15
        while True:
            status, part = open_stream(srv)
            if status == 200:
                break
            assert time.monotonic() < deadline, "stalled readers still hold every stream"
            time.sleep(0.1)
        assert part.startswith(b"\xff\xd8")
        for s in stalled:
            s.close()


def open_stream(srv: StatusServer) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    try:
        conn.request("GET", "/stream.mjpeg")
        resp = conn.getresponse()
        if resp.status != 200:
            return resp.status, resp.read()
        while not resp.fp.readline().startswith(b"Content-Length:"):
            pass
        resp.fp.readline()
        return 200, resp.fp.read(16)
    finally:
        conn.close()


def post_raw(srv: StatusServer, body: bytes, length: int | None = None, half_close: bool = False) -> bytes:
    head = (
        f"POST /api/sessions/start HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body) if length is None else length}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as s:
        s.sendall(head.encode() + body)
        if half_close:
            s.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize(
    ("body", "length", "half_close", "message"),
    [
        (b"[" * 30_000 + b"]" * 30_000, None, False, b"nests too deeply"),
        (b'{"sample_id": "\\ud800"}', None, False, b"lone surrogate"),
        (b'{"sample_id": "A", "note": "\\udfff"}', None, False, b"lone surrogate"),
        (b'{"sample_id": "A"}', 100, True, b"shorter than its Content-Length: 18 of 100"),
        (b'{"sample_id": "A"}', 100, False, b"shorter than its Content-Length: 18 of 100"),
    ],
    ids=["deep", "surrogate", "surrogate-note", "short-closed", "short-stalled"],
)
def test_malformed_bodies_get_400_with_a_reason(
    provider: FakeProvider, store: Store, body: bytes, length: int | None, half_close: bool, message: bytes
) -> None:
    with serve(provider, request_timeout_s=1.0) as srv:
        answer = post_raw(srv, body, length, half_close)
        assert answer.startswith(b"HTTP/1.0 400"), answer[:200]
        assert message in answer
        assert store.active_session() is None  # nothing was started from a broken body
        assert _get(srv.port).startswith(b"HTTP/1.0 200")


def test_clients_that_drop_before_their_answer_are_one_debug_line(
    provider: FakeProvider, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture
) -> None:
    requests = [
        b"GET /nope HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        b"POST /api/sessions/start HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 999999999\r\n\r\n",
        b"POST /api/sessions/stop HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        b"\x16\x03\x01garbage\r\n\r\n",
    ]
    clients = 24
    caplog.set_level(logging.DEBUG, logger="leukoedge")
    with serve(provider) as srv:
        for i in range(clients):
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
            s.sendall(requests[i % len(requests)])
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()  # a reset, before the server answers
        time.sleep(1.0)
        assert _get(srv.port).startswith(b"HTTP/1.0 200")
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Exception occurred" not in err
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    gone = [r for r in caplog.records if "went away" in r.getMessage()]
    assert 0 < len(gone) <= clients


def test_a_loopback_server_answers_only_its_own_host_names(provider: FakeProvider) -> None:
    with serve(provider, host_names="microscope.lan, Lab-Pi.local:8080") as srv:
        for host, expected in [
            ("127.0.0.1", 200),
            (f"127.0.0.1:{srv.port}", 200),
            (f"localhost:{srv.port}", 200),
            ("LOCALHOST.", 200),
            (f"[::1]:{srv.port}", 200),
            ("microscope.lan", 200),
            (f"Microscope.LAN:{srv.port}", 200),
            ("lab-pi.local", 200),
            ("rebound.example.com", 421),
            (f"rebound.example.com:{srv.port}", 421),
            ("127.0.0.1.rebound.example", 421),
            ("", 421),
        ]:
            answer = exchange(srv.port, f"GET /api/status HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            assert answer.startswith(f"HTTP/1.0 {expected}".encode()), (host, answer[:80])
        no_host = exchange(srv.port, b"GET /api/status HTTP/1.0\r\n\r\n")  # HTTP/1.0: answered
        assert no_host.startswith(b"HTTP/1.0 200")
    with serve(provider, host="0.0.0.0") as srv:  # reachable from the network: names are not checked
        answer = exchange(srv.port, b"GET /healthz HTTP/1.1\r\nHost: microscope.example\r\n\r\n")
        assert answer.startswith(b"HTTP/1.0 200")


def test_http_limits_are_checked_in_the_configuration() -> None:
    with pytest.raises(ConfigError) as raised:
        config_from_dict({"http": {"max_streams": 8, "max_connections": 8, "request_timeout_s": 0}})
    paths = [path for path, _ in raised.value.errors]
    assert "http.request_timeout_s" in paths
    with pytest.raises(ConfigError, match="http.max_streams: must be < http.max_connections"):
        config_from_dict({"http": {"max_streams": 8, "max_connections": 8}})
    config = config_from_dict({"http": {"max_streams": 1, "host_names": "a.lan,b.lan:80"}})
    assert HttpLimits.from_config(config.http).host_names == ("a.lan", "b.lan")
