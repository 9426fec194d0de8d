"""Finite numbers only: the one check for NaN and infinity, and strict JSON out.

A NaN compares false with everything, so a range check such as ``0 <= t <= 1`` lets it through
and a threshold of NaN calls every cell negative. Every float that comes from outside (the daemon
configuration, a command-line option, a model manifest) passes :func:`finite_float` with the key it
came from; every JSON document leukoedge prints or serves goes through :func:`dumps`, which never
writes the non-standard ``NaN``/``Infinity`` tokens.
"""

from __future__ import annotations

import json
import math
from typing import Any


class NotFiniteError(ValueError):
    """A value that must be a finite number is not; ``key`` says where it came from."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}" if key else problem)
        self.key, self.problem = key, problem


def finite_float(value: Any, key: str) -> float:
    """``value`` as a finite float; :class:`NotFiniteError` naming ``key`` when it is not one.

    Accepts ints, floats and numeric strings (as ``float()`` does), refuses booleans, NaN and
    infinities.
    """
    if isinstance(value, bool):
        raise NotFiniteError(key, f"must be a number, not {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise NotFiniteError(key, f"must be a number, not {value!r}") from None
    if not math.isfinite(number):
        raise NotFiniteError(key, f"must be a finite number, not {value!r}")
    return number


def json_safe(value: Any) -> Any:
    """``value`` with NaN/Inf turned into None and tuples into lists, so the JSON is strict."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def dumps(value: Any, **kwargs: Any) -> str:
    """Strict JSON text: a non-finite number becomes ``null``, never a ``NaN`` token."""
    return json.dumps(json_safe(value), allow_nan=False, **kwargs)
