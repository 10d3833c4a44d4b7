"""Files the driver writes for its supervisor (timing, pack status): whole or not at all."""

from __future__ import annotations

import json
import os
from pathlib import Path


def write_json_atomic(path: str | Path, data: dict) -> None:
    """Writes ``data`` to ``path`` through a temporary file and a rename, so that a reader polling
    ``path`` (the supervisor) never sees half a file, even when the driver is killed mid-write."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "w") as fh:
            json.dump(data, fh, indent=1, default=str)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise
