"""The server wing's one atomic writer (stdlib only, so the light processes - the campaign's TCP bridge -
can use it without loading numpy or ASE). The driver wing has its own, ``dynamat_driver.files``."""

from __future__ import annotations

import os
from pathlib import Path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """``text`` (UTF-8) through :func:`write_bytes_atomic`. Raises OSError (the caller says what failed)."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: str | Path, data: bytes, fsync: bool = False) -> Path:
    """``data`` to a temporary file in the same folder, then renamed over ``path`` (``os.replace``): a reader
    never sees half a file and a crash leaves the old one. The temporary name carries the process id, so two
    writers of one file never share a temporary. The folder is created. ``fsync``: the data is on disk
    before the rename (a restart point that must survive a power cut). Raises OSError."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
