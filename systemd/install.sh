#!/bin/sh
# Install the leukoedge daemon as a systemd service (Raspberry Pi OS Bookworm, Debian 12 or later).
#
#   sudo sh systemd/install.sh [PACKAGE]
#
# PACKAGE is what pip installs: a wheel, a source folder or "leukoedge" (default: this checkout).
# Safe to run again: an existing configuration or token is kept; the venv and the unit are updated.
# DRY_RUN=1 prints the commands instead of running them.
# Research use only - not a medical device.
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
PACKAGE=${1:-$(dirname "$HERE")}
PREFIX=${PREFIX:-/opt/leukoedge}
VENV="$PREFIX/venv"
CONF_DIR=/etc/leukoedge

run() {
    if [ "${DRY_RUN:-0}" = 1 ]; then
        echo "+ $*"
    else
        "$@"
    fi
}

if [ "${DRY_RUN:-0}" != 1 ] && [ "$(id -u)" != 0 ]; then
    echo "run as root: sudo sh $0" >&2
    exit 1
fi

# picamera2 and libcamera's Python bindings come from apt, not PyPI: the venv must see them.
if grep -qs "Raspberry Pi" /proc/device-tree/model; then
    run apt-get install -y python3-venv python3-picamera2
else
    run apt-get install -y python3-venv
fi
run python3 -m venv --system-site-packages "$VENV"
run "$VENV/bin/pip" install --upgrade pip
run "$VENV/bin/pip" install --upgrade "$PACKAGE"

run install -m 0644 "$HERE/leukoedge.sysusers.conf" /etc/sysusers.d/leukoedge.conf
run systemd-sysusers /etc/sysusers.d/leukoedge.conf

run install -d -m 0755 "$CONF_DIR"
if [ ! -e "$CONF_DIR/leukoedge.toml" ]; then
    run install -m 0640 -o root -g leukoedge "$HERE/leukoedge.toml.example" "$CONF_DIR/leukoedge.toml"
fi
# A bearer token for session control over HTTP; the daemon uses it once [http] token_file names it.
if [ ! -e "$CONF_DIR/token" ]; then
    run sh -c "umask 027 && head -c 32 /dev/urandom | base64 > '$CONF_DIR/token'"
    run chgrp leukoedge "$CONF_DIR/token"
fi
run "$VENV/bin/leukoedge" config check "$CONF_DIR/leukoedge.toml"

run install -m 0644 "$HERE/leukoedge.service" /etc/systemd/system/leukoedge.service
run systemctl daemon-reload
run systemctl enable --now leukoedge.service
echo "leukoedge installed: systemctl status leukoedge; live page on http://127.0.0.1:8080/"
