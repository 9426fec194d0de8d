"""The status server alone in a process of its own, so a test can measure that process's memory.

Run as ``python -m support.http_process STATE_DIR`` with ``tests/`` on the path: it prints the port,
then serves until its standard input closes.
"""

from __future__ import annotations

import sys
from pathlib import Path

from support.provider import FakeProvider

from leukoedge.daemon.http.server import StatusServer
from leukoedge.daemon.store.database import Store


def main(state_dir: str) -> None:
    with Store(Path(state_dir)) as store, StatusServer("127.0.0.1", 0, FakeProvider(store)) as server:
        print(server.port, flush=True)
        sys.stdin.read()


if __name__ == "__main__":
    main(sys.argv[1])
