"""The systemd unit verifies, rates OK on systemd's exposure scale, and its companions are current.

``systemd-analyze verify`` also checks that ExecStart's program exists. The venv path
(/opt/leukoedge/venv) is not there on a build machine, so verification runs against a small root
folder holding the host's system units, the unit itself and stand-in executables (``--root``); a
second test shows that, without it, the missing program is the only complaint.
"""

from __future__ import annotations

import os
import re
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from leukoedge.daemon.config import load_config

REPO = Path(__file__).resolve().parents[2]
SYSTEMD = REPO / "systemd"
UNIT = SYSTEMD / "leukoedge.service"
ANALYZE = shutil.which("systemd-analyze")
EXEC = "/opt/leukoedge/venv/bin/leukoedge"

needs_analyze = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze not installed (apt-get install systemd)"
)


def analyze(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([ANALYZE, *args], capture_output=True, text=True, timeout=60, check=False)


def make_root(tmp_path: Path, unit_text: str, name: str = "leukoedge.service") -> Path:
    """A folder that looks enough like an installed system for ``systemd-analyze verify --root``."""
    root = tmp_path / "root"
    host_units = next(p for p in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")) if p.is_dir())
    shutil.copytree(host_units, root / "usr/lib/systemd/system", symlinks=True)
    for program in (EXEC, "/usr/bin/kill"):
        path = root / program.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)
    (root / "bin").symlink_to("usr/bin")
    (root / "etc/systemd/system").mkdir(parents=True)
    (root / "etc/systemd/system" / name).write_text(unit_text)
    return root


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


@pytest.mark.systemd
@needs_analyze
def test_unit_verifies_cleanly(tmp_path: Path) -> None:
    root = make_root(tmp_path, UNIT.read_text())
    result = analyze("verify", f"--root={root}", "leukoedge.service")
    assert result.returncode == 0 and (result.stdout + result.stderr).strip() == "", (
        result.stdout + result.stderr
    )


@pytest.mark.systemd
@needs_analyze
def test_verify_catches_mistakes(tmp_path: Path) -> None:
    """The check has teeth: a typo in a key or a value is reported (verify still exits 0 for these)."""
    broken = UNIT.read_text().replace("Type=notify", "Type=notfy").replace("ProtectHome=", "ProtectHomee=")
    root = make_root(tmp_path, broken, "broken.service")
    output = (lambda r: r.stdout + r.stderr)(analyze("verify", f"--root={root}", "broken.service"))
    assert "notfy" in output and "ProtectHomee" in output


@pytest.mark.systemd
@needs_analyze
def test_without_a_root_only_the_venv_program_is_missing() -> None:
    result = analyze("verify", str(UNIT))
    problems = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    if Path(EXEC).exists():
        assert problems == []
    else:
        assert problems and all(EXEC in line and "not executable" in line for line in problems), problems


@pytest.mark.systemd
@needs_analyze
def test_security_exposure_is_ok() -> None:
    result = analyze("security", "--offline=yes", str(UNIT))
    match = re.search(r"Overall exposure level for leukoedge\.service: ([0-9.]+) (\w+)", result.stdout)
    assert match, result.stdout[-2000:] + result.stderr
    assert float(match.group(1)) <= 2.0 and match.group(2) == "OK"


def test_unit_settings_that_matter() -> None:
    s = unit_settings()
    assert s["Type"] == ["notify"] and s["NotifyAccess"] == ["main"]
    assert s["ExecStart"] == [f"{EXEC} daemon --config /etc/leukoedge/leukoedge.toml"]
    assert s["User"] == ["leukoedge"] and s["SupplementaryGroups"] == ["video"]
    assert s["StateDirectory"] == ["leukoedge"] and s["ConfigurationDirectory"] == ["leukoedge"]
    assert s["Restart"] == ["on-failure"] and "WatchdogSec" in s
    assert s["RestartPreventExitStatus"] == ["2"]  # a configuration error is not retried every 5 s
    assert s["DevicePolicy"] == ["closed"]
    assert s["DeviceAllow"] == ["char-video4linux rw", "char-media rw", "char-dma_heap rw"]
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp", "MemoryDenyWriteExecute", "LockPersonality"):
        assert s[key] == ["yes"], key
    assert s["ProtectSystem"] == ["strict"] and s["CapabilityBoundingSet"] == [""]
    assert s["SystemCallFilter"][0] == "@system-service"


def test_sysusers_creates_the_service_user() -> None:
    lines = [
        ln for ln in (SYSTEMD / "leukoedge.sysusers.conf").read_text().splitlines() if ln and ln[0] != "#"
    ]
    assert [ln.split()[:2] for ln in lines] == [["u", "leukoedge"]]


def test_example_config_is_current_and_valid() -> None:
    """systemd/leukoedge.toml.example is what render_example.py prints for today's config schema."""
    script = runpy.run_path(str(SYSTEMD / "render_example.py"))
    expected = script["HEADER"] + script["render_example"](script["service_config"]())
    assert (SYSTEMD / "leukoedge.toml.example").read_text() == expected, (
        "regenerate: python systemd/render_example.py > systemd/leukoedge.toml.example"
    )
    config = load_config(SYSTEMD / "leukoedge.toml.example")
    assert config.source.uri == "picamera2://" and config.store.state_dir == "/var/lib/leukoedge"


def test_install_script_runs_the_documented_steps() -> None:
    assert subprocess.run(["sh", "-n", str(SYSTEMD / "install.sh")], check=False).returncode == 0
    env = {**os.environ, "DRY_RUN": "1"}
    result = subprocess.run(
        ["sh", str(SYSTEMD / "install.sh"), "leukoedge"], capture_output=True, text=True, env=env, check=False
    )
    assert result.returncode == 0, result.stderr
    steps = [line[2:] for line in result.stdout.splitlines() if line.startswith("+ ")]
    expected = [
        "python3 -m venv --system-site-packages /opt/leukoedge/venv",
        "/opt/leukoedge/venv/bin/pip install --upgrade leukoedge",
        "systemd-sysusers /etc/sysusers.d/leukoedge.conf",
        "/opt/leukoedge/venv/bin/leukoedge config check /etc/leukoedge/leukoedge.toml",
        "systemctl enable --now leukoedge.service",
    ]
    positions = [next(i for i, step in enumerate(steps) if step == want) for want in expected]
    assert positions == sorted(positions)


MDWE_SCRIPT = """
import ctypes, mmap, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN (Linux 6.3+)
    sys.exit(77)
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    sys.exit("writable+executable memory was still allowed")
except OSError:
    pass
import numpy as np
from leukoedge.inference.bundle import load_bundle, load_default_bundle
from leukoedge.inference.classifier import CellClassifier
bundle = load_bundle(sys.argv[1]) if len(sys.argv) > 1 else load_default_bundle()
cells = np.random.default_rng(0).integers(0, 256, (8, 64, 64, 3), dtype=np.uint8)
p = CellClassifier(bundle).predict_proba(cells)
assert p.shape[0] == 8 and np.all((p >= 0) & (p <= 1)), p
print("ok")
"""


def test_tflite_runs_without_writable_executable_memory() -> None:
    """MemoryDenyWriteExecute=yes is safe for the TFLite runtime: inference under the kernel's own
    W^X lock (PR_SET_MDWE, what systemd's seccomp filter also enforces) still works."""
    from leukoedge.inference.bundle import default_bundle_path

    if not default_bundle_path().exists():
        pytest.skip("the bundled model is not built")
    result = subprocess.run(
        [sys.executable, "-c", MDWE_SCRIPT], capture_output=True, text=True, timeout=120, check=False
    )
    if result.returncode == 77:
        pytest.skip("this kernel has no PR_SET_MDWE (Linux 6.3+)")
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
