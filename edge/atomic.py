"""Files that a crash or a power cut leaves either whole or absent, never half-written.

The crops the daemon saves and the model bundles that ``quantize`` ships are both read back by a
service that must not trip over a truncated file, so both are written the same careful way.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

#: Suffix of a file being written; such files are leftovers of a crash and may be removed.
TMP_SUFFIX = ".tmp"

__all__ = ["TMP_SUFFIX", "write_atomic"]


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` so that a crash leaves either the whole file or none.

    Temporary file in the same folder (same file system, so the rename is atomic), fsync, rename,
    fsync of the folder so the rename itself survives a power cut. The temporary name holds the
    process and thread, so two writers never share one. The temporary file is removed on any
    failure (ENOSPC included) and the error re-raised.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}{TMP_SUFFIX}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            os.fchmod(fd, mode)  # the umask must not make a model unreadable to the service user
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
