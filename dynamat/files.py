"""The server wing's one atomic writer (stdlib only, so the light processes - the campaign's TCP bridge -
can use it without loading numpy or ASE). The driver wing has its own, ``dynamat_driver.files``."""

from __future__ import annotations

import os
from pathlib import Path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """``text`` to a temporary file in the same folder, then renamed over ``path`` (``os.replace``): a reader
    never sees half a file and a crash leaves the old one. The temporary name carries the process id, so two
    writers of one file never share a temporary. The folder is created. Raises OSError (the caller says what
    failed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
