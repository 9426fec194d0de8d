"""The synthetic microscope: seeded, deterministic blood-smear images with exact ground truth.

For tests, demos and benchmarks of leukoedge without a microscope:

- :func:`render_cell`: one white cell (blast, neutrophil, lymphocyte, monocyte) on red cells,
  framed like the AML-LMU single-cell scans;
- :func:`render_field`: a camera field with white cells of known kinds and boxes;
- :class:`StageSequence`: frames from a camera over a moving stage, cheap enough for real time;
- :func:`write_cell_dataset`, :func:`write_fields`, :func:`write_sequence`: the same on disk.

Synthetic images are renderings, not cells: use them to exercise code, never to measure how well
a model recognises real cells. Only numpy and Pillow are used.
"""

from __future__ import annotations

from leukoedge.errors import SynthError
from leukoedge.synth.cells import DIAMETER_UM, KIND_LABELS, KINDS, TCIA_CODES
from leukoedge.synth.field import FIELD_PX_PER_UM, render_field
from leukoedge.synth.single import CELL_PX_PER_UM_400, default_px_per_um, render_cell
from leukoedge.synth.stage import StageSequence
from leukoedge.synth.writers import (
    MANIFEST_NAME,
    save_image,
    write_cell_dataset,
    write_fields,
    write_sequence,
)

__all__ = [
    "CELL_PX_PER_UM_400",
    "DIAMETER_UM",
    "FIELD_PX_PER_UM",
    "KINDS",
    "KIND_LABELS",
    "MANIFEST_NAME",
    "TCIA_CODES",
    "StageSequence",
    "SynthError",
    "default_px_per_um",
    "render_cell",
    "render_field",
    "save_image",
    "write_cell_dataset",
    "write_fields",
    "write_sequence",
]
