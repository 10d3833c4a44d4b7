"""JSON results (score.json, run.json) written atomically, numpy values made plain."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from dynamat.errors import DynamatError


def jsonable(x):
    """``json.dumps`` default for numpy scalars and arrays."""
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(type(x))


def write_json_atomic(path: str | Path, obj) -> Path:
    """Writes ``obj`` as indented JSON through a temporary file, so a reader never sees half a file."""
    path = Path(path)
    text = json.dumps(obj, indent=2, default=jsonable) + "\n"
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text)
        tmp.replace(path)
    except OSError as exc:
        raise DynamatError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


def ensure_writable_dir(path: str | Path, what: str = "") -> Path:
    """Creates ``path`` and proves it writable, else one line naming it (before any work is done)."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise DynamatError(f"cannot write {what or 'to'} {path}: {exc.strerror or exc}") from None
    return path
