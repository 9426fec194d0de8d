"""``leukoedge synth``: write synthetic cells, camera fields and stage sequences with ground truth."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import click

from leukoedge.cli.options import FiniteFloat
from leukoedge.synth.cells import KINDS
from leukoedge.synth.field import FIELD_PX_PER_UM
from leukoedge.synth.stain import STYLES
from leukoedge.synth.writers import FORMATS, LAYOUTS, write_cell_dataset, write_fields, write_sequence


@contextmanager
def _progress(total: int, label: str) -> Iterator[Callable[[int], None] | None]:
    """A progress bar on a terminal; nothing when output goes to a file or a pipe."""
    if not sys.stderr.isatty() or total < 20:
        yield None
        return
    with click.progressbar(length=total, label=label, file=sys.stderr) as bar:
        yield bar.update


def _common(func: Callable) -> Callable:
    options = [
        click.option(
            "--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder."
        ),
        click.option("--seed", default=0, show_default=True, help="Random seed: same seed, same images."),
        click.option(
            "--format",
            "fmt",
            type=click.Choice(sorted(FORMATS)),
            default="png",
            show_default=True,
            help="Image format.",
        ),
        click.option("--quality", default=92, show_default=True, help="JPEG quality."),
        click.option(
            "--stain",
            type=click.Choice(sorted(STYLES)),
            default="mgg",
            show_default=True,
            help="mgg: May-Gruenwald-Giemsa look of the AML-LMU scans; pale: lilac nuclei.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _frame_size(func: Callable) -> Callable:
    """``--width``, ``--height`` and ``--px-per-um`` of a camera frame (fields and sequences)."""
    options = [
        click.option("--width", default=640, show_default=True, help="Frame width, pixels."),
        click.option("--height", default=480, show_default=True, help="Frame height, pixels."),
        click.option(
            "--px-per-um",
            type=FiniteFloat(),
            default=FIELD_PX_PER_UM,
            show_default=True,
            help="Pixels per micron.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@click.group("synth")
def synth_cmd() -> None:
    """Generate synthetic blood-smear images with exact ground truth.

    \b
    cells     single-cell images (blasts, neutrophils, lymphocytes, monocytes)
              as a training data set in class folders, like the real data
    field     whole camera frames with several white cells among red cells
    sequence  frames from a camera over a moving microscope stage

    Ground truth goes to JSON beside the images: for fields and frames, each
    white cell's id, kind, label, bbox [x0, y0, x1, y1] (x1, y1 exclusive),
    centre, diameter and whether the frame edge cuts it. The same seed gives
    byte-identical images. Images are synthetic renderings for tests and
    demos: never use them to judge a model's accuracy on real cells.

    \b
    Examples:
      leukoedge synth cells --out data/synth --count 200 --split
      leukoedge synth field --out fields --count 20 --width 1280 --height 960
      leukoedge synth sequence --out seq --count 600 --speed 12
    """


@synth_cmd.command("cells")
@_common
@click.option("--count", default=100, show_default=True, help="Images per kind.")
@click.option("--size", default=400, show_default=True, help="Side of each square image, in pixels.")
@click.option(
    "--px-per-um", type=FiniteFloat(), default=None, help="Scale; default: that of the AML-LMU crops."
)
@click.option(
    "--layout",
    type=click.Choice(LAYOUTS),
    default="tcia",
    show_default=True,
    help="tcia: MYO/NGS/LYT/MON folders; folders: malignant/non_malignant; flat: JSON beside each.",
)
@click.option("--split/--no-split", default=False, help="Put class folders under train/val/test (70/15/15).")
@click.option(
    "--kind", "kinds", multiple=True, type=click.Choice(KINDS), help="Kinds to write (repeat); default all."
)
def cells_cmd(
    out_dir: str,
    seed: int,
    fmt: str,
    quality: int,
    stain: str,
    count: int,
    size: int,
    px_per_um: float | None,
    layout: str,
    split: bool,
    kinds: tuple[str, ...],
) -> None:
    """Write a single-cell data set (blast = malignant, the rest non_malignant)."""
    kinds = kinds or KINDS
    with _progress(count * len(kinds), "cells") as bar:
        manifest = write_cell_dataset(
            out_dir, count, seed, size, layout, kinds, split, fmt, quality, px_per_um, stain, bar
        )
    for folder, n in sorted(manifest["counts"].items()):
        click.echo(f"{n:6d}  {folder or '.'}")
    click.echo(f"Wrote {len(manifest['images'])} images and synth_manifest.json to {out_dir}")


@synth_cmd.command("field")
@_common
@click.option("--count", default=10, show_default=True, help="Number of fields.")
@_frame_size
@click.option("--cells", "n_cells", default=3, show_default=True, help="White cells per field.")
@click.option(
    "--edge-cells/--no-edge-cells",
    default=True,
    show_default=True,
    help="Let white cells be cut by the frame edge (flagged cut_by_edge in the truth).",
)
@click.option(
    "--camera/--no-camera",
    default=True,
    show_default=True,
    help="Vignetting, colour cast, defocus and sensor noise.",
)
def field_cmd(
    out_dir: str,
    seed: int,
    fmt: str,
    quality: int,
    stain: str,
    count: int,
    width: int,
    height: int,
    px_per_um: float,
    n_cells: int,
    edge_cells: bool,
    camera: bool,
) -> None:
    """Write camera fields, each with a .json of white-cell boxes, kinds and labels."""
    with _progress(count, "fields") as bar:
        paths = write_fields(
            out_dir,
            count,
            seed,
            width,
            height,
            px_per_um,
            n_cells,
            fmt,
            quality,
            bar,
            allow_edge_cells=edge_cells,
            stain=stain,
            camera=camera,
        )
    click.echo(f"Wrote {len(paths)} fields with JSON truth to {out_dir}")


@synth_cmd.command("sequence")
@_common
@click.option("--count", default=300, show_default=True, help="Number of frames.")
@_frame_size
@click.option(
    "--speed", type=FiniteFloat(), default=8.0, show_default=True, help="Stage speed, pixels per frame."
)
@click.option(
    "--pause", type=(int, int), default=(15, 45), show_default=True, help="Pause length range, frames."
)
@click.option("--slide-size", type=(int, int), default=None, help="Slide WIDTH HEIGHT; default 4x the frame.")
@click.option(
    "--cells", "n_cells", type=int, default=None, help="White cells on the slide; default 1.5 per frame."
)
def sequence_cmd(
    out_dir: str,
    seed: int,
    fmt: str,
    quality: int,
    stain: str,
    count: int,
    width: int,
    height: int,
    px_per_um: float,
    speed: float,
    pause: tuple[int, int],
    slide_size: tuple[int, int] | None,
    n_cells: int | None,
) -> None:
    """Write frames of a moving stage and sequence.json (stable cell ids, boxes per frame)."""
    slide_w, slide_h = slide_size or (None, None)
    with _progress(count, "frames") as bar:
        path = write_sequence(
            out_dir,
            count,
            seed,
            width,
            height,
            fmt,
            quality,
            bar,
            px_per_um=px_per_um,
            speed_px_per_frame=speed,
            pause_frames=pause,
            slide_width=slide_w,
            slide_height=slide_h,
            n_cells=n_cells,
            stain=stain,
        )
    click.echo(f"Wrote {count} frames and {path.name} to {out_dir}")
