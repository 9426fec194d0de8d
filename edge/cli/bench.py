"""``leukoedge bench``: a thin click command over :mod:`leukoedge.bench.suite`."""

from __future__ import annotations

import click

from leukoedge.bench.suite import format_table, run_bench
from leukoedge.cli.options import model_option, runtime_option, threads_option
from leukoedge.finite import dumps


@click.command("bench")
@model_option
@click.option("--quick", is_flag=True, help="Fewer repetitions: about 15 s instead of a minute or two.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@threads_option("Interpreter threads.")
@runtime_option("TFLite runtime to measure.")
def bench_cmd(model_path: str | None, quick: bool, as_json: bool, threads: int, runtime: str) -> None:
    """Measure inference, detection and pipeline speed on this machine.

    Prints medians with their spread (quartiles, range) of repeated runs: raw interpreter calls
    (int8; float32 when a *_float32.json bundle lies beside the model), one crop through the
    classifier, batches of 32, white-cell detection at 640x480 and 1280x960, the daemon pipeline
    on the synthetic microscope (frames per second, latency, dropped frames), and the cold start
    and peak memory of 'leukoedge classify'. Progress goes to stderr.
    """
    result = run_bench(
        model_path,
        quick=quick,
        threads=threads,
        runtime=None if runtime == "auto" else runtime,
        progress=lambda msg: click.echo(f"bench: {msg}", err=True),
    )
    click.echo(dumps(result, indent=2) if as_json else format_table(result))
