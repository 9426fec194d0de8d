"""Decoded model inputs, cached on disk so that a second run does not decode the images again.

Each image is decoded by :func:`leukoedge.vision.images.load_cell` (the one decoding path the edge
uses too) and stored as raw 64x64x3 bytes under a key made of the file's SHA-256. The cache
folder name carries a fingerprint of the input contract, of ``leukoedge.vision.images`` itself and of
Pillow's version, so a change to any of them decodes afresh instead of reusing stale pixels; a
changed file has a new hash and is decoded again. Entries are written to a temporary file and
renamed, so two runs sharing a cache never read a half-written entry.

Decoding runs in threads (Pillow releases the GIL while decoding and resizing): on 2 cores the
1,600 aml-lmu JPEGs took 1.35 s serially and 0.84 s with 2 threads. Threads, not processes,
because the training process has TensorFlow loaded and forking it is unsafe.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import PIL

from leukoedge import contract
from leukoedge.contract import INPUT_SIZE
from leukoedge.errors import DataError
from leukoedge.train.datasets import Record
from leukoedge.vision import images
from leukoedge.vision.images import load_cell

logger = logging.getLogger(__name__)

#: Bump when the on-disk entry format changes.
CACHE_FORMAT = 1
#: Environment variable naming the cache folder.
CACHE_ENV = "LEUKOEDGE_CACHE"

Progress = Callable[[int], Any]


@dataclass
class LoadedArrays:
    """Model inputs and targets for the records that decoded; the others are listed in ``errors``."""

    x: np.ndarray  # uint8, N x size x size x 3
    y: np.ndarray  # int8, N; 1 = malignant (CLASS_NAMES[1])
    records_kept: list[Record]
    errors: list[tuple[str, str]] = field(default_factory=list)
    cache_hits: int = 0
    decoded: int = 0

    def summary(self) -> dict[str, Any]:
        """JSON-able counts for a run's outputs, with the first failures."""
        return {
            "n_loaded": len(self.records_kept),
            "n_failed": len(self.errors),
            "failed": [{"path": p, "error": m} for p, m in self.errors[:20]],
            "cache_hits": self.cache_hits,
            "decoded": self.decoded,
        }


def default_cache_dir() -> Path:
    """``$LEUKOEDGE_CACHE``, else ``$XDG_CACHE_HOME/leukoedge``, else ``~/.cache/leukoedge``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "leukoedge"


def contract_tag(size: int = INPUT_SIZE) -> str:
    """Folder name of the cache entries valid for this contract, decoder code and Pillow version."""
    h = hashlib.sha256()
    for part in (CACHE_FORMAT, size, contract.PIXEL_FORMAT, contract.RESIZE_METHOD, PIL.__version__):
        h.update(f"{part}\0".encode())
    h.update(Path(images.__file__).read_bytes())
    return f"cells-{size}px-{h.hexdigest()[:16]}"


class _Store:
    """One cache folder; turns itself off (with one warning) when it cannot be written."""

    def __init__(self, folder: Path, size: int) -> None:
        self.folder = folder
        self.nbytes = size * size * 3
        self.shape = (size, size, 3)
        self.writable = True
        self._lock = threading.Lock()

    def _entry(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.u8"

    def get(self, key: str) -> np.ndarray | None:
        path = self._entry(key)
        try:
            data = path.read_bytes()
        except OSError:
            return None
        if len(data) != self.nbytes:
            return None  # a foreign or damaged entry: decode again and overwrite it
        return np.frombuffer(data, dtype=np.uint8).reshape(self.shape)

    def put(self, key: str, arr: np.ndarray) -> None:
        if not self.writable:
            return
        path = self._entry(key)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(np.ascontiguousarray(arr, dtype=np.uint8).tobytes())
            os.replace(tmp, path)
        except OSError as e:
            with self._lock:
                if self.writable:
                    self.writable = False
                    logger.warning(
                        "cannot write the image cache in %s (%s); continuing without it", self.folder, e
                    )
            with contextlib.suppress(OSError):
                tmp.unlink()


def _load_one(path: str, store: _Store | None, size: int) -> tuple[np.ndarray | None, str | None, bool]:
    """(array, error message, cache hit) for one image; never raises."""
    key = None
    if store is not None:
        try:
            key = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        except OSError:
            key = None  # load_cell below reports why the file cannot be read
        cached = store.get(key) if key else None
        if cached is not None:
            return cached, None, True
    try:
        arr = load_cell(path, size=size)
    except DataError as e:
        return None, str(e), False
    except Exception as e:  # a batch goes on past any one bad file
        return None, f"{path}: unexpected error while decoding: {type(e).__name__}: {e}", False
    if store is not None and key:
        store.put(key, arr)
    return arr, None, False


def load_arrays(
    records: Sequence[Record],
    cache_dir: str | os.PathLike | None = None,
    progress: Progress | None = None,
    workers: int | None = None,
    use_cache: bool = True,
    size: int = INPUT_SIZE,
) -> LoadedArrays:
    """Decode ``records`` to model inputs, using and filling the on-disk cache.

    A bad image is skipped and listed in ``errors`` (path, message), never raised. ``progress``
    is called with the number of images just finished (an increment), so a
    ``click.progressbar``'s ``update`` can be passed directly. ``workers`` defaults to the CPU
    count (at most 4); 1 decodes in the calling thread.
    """
    store = None
    if use_cache:
        store = _Store(Path(cache_dir or default_cache_dir()) / contract_tag(size), size)
    workers = workers or min(4, os.cpu_count() or 1)
    x = np.empty((len(records), size, size, 3), dtype=np.uint8)
    ok = np.zeros(len(records), dtype=bool)
    result = LoadedArrays(x=x, y=np.empty(0, np.int8), records_kept=[])
    paths = [r.path for r in records]
    if workers > 1 and len(records) > 1:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="leukoedge-decode") as pool:
            _collect(pool.map(lambda p: _load_one(p, store, size), paths), paths, result, ok, progress)
    else:
        _collect((_load_one(p, store, size) for p in paths), paths, result, ok, progress)
    result.x = x[ok]
    result.records_kept = [r for r, keep in zip(records, ok, strict=True) if keep]
    result.y = np.array([r.y for r in result.records_kept], dtype=np.int8)
    if result.errors:
        logger.warning(
            "%d of %d images could not be decoded, e.g. %s",
            len(result.errors),
            len(records),
            result.errors[0][1],
        )
    logger.info(
        "loaded %d images (%d from cache, %d decoded)",
        len(result.records_kept),
        result.cache_hits,
        result.decoded,
    )
    return result


def _collect(results, paths: list[str], out: LoadedArrays, ok: np.ndarray, progress: Progress | None) -> None:
    for i, (arr, error, hit) in enumerate(results):
        if arr is None:
            out.errors.append((paths[i], error or "unknown error"))
        else:
            out.x[i] = arr
            ok[i] = True
            out.cache_hits += hit
            out.decoded += not hit
        if progress is not None:
            progress(1)
