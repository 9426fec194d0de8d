"""Finding a TFLite runtime: ai-edge-litert first, then tflite-runtime, then TensorFlow's tf.lite.

Only the runtime that is used gets imported; TensorFlow is imported only when neither lite runtime
is installed (or when asked for by name).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
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

    def make_interpreter(
        self, model_path: str, num_threads: int | None = None, batch: int | None = None
    ) -> Any:
        """Create and allocate an interpreter, turning runtime failures into :class:`ModelError`.

        ``batch`` resizes the first input's leading dimension before allocation. What the native
        runtime prints meanwhile ("Created TensorFlow Lite XNNPACK delegate ...") goes to the log.
        """
        kwargs: dict[str, Any] = {"model_path": model_path}
        if num_threads:
            kwargs["num_threads"] = int(num_threads)
        try:
            with native_output_to_log():
                interpreter = self.interpreter_class(**kwargs)
                if batch is not None:
                    details = interpreter.get_input_details()[0]
                    if int(details["shape"][0]) != batch:
                        shape = [int(batch), *(int(s) for s in details["shape"][1:])]
                        interpreter.resize_tensor_input(details["index"], shape)
                interpreter.allocate_tensors()
        except (ValueError, RuntimeError, IndexError) as e:
            raise ModelError(f"{model_path}: the {self.name} runtime cannot load this model: {e}") from e
        return interpreter


@contextlib.contextmanager
def native_output_to_log() -> Iterator[None]:
    """Send what native code writes to file descriptor 2 meanwhile to the log instead.

    TFLite prints "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." on stderr for every
    interpreter, which would clutter command output; those INFO lines are logged at debug level,
    anything else the runtime prints at warning level, so no runtime error is lost.
    """
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all
        yield
        return
    with tempfile.TemporaryFile() as capture:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            for line in capture.read().decode("utf-8", "replace").splitlines():
                if line.strip():
                    logger.log(logging.DEBUG if line.startswith("INFO:") else logging.WARNING, "%s", line)


def _version_of(name: str, module: Any) -> str:
    try:
        from importlib.metadata import version

        dist = {"ai_edge_litert": "ai-edge-litert", "tflite_runtime": "tflite-runtime"}.get(name, name)
        return version(dist)
    except Exception:  # metadata can be missing for system packages
        return str(getattr(module, "__version__", "unknown"))


def _import(name: str) -> Runtime:
    path = RUNTIMES[name]
    module = importlib.import_module(path)
    interpreter_class = getattr(module, "Interpreter", None)
    if interpreter_class is None:
        # The package ``tensorflow.lite`` is not the API namespace ``tf.lite``: walk from the top.
        api: Any = importlib.import_module(name)
        try:
            for part in path.split(".")[1:]:
                api = getattr(api, part)
            interpreter_class = api.Interpreter
        except AttributeError as e:
            raise ImportError(f"{path} has no Interpreter") from e
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
