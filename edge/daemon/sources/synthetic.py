"""The synthetic microscope as a frame source: a moving stage over a generated smear, with truth."""

from __future__ import annotations

import time
from typing import Any

from leukoedge.daemon.config import SourceConfig
from leukoedge.daemon.sources.base import Pacer, check_frame
from leukoedge.daemon.types import Frame
from leukoedge.errors import CameraError


class SyntheticSource:
    """The synthetic microscope: a moving stage over a generated smear, with ground truth."""

    def __init__(self, config: SourceConfig) -> None:
        self.config = config
        self.uri = config.uri
        self.size = (config.width, config.height)
        self._seq: Any = None
        self._index = config.start_frame
        self._pacer = Pacer(config.fps)

    def open(self) -> None:
        from leukoedge.synth import StageSequence

        try:
            w, h = self.size
            self._seq = StageSequence(
                w,
                h,
                seed=self.config.seed,
                n_cells=max(1, round(self.config.cells_per_field * 16)),  # the slide is 4 x 4 fields
                speed_px_per_frame=self.config.stage_speed,
                n_frames=None,
            )
        except (ValueError, TypeError) as e:
            raise CameraError(f"{self.uri}: cannot start the synthetic microscope: {e}") from e

    def read(self) -> Frame | None:
        if self._seq is None:
            raise CameraError(f"{self.uri}: source is not open")
        self._pacer.wait()
        hold = self.config.hold_frame
        rgb, truth = self._seq.frame(min(self._index, hold) if hold else self._index)
        frame = Frame(self._index, time.time(), check_frame(rgb, self.size, self.uri), truth=truth)
        self._index += 1
        return frame

    def close(self) -> None:
        self._seq = None
