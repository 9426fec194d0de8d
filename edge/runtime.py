"""Finding a TFLite runtime: ai-edge-litert first, then tflite-runtime, then TensorFlow's tf.lite.

Only the runtime that is used gets imported; TensorFlow is imported only when neither lite runtime
is installed (or when asked for by name).
"""

from __future__ import annotations

import importlib
import logging
import os
from dataclasses import dataclass
from typing import Any

from leukoedge.errors import ModelError, RuntimeMissingError

logger = logging.getLogger(__name__)

#: Runtime names in the order they are tried, with the module that holds ``Interpreter``.
RUNTIMES: dict[str, str] = {
    "ai_edge_litert": "ai_edge_litert.interpreter",
    "tflite_runtime": "tflite_runtime.interpreter",
    "tensorflow": "tensorflow.lite",
}
#: Distribution to install for each runtime, for error messages.
INSTALL_HINT: dict[str, str] = {
    "ai_edge_litert": "pip install ai-edge-litert",
    "tflite_runtime": "pip install 'tflite-runtime>=2.14' 'numpy<2'",
    "tensorflow": "pip install tensorflow",
}
#: Environment variable that forces a runtime (same names as ``--runtime``).
RUNTIME_ENV = "LEUKOEDGE_RUNTIME"


@dataclass(frozen=True)
class Runtime:
    """A TFLite runtime that imported: its name, version and Interpreter class."""

    name: str
    version: str
    interpreter_class: Any

    def make_interpreter(self, model_path: str, num_threads: int | None = None) -> Any:
        """Create and allocate an interpreter, turning runtime failures into :class:`ModelError`."""
        kwargs: dict[str, Any] = {"model_path": model_path}
        if num_threads:
            kwargs["num_threads"] = int(num_threads)
        try:
            interpreter = self.interpreter_class(**kwargs)
            interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise ModelError(f"{model_path}: the {self.name} runtime cannot load this model: {e}") from e
        return interpreter


def _version_of(name: str, module: Any) -> str:
    try:
        from importlib.metadata import version

        dist = {"ai_edge_litert": "ai-edge-litert", "tflite_runtime": "tflite-runtime"}.get(name, name)
        return version(dist)
    except Exception:  # metadata can be missing for system packages
        return str(getattr(module, "__version__", "unknown"))


def _import(name: str) -> Runtime:
    module = importlib.import_module(RUNTIMES[name])
    interpreter_class = module.Interpreter
    return Runtime(name, _version_of(name, importlib.import_module(name)), interpreter_class)


_cache: dict[str, Runtime] = {}


def available_runtimes() -> list[str]:
    """Names of the runtimes that are installed (found, not imported)."""
    from importlib.util import find_spec

    return [name for name in RUNTIMES if find_spec(name) is not None]


def get_runtime(name: str | None = None) -> Runtime:
    """Import and return a runtime: the named one, or the first that imports.

    ``name`` may also come from the ``LEUKOEDGE_RUNTIME`` environment variable.
    """
    name = name or os.environ.get(RUNTIME_ENV) or None
    if name is not None:
        if name not in RUNTIMES:
            raise RuntimeMissingError(f"unknown runtime {name!r}; choose one of {', '.join(RUNTIMES)}")
        if name not in _cache:
            try:
                _cache[name] = _import(name)
            except ImportError as e:
                raise RuntimeMissingError(
                    f"runtime {name!r} is not usable here ({e}); install it with: {INSTALL_HINT[name]}"
                ) from e
        return _cache[name]
    failures = []
    for candidate in RUNTIMES:
        if candidate in _cache:
            return _cache[candidate]
        try:
            runtime = _import(candidate)
        except ImportError as e:
            failures.append(f"{candidate}: {e}")
            continue
        _cache[candidate] = runtime
        logger.debug("using TFLite runtime %s %s", runtime.name, runtime.version)
        return runtime
    raise RuntimeMissingError(
        "no TFLite runtime is installed. Install one of: "
        + "; ".join(INSTALL_HINT.values())
        + " (tried: "
        + "; ".join(failures)
        + ")"
    )
