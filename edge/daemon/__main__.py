"""``python -m leukoedge.daemon [OPTIONS]``: the daemon without the ``leukoedge`` entry point."""

from __future__ import annotations

import sys

from leukoedge.cli import main

if __name__ == "__main__":
    main(["daemon", *sys.argv[1:]])
