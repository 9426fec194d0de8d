"""Running the root's Python under qemu-user: which binary, which CPU model, what the guest sees.

Two qemu-user 7.2 behaviours matter and are handled here:

* its default CPU model ("max") advertises extensions whose emulation gave wrong int8 results
  (up to 44/256 off for a tiny model), so the Raspberry Pi's own cores are always named;
* it passes the host's x86 /proc/cpuinfo through, and the cpuinfo library in ai-edge-litert 2.2
  and later crashes on that while creating an Interpreter. With ``-L ROOT`` qemu serves
  ROOT/proc/cpuinfo instead, so the guest gets the text a Pi's kernel would give it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class PiCpu:
    """A Raspberry Pi core: qemu's name for it and what /proc/cpuinfo says on that board."""

    board: str
    board_revision: str = ""
    variant: str = ""
    part: str = ""
    revision: int = 0
    features: str = ""

    @property
    def short_board(self) -> str:
        return self.board.split(" Model")[0]


@dataclass(frozen=True)
class Arch:
    """A Debian architecture as the check uses it."""

    debian: str
    machine: str
    triplet: str
    qemu: str
    cpus: dict[str, PiCpu] = field(default_factory=dict)


ARCHES = {
    "arm64": Arch(
        "arm64",
        "aarch64",
        "aarch64-linux-gnu",
        "qemu-aarch64-static",
        {
            "cortex-a53": PiCpu(
                "Raspberry Pi 3 Model B Rev 1.2", "a02082", "0x0", "0xd03", 4, "fp asimd evtstrm crc32 cpuid"
            ),
            "cortex-a72": PiCpu(
                "Raspberry Pi 4 Model B Rev 1.1", "c03111", "0x0", "0xd08", 3, "fp asimd evtstrm crc32 cpuid"
            ),
            "cortex-a76": PiCpu(
                "Raspberry Pi 5 Model B Rev 1.0", "d04170", "0x4", "0xd0b", 1,
                "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop"
                " asimddp",
            ),
        },
    ),
    # qemu-arm has no 32-bit mode of the Pi 3/4/5 cores; Cortex-A7 (Pi 2) is the armv7 baseline.
    "armhf": Arch(
        "armhf", "armv7l", "arm-linux-gnueabihf", "qemu-arm-static", {"cortex-a7": PiCpu("Raspberry Pi 2")}
    ),
}  # fmt: skip


def board(arch: str, cpu: str) -> str:
    pi = ARCHES[arch].cpus.get(cpu)
    return pi.short_board if pi else "not a Raspberry Pi core"


def possible_cpus(text: str) -> list[int]:
    """CPU numbers of a /sys/devices/system/cpu/possible list such as ``0-3,6``."""
    cpus: list[int] = []
    for part in text.strip().split(","):
        if part:
            lo, _, hi = part.partition("-")
            cpus += range(int(lo), int(hi or lo) + 1)
    return cpus


def cpuinfo_text(pi: PiCpu, cpus: list[int]) -> str:
    """A Raspberry Pi (arm64 kernel) /proc/cpuinfo, one entry per host CPU number."""
    entry = (
        "processor\t: {n}\nBogoMIPS\t: 108.00\nFeatures\t: {f}\nCPU implementer\t: 0x41\n"
        "CPU architecture: 8\nCPU variant\t: {v}\nCPU part\t: {p}\nCPU revision\t: {r}\n\n"
    )
    body = "".join(entry.format(n=n, f=pi.features, v=pi.variant, p=pi.part, r=pi.revision) for n in cpus)
    return body + f"Revision\t: {pi.board_revision}\nModel\t\t: {pi.board}\n"


def write_cpuinfo(root: Path, arch: str, cpu: str) -> None:
    """Put the emulated board's /proc/cpuinfo into the root (removed for cores without one)."""
    target = root / "proc" / "cpuinfo"
    pi = ARCHES[arch].cpus.get(cpu)
    if pi is None or not pi.part:
        target.unlink(missing_ok=True)
        return
    try:
        cpus = possible_cpus(Path("/sys/devices/system/cpu/possible").read_text())
    except OSError:
        cpus = list(range(os.cpu_count() or 1))
    target.parent.mkdir(exist_ok=True)
    target.write_text(cpuinfo_text(pi, cpus))


def qemu_command(qemu: str, arch: str, root: Path, cpu: str, *args: str) -> list[str]:
    """The command that runs the root's python3.11 as ``cpu``; also writes that CPU's /proc/cpuinfo,
    so run one emulation at a time per root."""
    write_cpuinfo(root, arch, cpu)
    return [qemu, "-cpu", cpu, "-L", str(root), str(root / "usr/bin/python3.11"), "-s", *args]


def emulated_env(site: Path) -> dict[str, str]:
    """A clean environment for the emulated interpreter: only ``site`` on the path, no user site."""
    drop = ("PYTHON", "LEUKOEDGE_", "VIRTUAL_ENV", "QEMU_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env["PYTHONPATH"] = str(site)
    env["PYTHONNOUSERSITE"] = "1"
    return env
