"""The one place where a name (model, system, run label, campaign, socket) becomes part of a path.

A name is a single path component of printable characters: no separator, not ``.`` or ``..``,
no leading ``-`` (it would read as an option to i-PI or sbatch), no whitespace or quotes (it goes
into XML, sbatch lines and shell commands). A run folder is resolved and must lie inside ``--out``.

A model may also be a user's ASE calculator, ``MODULE:CALLABLE`` (dotted Python names; the driver
imports it, the server only checks the syntax). Its folder is the spec with ``:`` written ``@``:
``--model ase.calculators.emt:EMT`` runs in ``<out>/ase.calculators.emt@EMT/<system>``; run.json
keeps the spec as the model name and the driver's timing record its options.
"""

from __future__ import annotations

import re
from pathlib import Path

from dynamat.errors import DynamatError

_DOTTED = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*"
#: a user's model, ``MODULE:CALLABLE`` (the driver's dynamat_driver.models.custom.SPEC)
MODEL_SPEC = re.compile(rf"^{_DOTTED}:{_DOTTED}$")
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


def model_folder(model: str) -> str:
    """The run-folder name of ``model``: the name itself, or for ``MODULE:CALLABLE`` the spec with
    ``@`` for ``:``; checked as one safe component either way."""
    if isinstance(model, str) and ":" in model:
        if not MODEL_SPEC.match(model):
            raise DynamatError(f"model {model!r} is neither a model name nor MODULE:CALLABLE with dotted Python "
                               "names (e.g. ase.calculators.emt:EMT)")
        return check_name("model", model.replace(":", "@"))
    return check_name("model", model)


def run_dir_in(out: str | Path, *names: tuple[str, str]) -> Path:
    """``out/<name>/<name>...`` resolved, each name checked, and proven to lie inside ``out``."""
    base = Path(out).resolve()
    path = base
    for kind, name in names:
        path = path / (model_folder(name) if kind == "model" else check_name(kind, name))
    path = path.resolve()
    if base not in path.parents:
        raise DynamatError(f"the run folder {path} would lie outside --out {base}")
    return path


#: replica k >= 1 of a run folder or reference group NAME is NAME + REPLICA_TAG + k; replica 0 is NAME itself,
#: so a single run (or reference) is replica 0 of its set and its layout never changes
REPLICA_TAG = "_r"


def replica_name(name: str, k: int) -> str:
    """``name`` for replica 0, ``<name>_r<k>`` for replica ``k`` >= 1 (run folders and reference groups alike)."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise DynamatError(f"a replica index is a non-negative integer, got {k!r}")
    return name if k == 0 else f"{name}{REPLICA_TAG}{k}"


def check_socket_name(name: str) -> str:
    """A unix socket name for i-PI's ``<address>``: one safe component (it is put in XML and in /tmp)."""
    return check_name("socket", name)
