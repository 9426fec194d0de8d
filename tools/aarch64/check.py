"""Does leukoedge's edge side install and classify the same on a Raspberry Pi? Checked without one.

Builds a Debian Bookworm root (arm64, or armhf for 32-bit) with Python 3.11 from .debs, installs
the leukoedge wheel built from this checkout plus its edge dependencies as wheels for that
architecture (no TensorFlow), runs ``python -m leukoedge classify --format json`` there under
qemu-user as the Pi 3, Pi 4 and Pi 5 cores, runs the same command on this machine, and compares labels and
probabilities (at most one uint8 step, 1/256, apart).

Exit status: 0 PASS, 1 the outputs differ, 2 setup failed. Timings under emulation mean nothing and
are not reported. Usage: ``bash tools/aarch64_check.sh --help``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import compare  # noqa: E402
import emulate  # noqa: E402
import sysroot  # noqa: E402
import wheels  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
DEFAULT_MODEL = REPO / "edge" / "models" / "leukonet_int8.json"
#: Pinned so reruns compare like with like; any version the pyproject allows can be passed.
DEFAULT_LITERT = "2.3.0"
DEFAULT_TFLITE_RUNTIME = "2.14.0"
CELLS_PER_CLASS = 4
#: What Debian's python3-numpy/pil/click provide in --system-packages mode (not unpacked from wheels).
SYSTEM_DISTS = ("numpy", "pillow", "click")
PROBE = (
    "import json, platform, importlib.metadata as m\n"
    "def v(d):\n"
    "    try:\n        return m.version(d)\n    except m.PackageNotFoundError:\n        return None\n"
    "import numpy\n"
    "print(json.dumps({'machine': platform.machine(), 'python': platform.python_version(),"
    " 'numpy': numpy.__version__, 'numpy_from': numpy.__file__, 'pillow': v('pillow'),"
    " 'ai-edge-litert': v('ai-edge-litert'), 'tflite-runtime': v('tflite-runtime'),"
    " 'ml_dtypes': v('ml_dtypes'), 'leukoedge': v('leukoedge')}))\n"
)


def default_data_dir() -> Path:
    return Path(os.environ.get("LEUKOEDGE_DATA", REPO.parent / "shared" / "data"))


def default_work_dir() -> Path:
    return Path(os.environ.get("WORK") or Path.home() / ".cache" / "leukoedge-aarch64")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="aarch64_check.sh",
        description="Classify a few images on an emulated Raspberry Pi (Debian Bookworm, Python 3.11, "
        "qemu-user) and on this machine, and compare: same labels, probabilities within one 1/256 step.",
        epilog="Exit status: 0 PASS, 1 outputs differ, 2 setup failed. See docs/raspberry-pi.md.",
    )
    p.add_argument("--model", metavar="BUNDLE", help=f"model bundle (default: {DEFAULT_MODEL})")
    p.add_argument("--images", nargs="+", metavar="IMG", help="single-cell images (default: 4 per class)")
    p.add_argument("--field-images", nargs="*", metavar="IMG", help="whole fields for --field (default: 1)")
    p.add_argument("--data", type=Path, default=default_data_dir(), help="data folder for the defaults")
    p.add_argument(
        "--arch",
        choices=sorted(emulate.ARCHES),
        default="arm64",
        help="arm64 (64-bit OS, default) or armhf (32-bit OS: tflite_runtime and Debian's numpy)",
    )
    p.add_argument("--runtime", choices=sorted(wheels.RUNTIME_DISTS), help="default: ai_edge_litert on arm64")
    p.add_argument("--litert-version", default=DEFAULT_LITERT, help="ai-edge-litert to install")
    p.add_argument("--tflite-runtime-version", default=DEFAULT_TFLITE_RUNTIME)
    p.add_argument(
        "--numpy",
        metavar="SPEC",
        help="numpy requirement (default: '<2' with tflite_runtime or --system-packages)",
    )
    p.add_argument(
        "--system-packages",
        action="store_true",
        help="use Debian's python3-numpy/-pil/-click from apt, as a --system-site-packages venv on "
        "Raspberry Pi OS Bookworm does, instead of their wheels",
    )
    p.add_argument("--cpu", nargs="+", help="qemu CPU models (default: the Pi cores of --arch)")
    p.add_argument("--work-dir", type=Path, default=default_work_dir(), help="cache ($WORK)")
    p.add_argument("--python", default=sys.executable, help="x86 Python with leukoedge (the reference)")
    p.add_argument("--x86-runtime", default="auto", help="runtime of the reference run (default: auto)")
    p.add_argument("--qemu", help="qemu-user binary (default: qemu-aarch64-static / qemu-arm-static)")
    p.add_argument("--tolerance-steps", type=float, default=1.0, help="allowed |Δp| in 1/256 steps")
    p.add_argument("--dry-run", action="store_true", help="show the plan and the commands, run nothing")
    return finish_args(p, p.parse_args(argv))


def finish_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    """Defaults that depend on other options; armhf has no ai-edge-litert and no numpy wheels."""
    arch = emulate.ARCHES[args.arch]
    if args.arch == "armhf":
        if args.runtime == "ai_edge_litert":
            p.error("ai-edge-litert has no armv7l wheels: use --runtime tflite_runtime with --arch armhf")
        args.runtime, args.system_packages = "tflite_runtime", True
    args.runtime = args.runtime or "ai_edge_litert"
    args.cpu = args.cpu or list(arch.cpus)
    args.qemu = args.qemu or arch.qemu
    if args.numpy is None and (args.runtime == "tflite_runtime" or args.system_packages):
        # tflite-runtime is built against numpy 1.x; with Debian's numpy 1.24 the documented install
        # adds "numpy<2" so pip keeps it (ai-edge-litert >= 2.2 -> ml_dtypes 0.6 would pull numpy 2).
        args.numpy = "<2"
    return args


def default_images(data: Path) -> tuple[list[str], list[str]]:
    """4 myeloblasts + 4 neutrophils from aml-lmu/val and the first BCCD frame (sorted, not chosen)."""
    cells: list[str] = []
    for cls in ("MYO", "NGS"):
        cells += [str(p) for p in sorted((data / "aml-lmu" / "val" / cls).glob("*.jpg"))[:CELLS_PER_CLASS]]
    fields = [str(p) for p in sorted((data / "bccd-frames" / "JPEGImages").glob("*.jpg"))[:1]]
    return cells, fields


def runtime_version(args: argparse.Namespace) -> str:
    return args.litert_version if args.runtime == "ai_edge_litert" else args.tflite_runtime_version


def site_key(args: argparse.Namespace) -> str:
    numpy = (args.numpy or "").replace("<", "lt").replace(">", "gt").replace("=", "eq").replace(",", "_")
    system = "-system" if args.system_packages else ""
    key = f"{args.arch}-{args.runtime}-{runtime_version(args)}"
    return key + (f"-numpy{numpy}" if numpy else "") + system


def classify_args(model: str, runtime: str, paths: list[str], field: bool) -> list[str]:
    cmd = ["-m", "leukoedge", "classify", "--format", "json", "--model", model]
    if runtime != "auto":
        cmd += ["--runtime", runtime]
    return [*cmd, *(["--field"] if field else []), *paths]


def run_classify(cmd: list[str], env: dict[str, str] | None, where: str) -> list[dict]:
    """Run one classify command; exit 1 (some images failed) still yields the records to compare."""
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode not in (0, 1):
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        why = f"signal {-proc.returncode}" if proc.returncode < 0 else f"exit {proc.returncode}"
        raise sysroot.SetupError(f"classify on {where} failed ({why}):\n{tail}")
    return compare.parse_jsonl(proc.stdout)


def build_wheel(args: argparse.Namespace, dist: Path) -> Path:
    """The leukoedge wheel of this checkout (pure Python), rebuilt every run so it is current."""
    if dist.exists():
        shutil.rmtree(dist)
    sysroot.run([args.python, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(REPO)])
    return next(dist.glob("leukoedge-*.whl"))


def reference_env(wheel: Path, site: Path) -> dict[str, str]:
    """Environment for the x86 runs: the same leukoedge wheel first on the path, the host's runtime.

    Both sides then run one snapshot of the code, even if the checkout changes during the check.
    """
    if site.exists():
        shutil.rmtree(site)
    wheels.unpack_wheel(wheel, site)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), env.get("PYTHONPATH", "")) if p)
    return env


def prepare_site(args: argparse.Namespace, root: Path, wheel: Path) -> tuple[Path, list[str]]:
    """Download and unpack the wheels; returns the site folder and the requirements used."""
    machine = emulate.ARCHES[args.arch].machine
    _, _, requires = wheels.wheel_metadata(wheel)
    extras = ("tflite",) if args.runtime == "tflite_runtime" else ()
    version = runtime_version(args)
    reqs = wheels.runtime_requirements(requires, machine, args.runtime, version, args.numpy, extras)
    system_dirs = [root / "usr/lib/python3/dist-packages"]
    provided = wheels.installed(system_dirs) if args.system_packages else {}
    system = [d for name, d in provided.items() if name in SYSTEM_DISTS]
    dest = args.work_dir / "wheels" / site_key(args)
    downloaded = wheels.pip_download(args.python, machine, reqs, dest, system)
    skip = set(SYSTEM_DISTS) if args.system_packages else set()
    chosen = [w for w in downloaded if wheels.canonicalize_name(w.name.split("-")[0]) not in skip]
    site = args.work_dir / "site" / site_key(args)
    stamp = site / ".wheels"
    names = "\n".join(w.name for w in chosen)
    if not stamp.exists() or stamp.read_text() != names:
        if site.exists():
            shutil.rmtree(site)
        site.mkdir(parents=True)
        for w in chosen:
            wheels.unpack_wheel(w, site)
        stamp.write_text(names)
    print("      wheels: " + ", ".join("-".join(w.name.split("-")[:2]) for w in chosen))
    for old in [site / "leukoedge", *site.glob("leukoedge-*.dist-info")]:
        shutil.rmtree(old, ignore_errors=True)
    wheels.unpack_wheel(wheel, site)
    ignore = frozenset({"ai-edge-litert"} if args.runtime == "tflite_runtime" else ())
    installed = wheels.installed([site, *system_dirs])
    problems = wheels.check_consistent(installed, "leukoedge", machine, ignore)
    if problems:
        raise sysroot.SetupError("the emulated install is inconsistent:\n  " + "\n  ".join(problems))
    return site, reqs


def plan(args: argparse.Namespace, model: str, cells: list[str], fields: list[str]) -> None:
    root = sysroot.root_path(args.work_dir, args.arch, args.system_packages)
    site = args.work_dir / "site" / site_key(args)
    packages = sysroot.BASE_PACKAGES + (sysroot.SYSTEM_PYTHON_PACKAGES if args.system_packages else ())
    apt = sysroot.Apt(args.work_dir / f"apt-{args.arch}", args.arch)
    machine = emulate.ARCHES[args.arch].machine
    print(f"work dir: {args.work_dir}")
    print(f"1. {args.arch} .debs (+ dependencies) unpacked into {root}: {' '.join(packages)}")
    print(f"   apt-get {' '.join(apt.options())} update / download")
    print(f"2. {args.python} -m pip wheel --no-deps {REPO}")
    pin = f"{wheels.RUNTIME_DISTS[args.runtime]}=={runtime_version(args)}"
    numpy = f" numpy{args.numpy}" if args.numpy else ""
    print(f"3. pip download --only-binary=:all: --platform manylinux_2_*_{machine} --python-version 3.11 "
          f"<leukoedge's requirements> {pin}{numpy}; unzip into {site}")  # fmt: skip
    for paths, field in ((cells, False), (fields, True)):
        if paths:
            argv = classify_args(model, args.runtime, paths, field)
            ref = [args.python, *classify_args(model, args.x86_runtime, paths, field)]
            print(f"4. x86:     PYTHONPATH={args.work_dir / 'x86-site'} {' '.join(ref)}")
            cmd = [args.qemu, "-cpu", args.cpu[0], "-L", str(root), str(root / "usr/bin/python3.11"), "-s"]
            print(f"   {machine}: PYTHONPATH={site} {' '.join(cmd + argv)}")
    print(f"   (once per --cpu: {' '.join(args.cpu)}; a Pi's /proc/cpuinfo is written into the root)")
    print(f"5. compare: same labels, |Δp| <= {args.tolerance_steps:g}/256")
    if shutil.which(args.qemu) is None:
        print(f"note: {args.qemu} is not installed (apt-get install qemu-user-static)")


def resolve_inputs(args: argparse.Namespace) -> tuple[str, list[str], list[str]]:
    model = str(Path(args.model).resolve()) if args.model else str(DEFAULT_MODEL)
    cells, fields = default_images(args.data)
    cells = [str(Path(p).resolve()) for p in args.images] if args.images is not None else cells
    fields = [str(Path(p).resolve()) for p in args.field_images] if args.field_images is not None else fields
    return model, cells, fields


def emulated_info(args: argparse.Namespace, root: Path, env: dict[str, str]) -> dict[str, str]:
    """Versions seen by the emulated interpreter (and that it really is the target machine)."""
    cmd = emulate.qemu_command(args.qemu, args.arch, root, args.cpu[0], "-c", PROBE)
    probe = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if probe.returncode != 0:
        raise sysroot.SetupError(f"the emulated interpreter does not start:\n{probe.stderr[-2000:]}")
    info = json.loads(probe.stdout.strip().splitlines()[-1])
    if info["machine"] != emulate.ARCHES[args.arch].machine:
        raise sysroot.SetupError(f"the emulated interpreter reports machine {info['machine']!r}")
    return info


def reference_runtime(args: argparse.Namespace, env: dict[str, str]) -> str:
    """'name version' of the runtime the x86 reference uses."""
    name = None if args.x86_runtime == "auto" else args.x86_runtime
    code = (
        "import sys; from leukoedge.inference.runtime import get_runtime as g; r = g(sys.argv[1] or None); "
    )
    code += "print(r.name, r.version)"
    proc = subprocess.run([args.python, "-c", code, name or ""], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise sysroot.SetupError(f"the x86 reference ({args.python}) has no usable leukoedge:\n{proc.stderr}")
    return proc.stdout.strip()


def classify_both(
    args: argparse.Namespace,
    root: Path,
    envs: tuple[dict[str, str], dict[str, str]],
    model: str,
    jobs: list[tuple[list[str], bool]],
) -> tuple[list[dict], dict[str, list[dict]]]:
    """x86 records, and emulated records per CPU (one emulation at a time)."""
    ref_env, env = envs
    ref: list[dict] = []
    emu: dict[str, list[dict]] = {cpu: [] for cpu in args.cpu}
    for paths, field in jobs:
        ref_cmd = [args.python, *classify_args(model, args.x86_runtime, paths, field)]
        ref += run_classify(ref_cmd, ref_env, "x86")
        for cpu in args.cpu:
            argv = classify_args(model, args.runtime, paths, field)
            cmd = emulate.qemu_command(args.qemu, args.arch, root, cpu, *argv)
            emu[cpu] += run_classify(cmd, env, f"{args.arch} ({cpu})")
    return ref, emu


def check(args: argparse.Namespace, model: str, cells: list[str], fields: list[str]) -> int:
    if not Path(model).exists():
        raise sysroot.SetupError(f"model bundle {model} not found: pass --model BUNDLE")
    if not cells and not fields:
        raise sysroot.SetupError(f"no images: none found under {args.data}; pass --images")
    if shutil.which(args.qemu) is None:
        raise sysroot.SetupError(f"{args.qemu} not found: install it with 'apt-get install qemu-user-static'")
    machine = emulate.ARCHES[args.arch].machine
    debian = "with" if args.system_packages else "without"
    print(f"[1/5] {args.arch} Bookworm root ({debian} Debian's numpy/pillow/click)")
    root = sysroot.build_root(args.work_dir, args.arch, args.system_packages)
    print("[2/5] leukoedge wheel from this checkout")
    wheel = build_wheel(args, args.work_dir / "dist")
    print(f"[3/5] {machine} wheels")
    site, reqs = prepare_site(args, root, wheel)
    print("      requirements: " + " ".join(reqs))
    env = emulate.emulated_env(site)
    info = emulated_info(args, root, env)
    print(f"      {machine}: " + ", ".join(f"{k} {v}" for k, v in info.items() if v and k != "numpy_from"))
    print(f"      numpy from {Path(info['numpy_from']).parent.parent}")
    ref_env = reference_env(wheel, args.work_dir / "x86-site")
    print(f"      x86_64 reference: {reference_runtime(args, ref_env)} ({args.python}), same leukoedge wheel")
    print(f"[4/5] classify on x86_64 and on emulated {machine} ({', '.join(args.cpu)})")
    jobs = [(paths, field) for paths, field in ((cells, False), (fields, True)) if paths]
    ref, emu = classify_both(args, root, (ref_env, env), model, jobs)
    print(f"[5/5] compare (model {model}; {machine} runtime {args.runtime} {runtime_version(args)})")
    passed_all = True
    for cpu in args.cpu:
        rows = compare.compare_records(ref, emu[cpu], args.tolerance_steps)
        passed, summary = compare.verdict(rows)
        passed_all = passed_all and passed
        print(f"\n{machine} = qemu -cpu {cpu} ({emulate.board(args.arch, cpu)})")
        print(compare.format_table(rows, other_name=machine))
        print(summary)
    print(f"\n{'PASS' if passed_all else 'FAIL'}")
    return 0 if passed_all else 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    model, cells, fields = resolve_inputs(args)
    if args.dry_run:
        plan(args, model, cells, fields)
        return 0
    try:
        return check(args, model, cells, fields)
    except sysroot.SetupError as e:
        print(f"SETUP FAILED: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
