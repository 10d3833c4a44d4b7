"""Error lines of a run scored against a reference or --system that is not the run's own.

A run folder's run.json names the system it ran and the reference it was made from; when
``dynamat score`` cannot go on (the reference lacks --system, or --system is another system's
atoms), the line says the run's system and what the reference holds, so the user sees which
``--reference`` or ``--system`` to pass. A run by hand (no run.json) keeps the plain lines.
"""

from __future__ import annotations

from pathlib import Path

from dynamat.errors import DynamatError
from dynamat.io.reference_h5 import list_systems
from dynamat.reference import resolve_reference, systems_held


def _ran(meta: dict) -> str | None:
    ran = meta.get("system")
    return ran if isinstance(ran, str) and ran else None


def _made_from(meta: dict, reference: Path) -> str:
    """'; the run was made from FILE' where run.json names another reference file than ``reference``."""
    made = meta.get("reference")
    if not isinstance(made, str) or not made or Path(made).resolve() == Path(reference).resolve():
        return ""
    return f"; the run was made from {made}"


def run_defaults(run_dir: Path | None, system: str | None, reference: Path | None, meta: dict) -> tuple[str, Path | None]:
    """``(system, reference)`` to score with: what was given, else the run's own (its run.json names the system
    and the reference file it was made from; that file, recorded as an absolute path, is taken only while it
    still exists, else the default reference is looked up for the system)."""
    if system is None:
        system = _ran(meta)
        if system is None:
            raise DynamatError(_no_system(run_dir, meta))
    if reference is None and system == _ran(meta):
        made = meta.get("reference")
        if isinstance(made, str) and Path(made).is_absolute() and Path(made).is_file():  # relative: to what?
            reference = Path(made)
    return system, reference


def run_overrides(meta: dict, system: str) -> dict:
    """The class and dims a run was given on its command line (``dynamat run --class C --dims 2``: run.json's
    ``system_info`` and its sources), to score the run as it ran when ``system`` is its own: Eqs. 5-9 take the
    dims, the report's per-class tables the class, whatever the reference file or the catalogue say."""
    info = meta.get("system_info") if system == _ran(meta) else None
    if not isinstance(info, dict):
        return {}
    given = {k for k, src in (info.get("sources") or {}).items() if str(src).startswith("command line")}
    out = {"system_class": info.get("class")} if "class" in given else {}
    return out | ({"dims": info.get("dims")} if "dims" in given else {})


def _no_system(run_dir: Path | None, meta: dict) -> str:
    if run_dir is None:
        return "give --system NAME (a trajectory names no system)"
    if meta:
        return f"give --system NAME ({run_dir}/run.json names no system)"
    below = next((p.parent for pat in ("*/run.json", "*/*/run.json") for p in sorted(Path(run_dir).glob(pat))), None)
    hint = f"; a results folder? score each run folder, e.g. --run {below}" if below else ""
    return f"give --system NAME: {run_dir} holds no run.json (a run by hand, or not a run folder){hint}"


def reference_for_run(reference: Path | None, system: str, run_dir: Path, meta: dict) -> Path:
    """The reference file to score the run in ``run_dir`` against (:func:`resolve_reference`), refused in one
    line naming the run's system (run.json) and what the file holds when it lacks ``system`` (asked once
    :func:`dynamat.reference.load_system` failed: a score that goes on pays nothing for it)."""
    ran = _ran(meta)
    try:
        reference = resolve_reference(reference, system)
    except DynamatError as exc:  # no file holds --system: which system the run is of is the useful part
        if ran and ran != system:
            raise DynamatError(f"{exc}; the run in {run_dir} is of system {ran!r} (its run.json)") from None
        raise
    if not ran or system in list_systems(reference):
        return reference
    held, came = systems_held(reference), _made_from(meta, reference)
    if ran == system:
        raise DynamatError(f"the run in {run_dir} is of system {ran!r} (its run.json), which {reference} does "
                           f"not hold ({held}){came}")
    raise DynamatError(f"system {system!r} is not in {reference} ({held}); the run in {run_dir} is of system "
                       f"{ran!r} (its run.json){came}")


def atoms_mismatch(reference: Path, system: str, run_dir: Path | None, meta: dict) -> str:
    """The line for a trajectory whose atoms are not ``system``'s: for a run of another system (run.json),
    which one, and the --system to give or what the reference holds."""
    ran = _ran(meta)
    if not ran or ran == system:
        return "the trajectory's atoms do not match the reference system's"
    fix = (f"score it with --system {ran}" if ran in list_systems(reference)
           else f"{reference} does not hold {ran!r} ({systems_held(reference)}){_made_from(meta, reference)}")
    return (f"the run in {run_dir} is of system {ran!r} (its run.json), whose atoms do not match system "
            f"{system!r} of {reference}: {fix}")
