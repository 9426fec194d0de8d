"""Wheels for the emulated check: which to fetch, fetching them, and unpacking them into a site.

The requirements come from the leukoedge wheel's own metadata, with its environment markers
evaluated as on a Raspberry Pi (Linux, aarch64 or armv7l, CPython 3.11), so the check installs what
``pip install leukoedge`` would install there. Only the runtime is pinned (``--litert-version``),
and the pin must satisfy the declared requirement.
"""

from __future__ import annotations

import re
import shutil
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from email.parser import Parser
from pathlib import Path

try:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    from packaging.version import Version
except ImportError:  # pip always vendors packaging
    from pip._vendor.packaging.requirements import Requirement  # type: ignore[no-redef]
    from pip._vendor.packaging.utils import canonicalize_name  # type: ignore[no-redef]
    from pip._vendor.packaging.version import Version  # type: ignore[no-redef]

from sysroot import SetupError, run

#: Marker environment of Raspberry Pi OS Bookworm (platform_machine is set per architecture).
PI_ENV = {
    "implementation_name": "cpython",
    "implementation_version": "3.11.2",
    "os_name": "posix",
    "platform_machine": "aarch64",
    "platform_python_implementation": "CPython",
    "platform_release": "6.6.0",
    "platform_system": "Linux",
    "platform_version": "#1 SMP PREEMPT",
    "python_full_version": "3.11.2",
    "python_version": "3.11",
    "sys_platform": "linux",
    "extra": "",
}


def platforms(machine: str) -> list[str]:
    """Wheel platforms Bookworm's glibc 2.36 accepts on ``machine``; pip does not expand these itself."""
    return [*(f"manylinux_2_{minor}_{machine}" for minor in range(36, 16, -1)), f"manylinux2014_{machine}"]


RUNTIME_DISTS = {"ai_edge_litert": "ai-edge-litert", "tflite_runtime": "tflite-runtime"}


@dataclass(frozen=True)
class Dist:
    """An installed distribution: its normalized name, version and requirements (marker-filtered)."""

    name: str
    version: str
    requires: tuple[str, ...]


def wheel_metadata(wheel: Path) -> tuple[str, str, list[str]]:
    """(name, version, Requires-Dist lines) of a wheel, read from its METADATA."""
    with zipfile.ZipFile(wheel) as zf:
        meta = next(n for n in zf.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n))
        msg = Parser().parsestr(zf.read(meta).decode("utf-8"))
    return msg["Name"], msg["Version"], msg.get_all("Requires-Dist") or []


def applies(req: Requirement, machine: str, extras: tuple[str, ...] = ()) -> bool:
    """Whether a requirement's marker holds on the Pi (for no extra, or one of ``extras``)."""
    if req.marker is None:
        return True
    env = {**PI_ENV, "platform_machine": machine}
    return any(req.marker.evaluate({**env, "extra": e}) for e in ("", *extras))


def runtime_requirements(
    requires: list[str],
    machine: str,
    runtime: str,
    version: str,
    numpy_spec: str | None,
    extras: tuple[str, ...] = (),
) -> list[str]:
    """The project's requirements on the Pi with the runtime pinned to ``version``.

    For ``tflite_runtime`` the ai-edge-litert requirement is dropped: that is the install on armv7
    and older systems, where the marker leaves ai-edge-litert out. Raises SetupError when the pin is
    outside what the project declares, so the check never passes with a version users cannot get.
    """
    dist = RUNTIME_DISTS[runtime]
    out: list[str] = []
    declared = None
    for line in requires:
        req = Requirement(line)
        name = canonicalize_name(req.name)
        if name in ("ai-edge-litert", "tflite-runtime"):
            if name == dist and applies(req, machine, extras):
                declared = req
            continue
        if applies(req, machine, extras):
            out.append(f"{req.name}{req.specifier}")
    if declared is not None and not declared.specifier.contains(version, prereleases=True):
        raise SetupError(f"{dist}=={version} is outside the declared requirement {declared}")
    out.append(f"{dist}=={version}")
    if numpy_spec:
        out.append(f"numpy{numpy_spec}")
    return out


def pip_download(
    python: str, machine: str, requirements: list[str], dest: Path, system: Sequence[Dist] = ()
) -> list[Path]:
    """Download cp311 wheels (binary only) for ``machine`` of ``requirements`` and their dependencies.

    ``system`` are distributions the OS provides (Debian's numpy 1.24.2 ...): pip resolves against
    exactly those versions, as pip in a ``--system-site-packages`` venv keeps them when they satisfy,
    through metadata-only stand-in wheels (there are no armv7l numpy wheels to resolve with).
    """
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [python, "-m", "pip", "download", "--disable-pip-version-check", "--only-binary=:all:"]
    for platform in platforms(machine):
        cmd += ["--platform", platform]
    if system:
        stubs = dest.parent / f"{dest.name}-system"
        constraints = write_stand_ins(system, stubs)
        cmd += ["--find-links", str(stubs), "-c", str(constraints)]
    cmd += ["--python-version", "3.11", "--implementation", "cp", "-d", str(dest), *requirements]
    run(cmd)
    return newest_per_dist(sorted(dest.glob("*.whl")))


def write_stand_ins(dists: Sequence[Dist], folder: Path) -> Path:
    """Metadata-only wheels pinning the OS's versions, and a constraints file naming them."""
    folder.mkdir(parents=True, exist_ok=True)
    for d in dists:
        stem = f"{canonicalize_name(d.name).replace('-', '_')}-{d.version}"
        meta = "".join(f"Requires-Dist: {r}\n" for r in d.requires)
        with zipfile.ZipFile(folder / f"{stem}-py3-none-any.whl", "w") as zf:
            zf.writestr(
                f"{stem}.dist-info/METADATA",
                f"Metadata-Version: 2.1\nName: {d.name}\nVersion: {d.version}\n{meta}",
            )
            zf.writestr(
                f"{stem}.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
            )
            zf.writestr(f"{stem}.dist-info/RECORD", "")
    constraints = folder / "constraints.txt"
    constraints.write_text("".join(f"{d.name}=={d.version}\n" for d in dists))
    return constraints


def newest_per_dist(wheels: list[Path]) -> list[Path]:
    """One wheel per distribution, the newest version, so stale downloads in the cache are ignored."""
    best: dict[str, tuple[Version, Path]] = {}
    for w in wheels:
        name, version = w.name.split("-")[:2]
        key = canonicalize_name(name)
        if key not in best or Version(version) > best[key][0]:
            best[key] = (Version(version), w)
    return [p for _, p in sorted(best.values(), key=lambda t: t[1].name)]


def unpack_wheel(wheel: Path, site: Path) -> None:
    """Install a wheel by unzipping it (what pip does, minus scripts and RECORD bookkeeping)."""
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    for data in site.glob("*.data"):
        for scheme in ("purelib", "platlib"):
            src = data / scheme
            if src.is_dir():
                for item in src.iterdir():
                    target = site / item.name
                    if target.exists():
                        shutil.rmtree(target) if target.is_dir() else target.unlink()
                    shutil.move(str(item), target)
        shutil.rmtree(data)


def installed(folders: list[Path]) -> dict[str, Dist]:
    """Distributions in these folders (dist-info or egg-info); the first folder wins, as on sys.path."""
    found: dict[str, Dist] = {}
    for folder in folders:
        for meta in [*folder.glob("*.dist-info/METADATA"), *folder.glob("*.egg-info/PKG-INFO")]:
            msg = Parser().parsestr(meta.read_text(encoding="utf-8", errors="replace"))
            requires = msg.get_all("Requires-Dist") or []
            requires_txt = meta.parent / "requires.txt"
            if not requires and requires_txt.exists():
                requires = _egg_requires(requires_txt.read_text())
            dist = Dist(msg["Name"], msg["Version"], tuple(requires))
            found.setdefault(canonicalize_name(dist.name), dist)
    return found


def _egg_requires(text: str) -> list[str]:
    """The unconditional requirements of an egg-info requires.txt (sections are extras: skipped)."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("["):
            break
        if line:
            out.append(line)
    return out


def check_consistent(
    dists: dict[str, Dist], top: str, machine: str, ignore: frozenset[str] = frozenset()
) -> list[str]:
    """``pip check`` for the emulated site: unmet requirements of ``top`` and everything it needs.

    ``ignore`` names distributions left out on purpose (ai-edge-litert in a tflite-runtime install).
    """
    problems, todo, seen = [], [canonicalize_name(top)], set()
    while todo:
        name = todo.pop()
        if name in seen or name not in dists:
            continue
        seen.add(name)
        for line in dists[name].requires:
            req = Requirement(line)
            if not applies(req, machine) or canonicalize_name(req.name) in ignore:
                continue
            dep = dists.get(canonicalize_name(req.name))
            if dep is None:
                problems.append(f"{dists[name].name} needs {req}, which is not installed")
            elif not req.specifier.contains(dep.version, prereleases=True):
                problems.append(f"{dists[name].name} needs {req}, but {dep.name} {dep.version} is installed")
            else:
                todo.append(canonicalize_name(req.name))
    return problems
