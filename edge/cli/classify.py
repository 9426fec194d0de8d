"""``leukoedge classify`` and ``leukoedge models``: thin click commands over :mod:`leukoedge.inference.batch`.

Exit status of ``classify``: 0 when every image was classified, 1 when some could not be read
(the others are still classified and reported), 2 for mistakes in the command or an unusable model
(no such path, a folder without images, a missing or tampered bundle, no TFLite runtime).
Nothing here imports TensorFlow.
"""

from __future__ import annotations

import csv
import io
import logging
import sys
from collections import Counter
from collections.abc import Callable
from typing import Any

import click

from leukoedge import RESEARCH_USE_NOTICE
from leukoedge.cli.options import FiniteFloat, model_option, runtime_option, threads_option
from leukoedge.errors import LeukoEdgeError
from leukoedge.finite import dumps

logger = logging.getLogger(__name__)

#: Inputs from which a progress bar is shown (on a terminal, when results go to a file or pipe).
PROGRESS_MIN = 100
FORMATS = ("table", "json", "csv")
CELL_COLUMNS = ("path", "ok", "label", "suspected_blast", "p_blast", "p_malignant", "threshold", "error")
FIELD_COLUMNS = (
    "path", "ok", "width", "height", "cell", "x0", "y0", "x1", "y1", "edge", "label", "suspected_blast",
    "p_blast", "p_malignant", "threshold", "error",
)  # fmt: skip
#: The per-cell values of a CSV row, after the path and position columns.
_CELL_VALUES = ("label", "suspected_blast", "p_blast", "p_malignant")


class CommandFailed(click.ClickException):
    """A library error raised where click prints it: ``Error: ...`` and a library error's exit status."""

    exit_code = LeukoEdgeError.exit_code


def _fail(e: LeukoEdgeError) -> CommandFailed:
    return CommandFailed(str(e))


# -- output ---------------------------------------------------------------------------------------
def _csv_line(values: list[Any]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow(["" if v is None else v for v in values])
    return buf.getvalue()


def _csv_rows(record: dict[str, Any], field: bool) -> list[list[Any]]:
    path, ok = record["path"], record["ok"]
    if not field:
        values = [record.get(k) for k in _CELL_VALUES]
        return [[path, ok, *values, record.get("threshold"), record.get("error")]]
    if not ok:
        return [[path, ok, *[None] * (len(FIELD_COLUMNS) - 3), record["error"]]]
    head = [path, ok, record["width"], record["height"]]
    rows = [
        [*head, i, *c["bbox"], c["edge"], *[c[k] for k in _CELL_VALUES], record["threshold"], None]
        for i, c in enumerate(record["cells"])
    ]
    return rows or [[*head, *[None] * (len(FIELD_COLUMNS) - 6), record["threshold"], None]]


def _blast_mark(cell: dict[str, Any]) -> str:
    return "  suspected blast" if cell.get("suspected_blast") else ""


def _table_lines(record: dict[str, Any]) -> list[str]:
    if not record["ok"]:
        return [f"{'FAILED':<14} {'':>6}  {record['path']}: {record['error']}"]
    if "cells" not in record:
        return [f"{record['label']:<20} {record['p_blast']:6.3f}  {record['path']}{_blast_mark(record)}"]
    cells = record["cells"]
    counts = Counter("edge" if c["edge"] else c["label"] for c in cells)
    summary = ", ".join(f"{n} {name}" for name, n in sorted(counts.items())) or "no white cells found"
    blasts = sum(bool(c.get("suspected_blast")) for c in cells)
    lines = [
        f"{record['path']} ({record['width']}x{record['height']}): {len(cells)} cells: {summary}; "
        f"{blasts} suspected blast{'s' if blasts != 1 else ''}"
    ]
    for c in cells:
        label, p = ("edge", "     -") if c["edge"] else (c["label"], f"{c['p_blast']:6.3f}")
        lines.append(f"  {label:<20} {p}  bbox {c['bbox']}{_blast_mark(c)}")
    return lines


class _Output:
    """Writes records in one format and keeps the counts for the summary."""

    def __init__(self, fmt: str, field: bool, quiet: bool) -> None:
        self.fmt, self.field, self.quiet = fmt, field, quiet
        self.failed = 0
        self.labels: Counter[str] = Counter()
        self.total = 0
        if fmt == "csv":
            click.echo(_csv_line(list(FIELD_COLUMNS if field else CELL_COLUMNS)))

    def write(self, record: dict[str, Any]) -> None:
        self.total += 1
        if not record["ok"]:
            self.failed += 1
        elif "cells" in record:
            self.labels.update("edge" if c["edge"] else c["label"] for c in record["cells"])
        else:
            self.labels[record["label"]] += 1
        if self.fmt == "json":
            click.echo(dumps(record))
        elif self.fmt == "csv":
            for row in _csv_rows(record, self.field):
                click.echo(_csv_line(row))
        else:
            for line in _table_lines(record):
                click.echo(line)

    def finish(self) -> None:
        if self.fmt != "table" or self.quiet:
            return
        what = "cells" if self.field else "images"
        counts = ", ".join(f"{n} {name}" for name, n in sorted(self.labels.items())) or f"no {what}"
        click.echo(
            f"{self.total - self.failed} of {self.total} images classified ({counts}); {self.failed} failed"
        )


# -- commands -------------------------------------------------------------------------------------
def _load_bundle(model_path: str | None) -> Any:
    from leukoedge.inference.bundle import load_bundle

    return load_bundle(model_path)


def _print_model_info(model_path: str | None, runtime: str | None, as_json: bool) -> None:
    from leukoedge.inference.model_info import describe_bundle, format_description

    try:
        info = describe_bundle(_load_bundle(model_path), runtime=runtime)
    except LeukoEdgeError as e:
        raise _fail(e) from e
    click.echo(dumps(info, indent=2) if as_json else format_description(info))


def _progress(total: int, fmt: str, quiet: bool) -> tuple[Callable[[], None], Callable[[], None]]:
    """(advance, close) of a progress bar on stderr, or no-ops when it would not help."""
    shown = not quiet and total >= PROGRESS_MIN and sys.stderr.isatty() and not sys.stdout.isatty()
    if not shown:
        return (lambda: None), (lambda: None)
    bar = click.progressbar(length=total, label="Classifying", file=sys.stderr)
    bar.__enter__()
    return (lambda: bar.update(1)), (lambda: bar.__exit__(None, None, None))


@click.command("classify")
@click.argument("paths", nargs=-1, metavar="PATH...")
@click.option(
    "--field", is_flag=True, help="Each image is a whole microscope field: detect white cells, classify each."
)
@click.option(
    "--px-per-um",
    type=FiniteFloat(min=0, min_open=True),
    help="Image scale for --field (default: measured on the red cells of each field).",
)
@click.option(
    "--annotate",
    "annotate_dir",
    metavar="OUT_DIR",
    type=click.Path(file_okay=False),
    help="With --field: write each field with boxes and labels drawn into OUT_DIR.",
)
@model_option
@click.option(
    "--threshold", type=FiniteFloat(0.0, 1.0), help="Threshold on p(malignant) (default: the bundle's)."
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    help="Output format (default: table on a terminal, JSON Lines otherwise).",
)
@click.option("-q", "--quiet", is_flag=True, help="No notice, progress bar or summary.")
@runtime_option()
@threads_option()
@click.option(
    "--workers", type=click.IntRange(min=1), help="Image decoding threads (default: one per core, at most 8)."
)
@click.option("--model-info", is_flag=True, help="Show the model bundle (as 'leukoedge models') and exit.")
def classify_cmd(
    paths: tuple[str, ...],
    field: bool,
    px_per_um: float | None,
    annotate_dir: str | None,
    model_path: str | None,
    threshold: float | None,
    fmt: str | None,
    quiet: bool,
    runtime: str,
    threads: int,
    workers: int | None,
    model_info: bool,
) -> None:
    """Classify single-cell images, or whole fields with --field.

    PATH may be image files, folders (searched recursively) or glob patterns. Results are one
    line per image, in input order: JSON Lines {"path", "ok", "label", "suspected_blast",
    "p_blast", "p_malignant", "probabilities", "unclassified", "threshold"} per cell image, where
    "label" is the cell type (a differential model) or malignant/non_malignant (a binary model),
    "suspected_blast" is p_blast >= threshold and "p_malignant" repeats p_blast for older readers;
    {"path", "ok", "width", "height", "threshold", "cells": [{"bbox", "edge", "label", ...}]} per
    field; {"path", "ok": false, "error"} when an image cannot be read. Cells cut by the frame edge
    are listed with "edge": true and no label.

    Exit status: 0 all classified, 1 some images failed, 2 usage or model error.

    Research use only - not a medical device.
    """
    rt = None if runtime == "auto" else runtime
    if model_info:
        _print_model_info(model_path, rt, as_json=fmt == "json")
        return
    if not paths:
        raise click.UsageError("give at least one image, folder or glob pattern (or --model-info)")
    if annotate_dir is not None and not field:
        raise click.UsageError("--annotate draws detected cells on fields: use it with --field")
    fmt = fmt or ("table" if sys.stdout.isatty() else "json")
    failed = _classify(
        paths, field, px_per_um, annotate_dir, model_path, threshold, fmt, quiet, rt, threads, workers
    )
    if failed:
        # SystemExit, not ctx.exit(): click returns (not raises) ctx.exit's status when the group runs
        # with standalone_mode=False, as leukoedge.cli.main does.
        sys.exit(1)


def _classify(
    paths: tuple[str, ...],
    field: bool,
    px_per_um: float | None,
    annotate_dir: str | None,
    model_path: str | None,
    threshold: float | None,
    fmt: str,
    quiet: bool,
    runtime: str | None,
    threads: int,
    workers: int | None,
) -> int:
    """Run the classification and return how many images failed."""
    from leukoedge.inference.batch import FileClassifier, expand_inputs
    from leukoedge.inference.classifier import CellClassifier, ClassifierOptions

    try:
        items = expand_inputs(paths)
        bundle = _load_bundle(model_path)
        options = ClassifierOptions(threshold=threshold, runtime=runtime, num_threads=threads)
        runner = FileClassifier(
            CellClassifier(bundle, options),
            field=field,
            px_per_um=px_per_um,
            workers=workers,
            annotate_dir=annotate_dir,
        )
    except LeukoEdgeError as e:
        raise _fail(e) from e
    if fmt == "table" and not quiet:
        click.echo(RESEARCH_USE_NOTICE, err=True)
    out = _Output(fmt, field, quiet)
    advance, close = _progress(len(items), fmt, quiet)
    try:
        for record in runner.run(items):
            out.write(record)
            advance()
    except LeukoEdgeError as e:
        raise _fail(e) from e
    finally:
        close()
    out.finish()
    return out.failed


@click.command("models")
@model_option
@click.option("--json", "as_json", is_flag=True, help="Print the description as JSON.")
@runtime_option()
def models_cmd(model_path: str | None, as_json: bool, runtime: str) -> None:
    """Show what a model bundle is, what data it saw, how it measured and its limits.

    Research use only - not a medical device.
    """
    _print_model_info(model_path, None if runtime == "auto" else runtime, as_json)
