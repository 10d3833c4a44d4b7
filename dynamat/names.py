"""The one place where a name (model, system, run label, campaign, socket) becomes part of a path.

A name is a single path component of printable characters: no separator, not ``.`` or ``..``,
no leading ``-`` (it would read as an option to i-PI or sbatch), no whitespace or quotes (it goes
into XML, sbatch lines and shell commands). A run folder is resolved and must lie inside ``--out``.
"""

from __future__ import annotations

import re
from pathlib import Path

from dynamat.errors import DynamatError

_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+=@,-]{0,127}$")
#: folder names a campaign keeps for itself
RESERVED = {"_campaign", "report"}


def check_name(kind: str, name: str) -> str:
    """``name`` if it is safe as one folder name, else a one-line :class:`DynamatError`."""
    if not isinstance(name, str) or not _SAFE.match(name) or name in RESERVED or ".." in name:
        raise DynamatError(
            f"{kind} name {name!r} cannot be used as a folder name: use letters, digits and . _ + = @ , - "
            "(not starting with . or -, at most 128 characters)"
        )
    return name


def run_dir_in(out: str | Path, *names: tuple[str, str]) -> Path:
    """``out/<name>/<name>...`` resolved, each name checked, and proven to lie inside ``out``."""
    base = Path(out).resolve()
    path = base
    for kind, name in names:
        path = path / check_name(kind, name)
    path = path.resolve()
    if base not in path.parents:
        raise DynamatError(f"the run folder {path} would lie outside --out {base}")
    return path


def check_socket_name(name: str) -> str:
    """A unix socket name for i-PI's ``<address>``: one safe component (it is put in XML and in /tmp)."""
    return check_name("socket", name)
