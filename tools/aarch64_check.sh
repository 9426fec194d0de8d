#!/usr/bin/env bash
# Check that leukoedge's edge side installs and classifies the same on 64-bit Raspberry Pi OS
# (Debian Bookworm, aarch64, Python 3.11) as here, without a Pi: emulated with qemu-user.
#
#   make aarch64-check                       (or: bash tools/aarch64_check.sh [OPTIONS])
#   bash tools/aarch64_check.sh --help       all options
#   bash tools/aarch64_check.sh --dry-run    the plan and commands, nothing run
#
# Needs: qemu-user-static, apt-get and dpkg (Debian or Ubuntu host), and a Python with leukoedge
# and a TFLite runtime installed (the x86 reference; PYTHON=... picks it, default: python3).
# Downloads are cached in $WORK (default ~/.cache/leukoedge-aarch64); reruns reuse them.
# See docs/raspberry-pi.md.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
exec "${PYTHON:-python3}" "$here/aarch64/check.py" --python "${PYTHON:-python3}" "$@"
