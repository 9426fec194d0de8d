"""``leukoedge quantize`` and ``leukoedge report``: thin click wrappers over :mod:`.pipeline`.

A failing accuracy gate exits with status 3 and names the gate; library errors reach the
top-level CLI, which prints them as one line and exits with status 2.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable
from typing import Any

import click

from leukoedge.quantize.report import GATE_EXIT_CODE, Gates, failed_gates
from leukoedge.quantize.representative import DEFAULT_CALIBRATION, MIN_CALIBRATION


def gate_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The three gate limits, shared by both commands."""
    defaults = Gates()
    func = click.option(
        "--gate-sensitivity-drop",
        type=float,
        default=defaults.sensitivity_drop,
        show_default=True,
        help="Largest allowed drop in sensitivity, float minus int8.",
    )(func)
    func = click.option(
        "--gate-delta-auc",
        type=float,
        default=defaults.delta_auc,
        show_default=True,
        help="Largest allowed |int8 AUC - float AUC|.",
    )(func)
    func = click.option(
        "--gate-agreement",
        type=float,
        default=defaults.agreement,
        show_default=True,
        help="Smallest allowed top-1 agreement between int8 and float.",
    )(func)
    return func


def common_options(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option(
        "--bootstrap",
        "n_boot",
        type=click.IntRange(100),
        default=1000,
        show_default=True,
        help="Bootstrap resamples for the 95 % intervals.",
    )(func)
    func = click.option(
        "--runtime", default=None, help="TFLite runtime (ai_edge_litert, tflite_runtime, tensorflow)."
    )(func)
    func = click.option("--no-debugger", is_flag=True, help="Skip the per-layer error statistics.")(func)
    return func


def _finish(result: Any) -> None:
    report = result.report
    h = report["headline"]
    click.echo(f"bundle:    {result.bundle_dir}")
    click.echo(f"report:    {result.report_paths['html']}")
    click.echo(
        f"held-out:  {h['n_eval']} images; int8 AUC {h['int8_roc_auc']:.4f} "
        f"(float {h['float_roc_auc']:.4f}), "
        f"agreement {h['agreement']:.4f}, size {h['int8_size_ratio']:.3f} of float32"
    )
    diff = h.get("differential")
    if diff:
        per_class = ", ".join(f"{n} {a:.4f}" for n, a in diff["per_class_agreement"].items())
        click.echo(
            f"per type:  agreement (type and blast decision) "
            f"{diff['type_and_blast_agreement']:.4f}; {per_class}"
        )
    failed = failed_gates(report)
    if failed:
        for check in report["gates"]["checks"]:
            if not check["passed"]:
                click.echo(
                    f"GATE FAILED: {check['name']} = {check['value']:+.4f} ({check['rule']})", err=True
                )
        sys.exit(GATE_EXIT_CODE)
    click.echo("gates:     passed")


def _command_line() -> str:
    return "leukoedge " + " ".join(shlex.quote(a) for a in sys.argv[1:])


@click.command("quantize")
@click.argument("source", type=click.Path(exists=True))
@click.option(
    "--data",
    type=click.Path(exists=True),
    default=None,
    help="The labelled data folder (needed when SOURCE has no split manifest).",
)
@click.option(
    "--out", "out_dir", type=click.Path(file_okay=False), required=True, help="Bundle folder to write."
)
@click.option("--name", default="leukonet", show_default=True, help="Model name: bundles are NAME_int8, ...")
@click.option(
    "--calibration-samples",
    type=click.IntRange(MIN_CALIBRATION),
    default=DEFAULT_CALIBRATION,
    show_default=True,
    help="Training-split images used to calibrate int8 ranges.",
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed for drawing the calibration images."
)
@gate_options
@common_options
def quantize_cmd(
    source: str,
    data: str | None,
    out_dir: str,
    name: str,
    calibration_samples: int,
    seed: int,
    gate_agreement: float,
    gate_delta_auc: float,
    gate_sensitivity_drop: float,
    n_boot: int,
    runtime: str | None,
    no_debugger: bool,
) -> None:
    """Convert a trained model (run folder or .keras) to int8, float32 and float16 TFLite bundles.

    Calibrates on the run's training split, then writes BUNDLE/report/ comparing all variants
    with the Keras model on the test split. Exits with status 3 when an accuracy gate fails.
    """
    from leukoedge.quantize.pipeline import QuantizeOptions, quantize_run

    gates = Gates(gate_agreement, gate_delta_auc, gate_sensitivity_drop)
    opts = QuantizeOptions(
        name=name,
        calibration_samples=calibration_samples,
        seed=seed,
        gates=gates,
        n_boot=n_boot,
        runtime=runtime,
        debugger=not no_debugger,
        command=_command_line(),
    )
    _finish(quantize_run(source, data, out_dir, opts))


@click.command("report")
@click.argument("bundle", type=click.Path(exists=True))
@click.option(
    "--data",
    type=click.Path(exists=True),
    default=None,
    help="Labelled images: the training data (its test split is used) or another data set.",
)
@click.option(
    "--model",
    "model_path",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="The float Keras model (default: the one the bundle was made from).",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Report folder (default: BUNDLE/report).",
)
@gate_options
@common_options
def report_cmd(
    bundle: str,
    data: str | None,
    model_path: str | None,
    out_dir: str | None,
    gate_agreement: float,
    gate_delta_auc: float,
    gate_sensitivity_drop: float,
    n_boot: int,
    runtime: str | None,
    no_debugger: bool,
) -> None:
    """Compare Keras float with the bundle's TFLite float32, float16 and int8 on held-out images.

    Writes report.json, report.md and report.html. Exits with status 3 when a gate fails.
    """
    from leukoedge.quantize.pipeline import QuantizeOptions, report_run

    gates = Gates(gate_agreement, gate_delta_auc, gate_sensitivity_drop)
    opts = QuantizeOptions(
        gates=gates, n_boot=n_boot, runtime=runtime, debugger=not no_debugger, command=_command_line()
    )
    _finish(report_run(bundle, data, out_dir, model_path, opts))
