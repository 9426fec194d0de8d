"""The status server over real loopback HTTP: routes, token, malformed requests, metrics, MJPEG."""

from __future__ import annotations

import http.client
import io
import json
import re
import socket
import time
from pathlib import Path

import pytest
from PIL import Image
from support.provider import FakeProvider, make_cell

from leukoedge.daemon.config import HttpConfig
from leukoedge.daemon.http.limits import HttpLimits
from leukoedge.daemon.http.server import StatusServer, is_loopback
from leukoedge.daemon.store.database import Store
from leukoedge.errors import ConfigError

TOKEN = "t0ken-for-tests"


@pytest.fixture
def store(tmp_path: Path):
    with Store(tmp_path / "state") as s:
        yield s


@pytest.fixture
def provider(store: Store) -> FakeProvider:
    return FakeProvider(store)


@pytest.fixture
def server(provider: FakeProvider):
    srv = StatusServer("127.0.0.1", 0, provider, token=TOKEN, stream_fps=20).start()
    yield srv
    srv.stop()


def limits(**keys: object) -> HttpLimits:
    return HttpLimits.from_config(HttpConfig(**keys))


def request(
    srv: StatusServer, method: str, path: str, body: bytes | None = None, headers: dict | None = None
):
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def get_json(srv: StatusServer, path: str):
    status, headers, body = request(srv, "GET", path)
    assert headers["Content-Type"] == "application/json"
    return status, json.loads(body)


def post(srv: StatusServer, path: str, data: object, token: str | None = TOKEN):
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    status, _, body = request(srv, "POST", path, json.dumps(data).encode(), headers)
    return status, json.loads(body)


def raw(srv: StatusServer, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        s.sendall(data)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_health_status_and_sessions(server: StatusServer, provider: FakeProvider, store: Store) -> None:
    assert get_json(server, "/healthz") == (200, {"status": "ok"})
    provider.is_healthy = False
    assert get_json(server, "/healthz") == (503, {"status": "unhealthy"})
    sid = store.start_session("S-9")
    for i in range(5):
        store.add_cell(sid, make_cell(i, blast=i == 0))
    status, data = get_json(server, "/api/status")
    assert status == 200 and data["weird"] is None  # NaN becomes null: strict JSON
    assert data["summary"]["cells"] == 5 and data["summary"]["blast_pct"] == pytest.approx(20.0)
    assert "Research use only" in data["notice"] and data["storage"]["crops_mode"] == "blasts"
    assert get_json(server, "/api/sessions")[1][0]["sample_id"] == "S-9"
    status, detail = get_json(server, f"/api/sessions/{sid}")
    assert status == 200 and detail["session"]["id"] == sid and detail["blasts"] == 1


def test_session_control_needs_the_token(server: StatusServer, store: Store) -> None:
    status, body = post(server, "/api/sessions/start", {"sample_id": "A"}, token=None)
    assert status == 401 and "token" in body["error"]
    assert post(server, "/api/sessions/start", {"sample_id": "A"}, token="nope")[0] == 403
    assert store.active_session() is None
    status, session = post(server, "/api/sessions/start", {"sample_id": "A", "note": "n"})
    assert status == 201 and session["sample_id"] == "A" and store.active_session()["id"] == session["id"]
    status, body = post(server, "/api/sessions/start", {"sample_id": "B"})
    assert status == 409 and "still active" in body["error"]
    assert post(server, "/api/sessions/start", {"sample_id": "  "})[0] == 400  # empty after strip
    status, summary = post(server, "/api/sessions/stop", {})
    assert status == 200 and summary["session"]["active"] is False
    assert post(server, "/api/sessions/stop", {})[0] == 409


def test_without_a_token_control_is_off_and_only_loopback_binds(provider: FakeProvider) -> None:
    with StatusServer("127.0.0.1", 0, provider, token=None) as srv:
        status, body = post(srv, "/api/sessions/start", {"sample_id": "A"}, token="anything")
        assert status == 403 and "disabled" in body["error"]
    for host in ("0.0.0.0", "192.168.1.20", "::", "microscope.local"):
        with pytest.raises(ConfigError, match="without a token"):
            StatusServer(host, 0, provider, token=None)
        with pytest.raises(ConfigError):
            StatusServer(host, 0, provider, token="")
    StatusServer("0.0.0.0", 0, provider, token=TOKEN)  # allowed with a token (not started)
    assert is_loopback("localhost") and is_loopback("::1") and is_loopback("127.0.0.2")


def test_malformed_requests_get_4xx_and_the_server_survives(server: StatusServer, provider) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    cases = [
        ("POST", "/api/sessions/start", b"{not json", auth, 400),
        ("POST", "/api/sessions/start", b"[1, 2]", auth, 400),
        ("POST", "/api/sessions/start", b'{"sample_id": 5}', auth, 400),
        ("POST", "/api/sessions/start", b"\xff\xfe", auth, 400),
        ("GET", "/nope", None, {}, 404),
        ("GET", "/api/sessions/abc", None, {}, 400),
        ("GET", "/api/sessions/99999999999999999999999", None, {}, 400),
        ("GET", "/api/sessions/999", None, {}, 404),
        ("GET", "/api/sessions/start", None, {}, 405),
        ("POST", "/api/status", b"{}", auth, 405),
        ("DELETE", "/api/sessions/1", None, {}, 405),
        ("PUT", "/metrics", b"x", {}, 405),
        ("BREW", "/coffee", None, {}, 404),
    ]
    for method, path, body, headers, expected in cases:
        status, resp_headers, _ = request(server, method, path, body, headers)
        assert status == expected, (method, path, status)
        assert "Access-Control-Allow-Origin" not in resp_headers
    huge = raw(
        server,
        b"POST /api/sessions/start HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 999999999999\r\n\r\n",
    )
    assert huge.startswith(b"HTTP/1.0 413")
    no_length = raw(
        server, f"POST /api/sessions/stop HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode()
    )
    assert no_length.startswith(b"HTTP/1.0 411")
    assert raw(server, b"\x16\x03\x01garbage\r\n\r\n").startswith(b"HTTP/1.0 400")
    provider.fail_status = True
    assert request(server, "GET", "/api/status")[0] == 500
    provider.fail_status = False
    assert get_json(server, "/healthz")[0] == 200


def test_pages_have_types_and_security_headers(server: StatusServer) -> None:
    for path, ctype in (("/", "text/html"), ("/app.js", "text/javascript"), ("/style.css", "text/css")):
        status, headers, body = request(server, "GET", path)
        assert status == 200 and headers["Content-Type"].startswith(ctype) and body
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert "default-src 'none'" in headers["Content-Security-Policy"]
        assert "Access-Control-Allow-Origin" not in headers
    status, headers, body = request(server, "HEAD", "/healthz")
    assert status == 200 and body == b"" and headers["Content-Type"] == "application/json"
    assert request(server, "HEAD", "/stream.mjpeg")[0] == 405
    page = request(server, "GET", "/")[2].decode()
    assert "Research use only" in page and not re.search(r"(src|href)=\"(https?:)?//", page)


METRIC_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})? (\S+)$")


def parse_prometheus(text: str) -> tuple[dict[str, str], list[tuple[str, dict[str, str], float]]]:
    """A tiny parser of the 0.0.4 text format: TYPE per family, and (name, labels, value) samples."""
    types, samples = {}, []
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            types[name] = kind
        elif line.startswith("# HELP ") or not line:
            continue
        else:
            m = METRIC_LINE.match(line)
            assert m, f"not a sample line: {line!r}"
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(3) or ""))
            samples.append((m.group(1), labels, float(m.group(4))))
    return types, samples


def test_metrics_are_prometheus_text(server: StatusServer) -> None:
    status, headers, body = request(server, "GET", "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    types, samples = parse_prometheus(body.decode())
    for name, _, _ in samples:
        assert name.startswith("leukoedge_")
        family = re.sub(r"_(bucket|sum|count)$", "", name) if name.startswith("leukoedge_inference") else name
        assert family in types, name
    for name, kind in types.items():
        assert (kind == "counter") == name.endswith("_total"), name
    values = {name: value for name, labels, value in samples if not labels}
    assert values["leukoedge_frames_dropped_total"] == 10 and values["leukoedge_healthy"] == 1
    assert types["leukoedge_inference_seconds"] == "histogram"
    buckets = [(lab["le"], v) for n, lab, v in samples if n == "leukoedge_inference_seconds_bucket"]
    counts = [v for _, v in buckets]
    assert counts == sorted(counts) and buckets[-1][0] == "+Inf"
    assert buckets[-1][1] == values["leukoedge_inference_seconds_count"] == 5
    assert dict(buckets)["0.001"] == 1 and dict(buckets)["0.005"] == 3
    assert values["leukoedge_inference_seconds_sum"] == pytest.approx(2.0388)


def read_parts(resp: http.client.HTTPResponse, n: int) -> list[bytes]:
    parts = []
    while len(parts) < n:
        line = resp.fp.readline()
        if line.startswith(b"Content-Length:"):
            length = int(line.split(b":")[1])
            resp.fp.readline()  # blank line after the part headers
            parts.append(resp.fp.read(length))
    return parts


def test_mjpeg_stream_yields_jpegs_and_ends_when_the_server_stops(provider: FakeProvider) -> None:
    srv = StatusServer("127.0.0.1", 0, provider, stream_fps=20).start()
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    conn.request("GET", "/stream.mjpeg")
    resp = conn.getresponse()
    assert resp.status == 200
    assert resp.getheader("Content-Type") == "multipart/x-mixed-replace; boundary=leukoedgeframe"
    for part in read_parts(resp, 3):
        assert part[:2] == b"\xff\xd8"
        assert Image.open(io.BytesIO(part)).size == (320, 240)
    # A client that goes away frees its thread; the server keeps serving.
    conn.close()
    assert get_json(srv, "/healthz")[0] == 200
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    conn.request("GET", "/stream.mjpeg")
    resp = conn.getresponse()
    read_parts(resp, 1)
    srv.stop()
    deadline = time.monotonic() + 5
    tail = b""
    while time.monotonic() < deadline and not tail.endswith(b"--leukoedgeframe--\r\n"):
        chunk = resp.fp.read1(65536) if hasattr(resp.fp, "read1") else resp.fp.read(1)
        if not chunk:
            break
        tail = (tail + chunk)[-64:]
    assert tail.endswith(b"--leukoedgeframe--\r\n")
    conn.close()


def test_too_many_streams_get_503(provider: FakeProvider) -> None:
    with StatusServer("127.0.0.1", 0, provider, stream_fps=20, limits=limits(max_streams=1)) as srv:
        first = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
        first.request("GET", "/stream.mjpeg")
        read_parts(first.getresponse(), 1)
        assert request(srv, "GET", "/stream.mjpeg")[0] == 503
        first.close()


def test_port_in_use_is_a_config_error(provider: FakeProvider) -> None:
    with StatusServer("127.0.0.1", 0, provider) as srv, pytest.raises(ConfigError, match="cannot listen"):
        StatusServer("127.0.0.1", srv.port, provider).start()


def _error_classes() -> list[type]:
    from leukoedge import errors

    return [
        cls
        for cls in vars(errors).values()
        if isinstance(cls, type)
        and issubclass(cls, errors.LeukoEdgeError)
        and cls.__module__ == errors.__name__
    ]


#: What each error answers: the statuses the CLI and the HTTP API have always given them.
EXPECTED_STATUS = {
    "LeukoEdgeError": 503,
    "DataError": 503,
    "ImageError": 503,
    "ModelError": 503,
    "BundleError": 503,
    "RuntimeMissingError": 503,
    "CameraError": 503,
    "SourceUnavailable": 503,
    "ConfigError": 400,
    "SynthError": 400,
    "SessionError": 409,
    "NoSuchSession": 404,
    "StoreUnavailable": 503,
    "HttpError": 418,  # an HttpError answers with the status it was raised with
}


def test_every_error_carries_its_status_and_the_server_answers_with_it(
    server: StatusServer, provider: FakeProvider, monkeypatch
) -> None:
    classes = _error_classes()
    assert sorted(c.__name__ for c in classes) == sorted(EXPECTED_STATUS)
    for cls in classes:
        error = cls(418, "refused", {"X-Why": "a test"}) if cls.__name__ == "HttpError" else cls("went wrong")
        assert cls.exit_code == 2, cls  # the exit status every library error has always had
        assert error.http_status == EXPECTED_STATUS[cls.__name__], cls

        def fail(error: Exception = error) -> dict:
            raise error

        monkeypatch.setattr(provider, "status", fail)
        status, headers, body = request(server, "GET", "/api/status")
        assert status == EXPECTED_STATUS[cls.__name__], cls
        assert json.loads(body) == {"error": str(error)}
        assert headers.get("X-Why") == ("a test" if cls.__name__ == "HttpError" else None)


def test_the_command_line_exits_with_the_error_s_exit_code(monkeypatch, capsys) -> None:
    from leukoedge import cli
    from leukoedge.errors import SessionError

    class Odd(SessionError):
        exit_code = 7

    def boom(**_: object) -> None:
        raise Odd("no such thing")

    monkeypatch.setattr(cli.cli, "main", boom)
    with pytest.raises(SystemExit) as stopped:
        cli.main([])
    assert stopped.value.code == 7
    assert "Error: no such thing" in capsys.readouterr().err


def test_sessions_need_a_store(provider: FakeProvider) -> None:
    provider.store = None
    with StatusServer("127.0.0.1", 0, provider) as srv:
        assert get_json(srv, "/api/sessions") == (503, {"error": "no session store"})
        assert get_json(srv, "/api/sessions/1") == (503, {"error": "no session store"})
        status, body = get_json(srv, "/api/status")
        assert status == 200 and "summary" not in body and "storage" not in body
