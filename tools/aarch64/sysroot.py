"""A Debian Bookworm root (arm64 or armhf) with Python 3.11, built from .debs without binfmt_misc or chroot.

apt runs with its own lists, cache and sources under the work folder (``-oAPT::Architecture=arm64``
and friends), so the host's apt state is never touched and any Debian or Ubuntu host gets the same
Bookworm packages Raspberry Pi OS Bookworm is built on. The .debs are unpacked with ``dpkg -x``: no
maintainer scripts run, so the few symlinks that update-alternatives would make are made here.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
import time
from pathlib import Path

logger = logging.getLogger(__name__)

#: The interpreter and the C++ runtime the TFLite wheels link against.
BASE_PACKAGES = ("python3.11", "libstdc++6", "libgcc-s1")
#: What Raspberry Pi OS Bookworm ships from apt for a ``--system-site-packages`` venv.
SYSTEM_PYTHON_PACKAGES = ("python3-numpy", "python3-pil", "python3-click")
#: Pulled in by dependency recursion but not needed to run Python (tools, perl, mime tables).
SKIP_PACKAGES = frozenset(
    {
        "dpkg", "tar", "install-info", "perl", "perl-base", "perl-modules-5.36", "libperl5.36",
        "mailcap", "mime-support", "debconf", "debconf-2.0", "cdebconf", "python3-distutils",
        "python3-lib2to3", "libpython3-stdlib", "python3", "python3-minimal", "readline-common",
    }
)  # fmt: skip
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_SECURITY_MIRROR = "http://deb.debian.org/debian-security"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
SUITE = "bookworm"
TRIPLETS = {"arm64": "aarch64-linux-gnu", "armhf": "arm-linux-gnueabihf"}
#: Lists are refreshed after this long (security updates); .debs already fetched are kept.
LISTS_MAX_AGE_S = 86400


class SetupError(RuntimeError):
    """A step of building the emulated system failed; the message says which and how to fix it."""


def run(cmd: list[str], cwd: Path | None = None) -> str:
    """Run a command, returning stdout; on failure raise SetupError with its output's tail."""
    logger.info("$ %s", " ".join(cmd))
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise SetupError(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{tail}")
    return proc.stdout


class Apt:
    """apt-get / apt-cache for one foreign Debian architecture, with private state under ``base``."""

    def __init__(self, base: Path, arch: str, mirror: str = DEFAULT_MIRROR) -> None:
        self.base = base
        self.arch = arch
        self.mirror = mirror

    def options(self) -> list[str]:
        b = self.base
        return [
            f"-oAPT::Architecture={self.arch}",
            f"-oAPT::Architectures={self.arch}",
            f"-oDir::State::Lists={b / 'lists'}",
            f"-oDir::State::status={b / 'status'}",
            f"-oDir::Cache={b / 'cache'}",
            f"-oDir::Etc::SourceList={b / 'sources.list'}",
            "-oDir::Etc::SourceParts=/dev/null",
            "-oDebug::NoLocking=1",
        ]

    def sources(self) -> str:
        opts = f"arch={self.arch}" + (f" signed-by={KEYRING}" if Path(KEYRING).exists() else "")
        return "".join(
            f"deb [{opts}] {url} {suite} main\n"
            for url, suite in (
                (self.mirror, SUITE),
                (self.mirror, f"{SUITE}-updates"),
                (DEFAULT_SECURITY_MIRROR, f"{SUITE}-security"),
            )
        )

    def update(self) -> None:
        """``apt-get update``, retried once (a mirror mid-sync fails with a hash mismatch).

        If an index still fails but the main suite's is there, go on with a warning: apt then uses
        the lists it has, which is enough to run Python (perhaps without the latest security fix).
        """
        for sub in ("lists/partial", "cache/archives/partial"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        (self.base / "status").touch()
        (self.base / "sources.list").write_text(self.sources())
        stamp = self.base / "lists" / ".updated"
        if stamp.exists() and time.time() - stamp.stat().st_mtime < LISTS_MAX_AGE_S:
            return
        try:
            run(["apt-get", *self.options(), "update"])
        except SetupError:
            time.sleep(10)
            try:
                run(["apt-get", *self.options(), "update"])
            except SetupError as e:
                if not list((self.base / "lists").glob(f"*_dists_{SUITE}_main_binary-{self.arch}_Packages*")):
                    raise
                print(f"      warning: going on with the lists apt has; {str(e).splitlines()[1]}")
                return
        stamp.touch()

    def closure(self, packages: tuple[str, ...]) -> list[str]:
        """The packages and their recursive Depends/PreDepends, minus SKIP_PACKAGES and virtual names."""
        out = run(
            [
                "apt-cache", *self.options(), "depends", "--recurse", "--no-recommends", "--no-suggests",
                "--no-conflicts", "--no-breaks", "--no-replaces", "--no-enhances", *packages,
            ]
        )  # fmt: skip
        names = {line.strip() for line in out.splitlines() if line and not line.startswith((" ", "<"))}
        return sorted(n for n in names if n not in SKIP_PACKAGES or n in packages)

    def download(self, packages: list[str], dest: Path) -> list[Path]:
        """The .debs of ``packages`` in ``dest``, downloading only those not there yet."""
        dest.mkdir(parents=True, exist_ok=True)
        have = {p.name.split("_")[0] for p in dest.glob("*.deb")}
        missing = [p for p in packages if p not in have]
        if missing:
            run(["apt-get", *self.options(), "download", *missing], cwd=dest)
        return sorted(p for p in dest.glob("*.deb") if p.name.split("_")[0] in packages)


def link_alternatives(root: Path, arch: str) -> None:
    """Make the BLAS/LAPACK links update-alternatives would (Debian's numpy needs libblas.so.3)."""
    libdir = root / "usr" / "lib" / TRIPLETS[arch]
    for sub in ("blas", "lapack", "openblas-pthread"):
        for lib in sorted((libdir / sub).glob("lib*.so.3")):
            link = libdir / lib.name
            if not link.exists():
                link.symlink_to(Path(sub) / lib.name)


def root_path(work: Path, arch: str, system_packages: bool) -> Path:
    return work / f"root-{arch}-{'system' if system_packages else 'base'}"


def build_root(work: Path, arch: str, system_packages: bool) -> Path:
    """Unpack a root with Python 3.11 (and Debian's numpy/pillow/click if asked); reused once built."""
    wanted = BASE_PACKAGES + (SYSTEM_PYTHON_PACKAGES if system_packages else ())
    root = root_path(work, arch, system_packages)
    stamp = root / ".leukoedge-root"
    key = hashlib.sha256(" ".join(wanted).encode()).hexdigest()
    if stamp.exists() and stamp.read_text().strip() == key:
        return root
    apt = Apt(work / f"apt-{arch}", arch)
    apt.update()
    debs = apt.download(apt.closure(wanted), work / f"debs-{arch}")
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    for deb in debs:
        run(["dpkg", "-x", str(deb), str(root)])
    link_alternatives(root, arch)
    python = root / "usr/bin/python3.11"
    if not python.exists():
        raise SetupError(f"{python} missing after unpacking {len(debs)} packages")
    stamp.write_text(key + "\n")
    print(f"      built {root.name}: {len(debs)} {arch} packages")
    return root
