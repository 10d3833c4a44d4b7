"""JSON results (score.json, run.json) written atomically, numpy values made plain."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from dynamat.errors import DynamatError
from dynamat.files import write_text_atomic


def jsonable(x):
    """``json.dumps`` default for numpy scalars and arrays."""
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(type(x))


def json_text(obj, indent: int = 2) -> str:
    """``obj`` as indented JSON with numpy values made plain, ending in a newline."""
    return json.dumps(obj, indent=indent, default=jsonable) + "\n"


def write_json_atomic(path: str | Path, obj, indent: int = 2) -> Path:
    """Writes ``obj`` as indented JSON through :func:`dynamat.files.write_text_atomic`; a failure is one line."""
    try:
        return write_text_atomic(path, json_text(obj, indent))
    except OSError as exc:
        raise DynamatError(f"cannot write {path}: {exc.strerror or exc}") from None


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
