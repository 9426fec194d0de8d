"""Print systemd/leukoedge.toml.example: the documented configuration, set up for a Pi camera.

Regenerate after a change to the configuration schema:
    python systemd/render_example.py > systemd/leukoedge.toml.example
tests/daemon/test_systemd.py fails while the file and this output differ.
"""

from __future__ import annotations

import dataclasses

from leukoedge.daemon.config import DaemonConfig, render_example


def service_config() -> DaemonConfig:
    """The defaults, with the Pi camera as the frame source."""
    config = DaemonConfig()
    return dataclasses.replace(
        config,
        source=dataclasses.replace(config.source, uri="picamera2://"),
    )


HEADER = (
    "# Set up for a Raspberry Pi camera run by systemd: source.uri is picamera2://; "
    "every other value is the default.\n"
)


def main() -> None:
    print(HEADER + render_example(service_config()), end="")


if __name__ == "__main__":
    main()
