"""The daemon's configuration: defaults, validation with key paths, the example, and `config check`."""

from __future__ import annotations

import subprocess
import sys

import pytest

from leukoedge.cli import main
from leukoedge.daemon.config import (
    DaemonConfig,
    apply_overrides,
    config_from_dict,
    load_config,
    render_example,
)
from leukoedge.daemon.sources import parse_source_uri
from leukoedge.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def test_defaults_without_a_file():
    config = load_config(None)
    assert config == DaemonConfig()
    assert config.pipeline.queue_size == 2
    assert config.store.crops == "blasts"


def test_every_problem_is_reported_with_its_key_path():
    with pytest.raises(ConfigError) as info:
        config_from_dict(
            {
                "source": {"fps": "fast", "colour": "red"},
                "tracker": {"aggregate": "max", "min_frames": 0},
                "camera": {},
                "http": {"enabled": 1},
            }
        )
    paths = dict(info.value.errors)
    assert set(paths) == {
        "source.fps",
        "source.colour",
        "tracker.aggregate",
        "tracker.min_frames",
        "camera",
        "http.enabled",
    }
    assert paths["source.colour"] == "unknown key"
    assert "mean_logit" in paths["tracker.aggregate"]
    assert ">= 1" in paths["tracker.min_frames"]


def test_cross_checks():
    with pytest.raises(ConfigError) as info:
        config_from_dict({"source": {"main_width": 1920, "backoff_s": 5.0, "backoff_max_s": 1.0}})
    assert {p for p, _ in info.value.errors} == {"source.main_width", "source.backoff_max_s"}


def test_rendered_example_parses_back_to_the_defaults():
    text = render_example()
    assert config_from_dict(tomllib.loads(text)) == DaemonConfig()
    # every key is documented by a comment line above it
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if " = " in line and not line.startswith("#"):
            assert lines[i - 1].startswith("# "), line


def test_overrides_are_validated_like_the_file():
    config = apply_overrides(DaemonConfig(), {"http.port": 9000, "source.uri": "synthetic://?fps=5"})
    assert config.http.port == 9000
    with pytest.raises(ConfigError) as info:
        apply_overrides(DaemonConfig(), {"http.port": 70000})
    assert info.value.errors[0][0] == "http.port"


def test_source_uri_parameters_override_source_keys():
    scheme, path, cfg = parse_source_uri("replay:///data/frames?fps=10&loop=1")
    assert (scheme, path, cfg.fps, cfg.loop) == ("replay", "/data/frames", 10.0, True)
    scheme, path, cfg = parse_source_uri("v4l2:///dev/video2?width=1280&height=960")
    assert (scheme, path, cfg.width, cfg.height) == ("v4l2", "/dev/video2", 1280, 960)
    for bad in ("ftp://x", "synthetic://?speed=fast", "synthetic://?fps=x", "replay:///x?loop=maybe"):
        with pytest.raises(ConfigError):
            parse_source_uri(bad)


def test_config_check_command(tmp_path, capsys):
    good = tmp_path / "good.toml"
    good.write_text('[source]\nuri = "synthetic://?seed=3"\n[store]\ncrops = "all"\n')
    main(["config", "check", str(good)])
    assert "good.toml: OK" in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text('[source]\nfps = -1\n[tracker]\nmin_frame = 3\n[store]\ncrops = "some"\n')
    with pytest.raises(SystemExit) as failed:
        main(["config", "check", str(bad)])
    assert failed.value.code == 1
    err = capsys.readouterr().err
    assert "source.fps: must be >= 0" in err
    assert "tracker.min_frame: unknown key" in err
    assert "store.crops: must be one of all, blasts, none" in err
    broken = tmp_path / "broken.toml"
    broken.write_text("[source\n")
    with pytest.raises(SystemExit) as failed:
        main(["config", "check", str(broken)])
    assert failed.value.code == 1
    assert "not valid TOML" in capsys.readouterr().err


# -- finite numbers ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("section", "key"),
    [
        ("model", "threshold"),
        ("store", "disk_budget_mb"),
        ("store", "min_free_mb"),
        ("source", "stall_timeout_s"),
        ("source", "fps"),
        ("tracker", "gate"),
        ("pipeline", "duration_s"),
    ],
)
@pytest.mark.parametrize("bad", ["nan", "inf", "-inf", "+nan"])
def test_non_finite_numbers_are_config_errors(tmp_path, capsys, section, key, bad):
    path = tmp_path / "bad.toml"
    path.write_text(f"[{section}]\n{key} = {bad}\n")
    with pytest.raises(SystemExit) as failed:
        main(["config", "check", str(path)])
    assert failed.value.code == 1
    assert f"{section}.{key}: must be a finite number" in capsys.readouterr().err


def test_non_finite_numbers_from_uri_and_command_line_are_refused():
    with pytest.raises(ConfigError, match="source.fps: must be a finite number"):
        parse_source_uri("synthetic://?fps=nan")
    with pytest.raises(ConfigError) as info:
        apply_overrides(DaemonConfig(), {"pipeline.duration_s": float("inf")})
    assert info.value.errors == [("pipeline.duration_s", "must be a finite number, not inf")]


# -- config check runs the daemon's start checks ----------------------------------------------------
def _check(tmp_path, text: str | bytes) -> tuple[int, str]:
    """``leukoedge config check`` in a real process: (exit status, stderr)."""
    path = tmp_path / "leukoedge.toml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    run = subprocess.run(
        [sys.executable, "-m", "leukoedge", "config", "check", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "Traceback" not in run.stderr, run.stderr
    return run.returncode, run.stderr


def _token_file(tmp_path, token: str) -> str:
    path = tmp_path / "token"
    path.write_text(token + "\n")
    return str(path)


def test_config_check_refuses_what_the_daemon_refuses_at_start(tmp_path):
    long_id = "S" * 201
    cases = {
        '[source]\nuri = "synthetic://?bogus=1"\n': "source.uri?bogus: unknown parameter 'bogus'",
        '[source]\nuri = "ftp://example.org/x"\n': "source.uri: unknown scheme 'ftp'",
        '[source]\nuri = "replay://"\n': "source.uri: replay:// needs a path",
        '[source]\nuri = "synthetic://?fps=nan"\n': "source.fps: must be a finite number",
        '[http]\nhost = "0.0.0.0"\n': "http.token_file: required when http.host (0.0.0.0) is not a loopback",
        f'[http]\ntoken_file = "{_token_file(tmp_path, "x")}"\n': "token too short: 1 of at least 16",
        f'[http]\ntoken_file = "{tmp_path / "none"}"\n': "http.token_file: cannot read",
        f'[session]\nsample_id = "{long_id}"\n': "session.sample_id: sample id (max 200)",
        '[session]\nsample_id = "A\\u0007B"\n': "session.sample_id: the sample id must not contain control",
    }
    for text, message in cases.items():
        code, err = _check(tmp_path, text)
        assert code == 1 and message in err, (text, err)
    token = _token_file(tmp_path, "0123456789abcdef")
    code, err = _check(tmp_path, f'[http]\nhost = "0.0.0.0"\ntoken_file = "{token}"\n')
    assert code == 0, err


def test_config_check_of_a_non_utf8_file_is_a_clear_error(tmp_path):
    code, err = _check(tmp_path, b'[session]\nnote = "caf\xe9"\n')
    assert code == 1 and "not UTF-8 text" in err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[source]\nuri = "synthetic://?bogus=1"\n', "unknown parameter 'bogus'"),
        ('[source]\nuri = "ftp://example.org/x"\n', "unknown scheme 'ftp'"),
        (b'[session]\nnote = "caf\xe9"\n', "not UTF-8 text"),
        ('[http]\nhost = "0.0.0.0"\n', "required when http.host (0.0.0.0) is not a loopback"),
    ],
)
def test_daemon_refuses_the_same_at_start_with_exit_2(tmp_path, text, message):
    """A configuration error, not a camera failure retried for a minute; systemd does not restart 2."""
    path = tmp_path / "leukoedge.toml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    state = tmp_path / "state"
    run = subprocess.run(
        [sys.executable, "-m", "leukoedge", "daemon", "--config", str(path), "--state-dir", str(state)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 2, run.stderr
    assert message in run.stderr and "Traceback" not in run.stderr
    assert not (state / "leukoedge.db").exists()  # refused before anything was opened
