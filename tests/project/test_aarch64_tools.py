"""The Raspberry Pi check's cheap parts: its command line, the plan, and the logic that decides PASS.

No emulation, downloads or model runs here (``make aarch64-check`` does those); these tests keep the
comparison rules and the requirement handling honest, since a check that always passes is worse
than none.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "tools" / "aarch64_check.sh"
sys.path.insert(0, str(REPO / "tools" / "aarch64"))

import compare  # noqa: E402
import emulate  # noqa: E402
import wheels  # noqa: E402
from sysroot import SetupError  # noqa: E402

#: leukoedge's own runtime requirement, as pyproject.toml declares it.
LITERT_REQ = (
    "ai-edge-litert>=1.2; platform_machine == 'x86_64' or platform_machine == 'aarch64' "
    "or platform_machine == 'arm64' or platform_machine == 'AMD64'"
)
REQUIRES = ["numpy>=1.23", "pillow>=9.4", "click>=8.1", "tomli>=2.0; python_version < '3.11'", LITERT_REQ]
REQUIRES += ["tflite-runtime>=2.14; extra == 'tflite'", "pytest>=7.4; extra == 'dev'"]


def run_script(*args: str, work: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "PYTHON": sys.executable, "WORK": str(work), "HOME": str(work)}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=60)


def cell(path: str, p: float, label: str | None = None, ok: bool = True) -> dict:
    label = label or ("malignant" if p >= 0.5 else "non_malignant")
    return {"path": path, "ok": ok, "label": label, "p_malignant": p, "threshold": 0.5}


# -- the command line --------------------------------------------------------------------------------
def test_help_lists_the_options(tmp_path: Path) -> None:
    proc = run_script("--help", work=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for option in ("--model", "--images", "--runtime", "--litert-version", "--arch", "--dry-run", "--cpu"):
        assert option in proc.stdout


def test_dry_run_shows_the_plan_and_touches_nothing(tmp_path: Path) -> None:
    work = tmp_path / "cache"
    proc = run_script("--dry-run", "--model", "bundle.json", "--images", "a.jpg", "b.jpg", work=work)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "ai-edge-litert==2.3.0" in out
    assert "qemu-aarch64-static -cpu cortex-a53" in out and "cortex-a72 cortex-a76" in out
    assert "-m leukoedge classify --format json --model" in out and out.count("a.jpg") == 2
    assert not work.exists()


def test_dry_run_armhf_uses_tflite_runtime_and_debian_numpy(tmp_path: Path) -> None:
    proc = run_script("--dry-run", "--arch", "armhf", "--model", "m.json", "--images", "a.jpg", work=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "tflite-runtime==2.14.0 numpy<2" in proc.stdout
    assert "python3-numpy" in proc.stdout and "qemu-arm-static -cpu cortex-a7" in proc.stdout


def test_armhf_refuses_ai_edge_litert(tmp_path: Path) -> None:
    proc = run_script("--dry-run", "--arch", "armhf", "--runtime", "ai_edge_litert", work=tmp_path)
    assert proc.returncode == 2
    assert "no armv7l wheels" in proc.stderr


# -- the comparison ---------------------------------------------------------------------------------
def test_identical_and_one_step_apart_pass() -> None:
    ref = [cell("/d/MYO/a.jpg", 0.78125), cell("/d/NGS/b.jpg", 0.25)]
    other = [cell("/d/MYO/a.jpg", 0.78125), cell("/d/NGS/b.jpg", round(0.25 + 1 / 256, 6))]
    rows = compare.compare_records(ref, other)
    assert [r.ok for r in rows] == [True, True]
    assert rows[1].steps == pytest.approx(1.0, abs=1e-3)
    assert compare.verdict(rows)[0] is True


def test_two_steps_or_a_label_change_fail() -> None:
    ref = [cell("/d/a.jpg", 0.5), cell("/d/b.jpg", 0.498)]
    other = [cell("/d/a.jpg", 0.5 + 2 / 256), cell("/d/b.jpg", 0.5)]
    rows = compare.compare_records(ref, other)
    assert "1/256" in (rows[0].problem or "")
    assert "label differs" in (rows[1].problem or "")
    passed, summary = compare.verdict(rows)
    assert not passed and summary.startswith("FAIL: 0 of 2")


def test_missing_failed_and_extra_images_fail() -> None:
    ref = [cell("/d/a.jpg", 0.1), cell("/d/b.jpg", 0.2)]
    other = [
        {"path": "/d/b.jpg", "ok": False, "error": "cannot read"},
        cell("/d/c.jpg", 0.3),
    ]
    problems = [r.problem for r in compare.compare_records(ref, other)]
    assert problems == ["missing here", "failed on here: cannot read", "not in the x86 output"]


def test_nothing_compared_is_a_failure() -> None:
    assert compare.verdict([])[0] is False


def test_field_cells_are_compared_one_by_one() -> None:
    def field(cells: list[dict]) -> dict:
        return {"path": "/f/x.jpg", "ok": True, "width": 640, "height": 480, "threshold": 0.5, "cells": cells}

    a = {"bbox": [1, 2, 30, 40], "edge": False, "label": "malignant", "p_malignant": 0.6}
    edge = {"bbox": [0, 0, 10, 10], "edge": True}
    rows = compare.compare_records([field([a, edge])], [field([a, edge])])
    assert [r.image for r in rows] == ["f/x.jpg#0", "f/x.jpg#1"] and all(r.ok for r in rows)
    moved = {**a, "bbox": [1, 2, 31, 40]}
    rows = compare.compare_records([field([a, edge])], [field([moved])])
    problems = " ".join(r.problem or "" for r in rows)
    assert "2 cells on x86, 1 here" in problems and "bbox" in problems


def test_parse_jsonl_skips_notices_and_logs() -> None:
    text = "Research use only\n" + json.dumps(cell("/a.jpg", 0.3)) + "\nINFO: delegate\n{not json\n"
    assert [r["path"] for r in compare.parse_jsonl(text)] == ["/a.jpg"]


def test_table_shows_both_sides_and_the_verdict() -> None:
    rows = compare.compare_records([cell("/d/MYO/a.jpg", 0.75)], [cell("/d/MYO/a.jpg", 0.5)])
    table = compare.format_table(rows)
    assert "MYO/a.jpg" in table and "malignant 0.7500" in table and "64.00" in table and "FAIL" in table


# -- requirements and the emulated install ----------------------------------------------------------
def test_runtime_pin_follows_the_declared_requirement() -> None:
    reqs = wheels.runtime_requirements(REQUIRES, "aarch64", "ai_edge_litert", "2.3.0", None)
    assert reqs == ["numpy>=1.23", "pillow>=9.4", "click>=8.1", "ai-edge-litert==2.3.0"]
    with pytest.raises(SetupError, match="outside the declared requirement"):
        wheels.runtime_requirements(REQUIRES, "aarch64", "ai_edge_litert", "1.1.0", None)


def test_tflite_runtime_install_drops_ai_edge_litert() -> None:
    reqs = wheels.runtime_requirements(REQUIRES, "aarch64", "tflite_runtime", "2.14.0", "<2", ("tflite",))
    assert reqs == ["numpy>=1.23", "pillow>=9.4", "click>=8.1", "tflite-runtime==2.14.0", "numpy<2"]


def test_markers_are_evaluated_for_the_pi() -> None:
    req = wheels.Requirement(LITERT_REQ)
    assert wheels.applies(req, "aarch64") and not wheels.applies(req, "armv7l")


def test_consistency_check_catches_a_numpy_2_only_dependency() -> None:
    dists = {
        "leukoedge": wheels.Dist("leukoedge", "0.1.0", ("numpy>=1.23", LITERT_REQ)),
        "ai-edge-litert": wheels.Dist("ai-edge-litert", "2.3.0", ("numpy>=1.23.2", "ml_dtypes")),
        "ml-dtypes": wheels.Dist("ml_dtypes", "0.6.0", ("numpy>=2.0.0",)),
        "numpy": wheels.Dist("numpy", "1.24.2", ()),
    }
    problems = wheels.check_consistent(dists, "leukoedge", "aarch64")
    assert problems == ["ml_dtypes needs numpy>=2.0.0, but numpy 1.24.2 is installed"]
    dists["ml-dtypes"] = wheels.Dist("ml_dtypes", "0.5.4", ("numpy>=1.23.3; python_version >= '3.11'",))
    assert wheels.check_consistent(dists, "leukoedge", "aarch64") == []
    assert wheels.check_consistent(dists, "leukoedge", "armv7l", frozenset({"ai-edge-litert"})) == []


def test_stand_in_wheels_carry_the_system_versions(tmp_path: Path) -> None:
    constraints = wheels.write_stand_ins([wheels.Dist("numpy", "1.24.2", ())], tmp_path)
    assert constraints.read_text() == "numpy==1.24.2\n"
    (stub,) = tmp_path.glob("*.whl")
    assert stub.name == "numpy-1.24.2-py3-none-any.whl"
    assert wheels.wheel_metadata(stub)[:2] == ("numpy", "1.24.2")


def test_unpack_wheel_moves_data_folders_into_the_site(tmp_path: Path) -> None:
    whl = tmp_path / "demo-1.0-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as zf:
        zf.writestr("demo/__init__.py", "")
        zf.writestr("demo-1.0.data/purelib/extra_mod.py", "X = 1\n")
    site = tmp_path / "site"
    wheels.unpack_wheel(whl, site)
    assert (site / "demo" / "__init__.py").exists() and (site / "extra_mod.py").exists()
    assert not list(site.glob("*.data"))


def test_newest_wheel_per_distribution_wins() -> None:
    names = ("numpy-1.26.4-cp311-x.whl", "numpy-2.4.6-cp311-x.whl", "click-8.1.0-py3-none-any.whl")
    chosen = [p.name for p in wheels.newest_per_dist([Path(n) for n in names])]
    assert chosen == ["click-8.1.0-py3-none-any.whl", "numpy-2.4.6-cp311-x.whl"]


# -- what the guest sees ----------------------------------------------------------------------------
def test_possible_cpu_lists() -> None:
    assert emulate.possible_cpus("0-3,6\n") == [0, 1, 2, 3, 6]
    assert emulate.possible_cpus("0") == [0]


def test_pi4_cpuinfo_names_the_cortex_a72(tmp_path: Path) -> None:
    emulate.write_cpuinfo(tmp_path, "arm64", "cortex-a72")
    text = (tmp_path / "proc" / "cpuinfo").read_text()
    assert text.count("CPU part\t: 0xd08") >= 1 and "Raspberry Pi 4" in text
    emulate.write_cpuinfo(tmp_path, "arm64", "max")  # not a Pi core: no made-up cpuinfo
    assert not (tmp_path / "proc" / "cpuinfo").exists()


def test_qemu_command_names_the_cpu_and_the_root(tmp_path: Path) -> None:
    cmd = emulate.qemu_command("qemu-aarch64-static", "arm64", tmp_path, "cortex-a76", "-c", "pass")
    assert cmd[:5] == ["qemu-aarch64-static", "-cpu", "cortex-a76", "-L", str(tmp_path)]
    assert cmd[-2:] == ["-c", "pass"] and "0xd0b" in (tmp_path / "proc" / "cpuinfo").read_text()
