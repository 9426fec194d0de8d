"""Store writes that could not be made yet, kept in a small JSON-lines file beside the database.

While the session database cannot be written (a full disk, an I/O error) the daemon keeps what it
counted in memory; what does not fit there is appended here, one JSON object per line, each line
fsynced, so a crash or a power cut does not lose it either. The next start writes the lines to the
database before counting anything new, skipping cells that are already there, and removes the file.

A line cut short by a crash (or by the full disk itself) is skipped with a warning when read back;
a failed append is cut off again so the next line starts clean.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from leukoedge.atomic import write_atomic

logger = logging.getLogger(__name__)

JOURNAL_NAME = "leukoedge.journal"


class Journal:
    """An append-only list of pending store writes (JSON-able dicts) in ``path``."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def append(self, record: dict[str, Any]) -> None:
        """Add one record, on disk (fsynced) before returning; OSError when it cannot be written."""
        line = (json.dumps(record, separators=(",", ":")) + "\n").encode("utf-8")
        new = not self.path.exists()
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        try:
            size = os.fstat(fd).st_size
            try:
                view = memoryview(line)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            except OSError:
                _truncate(fd, size)
                raise
        finally:
            os.close(fd)
        if new:
            _fsync_dir(self.path.parent)

    def rewrite(self, records: list[dict[str, Any]]) -> None:
        """Replace the whole journal with ``records`` (atomically); an empty list removes it."""
        if not records:
            self.clear()
            return
        data = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records)
        write_atomic(self.path, data.encode("utf-8"), 0o640)

    def load(self) -> list[dict[str, Any]]:
        """The records in the journal, in order (none when there is no journal)."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return []
        records = []
        for n, line in enumerate(raw.splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                logger.warning("%s: line %d is cut short or damaged; skipped", self.path, n)
                continue
            if isinstance(record, dict):
                records.append(record)
        return records

    def clear(self) -> None:
        """Remove the journal (every record in it is in the database)."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            return
        _fsync_dir(self.path.parent)


def _truncate(fd: int, size: int) -> None:
    try:
        os.ftruncate(fd, size)
    except OSError as e:
        logger.debug("cannot cut a failed journal line off: %s", e)


def _fsync_dir(folder: Path) -> None:
    try:
        dir_fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError as e:
        logger.debug("fsync of %s failed: %s", folder, e)
    finally:
        os.close(dir_fd)
