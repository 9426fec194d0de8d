"""The stage's shift between frames, from the cells themselves (no motion model).

Apart from the tracker's bookkeeping because it is a measurement: every (track, detection) pair
within reach votes for the shift it implies, and the shift most pairs agree on wins (ties go to the
previous frame's shift), so a stage that starts, stops or jumps is followed. Only tracks seen in the
latest frame vote, and a cell cut by the frame edge votes with its box side away from the edge (its
centre moves at about half the stage's speed while it enters or leaves).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from leukoedge.vision.detect import Detection

logger = logging.getLogger(__name__)


class Seen(Protocol):
    """What a vote needs of a track: when it was last seen, where, and how large."""

    last_frame: int
    diameter: float
    detection: Detection


def stage_shift(
    tracks: Sequence[Seen],
    detections: Sequence[Detection],
    frame_index: int,
    previous: np.ndarray,
    reach: float,
    gate: float,
    size: tuple[int, int],
) -> np.ndarray:
    """The stage's shift per frame that most (track, detection) pairs within ``reach`` agree on."""
    if not tracks or not detections:
        return previous
    # tracks seen in the latest frame vote; one unseen for a while has a stale position
    latest = max(t.last_frame for t in tracks)
    tracks = [t for t in tracks if t.last_frame == latest]
    dt = max(1, frame_index - latest)
    prev = np.array([t.detection.bbox for t in tracks], dtype=np.float64)
    boxes = np.array([d.bbox for d in detections], dtype=np.float64)
    shift = pair_shifts(prev, boxes, size).reshape(-1, 2)
    vel = shift[np.hypot(shift[:, 0], shift[:, 1]) <= reach] / dt
    if not len(vel):
        return previous
    tol = 0.5 * gate * float(np.median([t.diameter for t in tracks]))
    candidates = np.vstack([previous[None], vel])
    dist = np.hypot(*(candidates[:, None, :] - vel[None, :, :]).transpose(2, 0, 1))
    support = (dist <= tol).sum(axis=1)
    best = int(support.max())
    tied = np.flatnonzero(support == best)
    pick = tied[np.argmin(np.hypot(*(candidates[tied] - previous).T))]
    inliers = vel[dist[pick] <= tol]
    # the mean of the inliers near their median: centres are quantized, a median keeps the bias
    near = np.hypot(*(inliers - np.median(inliers, axis=0)).T) <= 0.5 * tol
    result: np.ndarray = inliers[near].mean(axis=0) if near.any() else np.median(inliers, axis=0)
    return result


def pair_shifts(prev: np.ndarray, boxes: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Shift of every (previous box, box) pair, tracks x detections x 2.

    A cell cut by the frame edge grows or shrinks as it crosses it, so its centre moves at
    about half the stage's speed; its box side away from that edge moves with the stage. Per
    axis, the shift is that of the side not at the edge (the centre's when neither is).
    """
    out = np.empty((len(prev), len(boxes), 2))
    for axis in (0, 1):
        lo, hi = axis, axis + 2
        p_lo, p_hi = prev[:, None, lo], prev[:, None, hi]
        b_lo, b_hi = boxes[None, :, lo], boxes[None, :, hi]
        at_lo = (p_lo <= 1) | (b_lo <= 1)
        at_hi = (p_hi >= size[axis] - 1) | (b_hi >= size[axis] - 1)
        shift = 0.5 * ((b_lo + b_hi) - (p_lo + p_hi))
        shift = np.where(at_hi & ~at_lo, b_lo - p_lo, shift)
        out[..., axis] = np.where(at_lo & ~at_hi, b_hi - p_hi, shift)
    return out
