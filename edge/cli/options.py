"""Options shared by several ``leukoedge`` commands, defined once (the model, its runtime, threads),
and the one float option type, which refuses NaN and infinities."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from leukoedge.finite import NotFiniteError, finite_float
from leukoedge.inference.runtime import RUNTIMES

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]

model_option: Decorator = click.option(
    "--model",
    "model_path",
    metavar="BUNDLE",
    help="Model bundle: its .json, its .tflite, or a folder holding one. Default: the bundled model.",
)


def runtime_option(
    help: str = "TFLite runtime; auto tries ai_edge_litert, tflite_runtime, then tensorflow.",
) -> Decorator:
    """``--runtime auto|ai_edge_litert|tflite_runtime|tensorflow``; ``help`` says what it is used for."""
    return click.option(
        "--runtime", type=click.Choice(["auto", *RUNTIMES]), default="auto", show_default=True, help=help
    )


def threads_option(help: str = "Interpreter (XNNPACK) threads.") -> Decorator:
    """``--threads N`` (at least 1, default 1)."""
    return click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True, help=help)


class FiniteFloat(click.FloatRange):
    """A float option that refuses NaN and infinities (which pass any range check), with bounds."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        try:
            return finite_float(number, "")
        except NotFiniteError as e:
            self.fail(e.problem, param, ctx)
