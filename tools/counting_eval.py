"""Counting accuracy on the synthetic microscope, seed by seed.

``python tools/counting_eval.py 1 2 3 --frames 1200`` prints the table.

The scoring lives in :mod:`leukoedge.daemon.tracking.counting_eval`; this prints its table.
``--set tracker.edge_rule=margin`` scores the older whole-cell rule instead of the measured cell extent.
``--restart-at 300 600`` restarts the pipeline at those frames (the stage staying put), restoring the
saved tracker state; with ``--no-restore`` each restart starts afresh, as before the state was kept;
``--down-frames 10`` lets the stage move on along its path for 10 unseen frames at each restart.
"""

from __future__ import annotations

import sys
from typing import Any

from leukoedge.daemon.config import DaemonConfig, apply_overrides
from leukoedge.daemon.tracking.counting_eval import evaluate_counting, summary, table


def _value(text: str) -> Any:
    """A command-line override value: an int, a float, else the text itself (a choice)."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def main(argv: list[str]) -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("seeds", nargs="+", type=int)
    parser.add_argument("--frames", type=int, default=1200)
    parser.add_argument("--set", nargs="*", default=[], help="config overrides section.key=value")
    parser.add_argument(
        "--restart-at", nargs="*", type=int, default=[], help="frames at which the pipeline restarts"
    )
    parser.add_argument(
        "--down-frames", type=int, default=0, help="frames the stage moves on while the pipeline is down"
    )
    parser.add_argument(
        "--no-restore", action="store_true", help="restarts start afresh instead of restoring the tracker"
    )
    args = parser.parse_args(argv)
    overrides: dict[str, Any] = {}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = _value(value)
    config = apply_overrides(DaemonConfig(), overrides)
    restarts = set(args.restart_at)
    results = [
        evaluate_counting(
            s,
            args.frames,
            config,
            restarts=restarts,
            restore=not args.no_restore,
            down_frames=args.down_frames,
        )
        for s in args.seeds
    ]
    print(table(results))
    print(summary(results))
    for r in results:
        if r.duplicate_ids:
            print(f"seed {r.seed}: duplicates {r.duplicate_ids}")
        if r.false_votes:
            print(f"seed {r.seed}: false counts {r.false_votes}")


if __name__ == "__main__":
    main(sys.argv[1:])
