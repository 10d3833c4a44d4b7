"""Is a model name one the driver can serve? Asked before any run folder is made.

A misspelt ``--model`` used to get as far as a run folder (and i-PI) before the driver refused it, leaving
a 'failed' run behind. The driver resolves a name from its registry (aliases case-insensitively), from
the plugin families of its environment, or as ``MODULE:CALLABLE``; all of that is data the server can
read without importing a model package (:func:`dynamat_driver.models.get_model_info`), so it asks the
same function. A name only a driver of another environment (``--driver-cmd``) may know is asked from
that driver (``--list --json``, as ``dynamat models --driver-cmd`` does); when that driver cannot be
asked, nothing is refused here and the run says what the driver says.
"""

from __future__ import annotations

import difflib
import shlex

from dynamat.errors import DynamatError
from dynamat.names import model_folder


def _driver_names(driver_cmd: str) -> tuple[list[str], list[str]] | None:
    """The names and aliases the driver of ``driver_cmd`` lists, as it resolves them: (the registry's, in any
    case; plugin families', exactly), or None where it cannot be asked."""
    from dynamat.models_table import query_driver

    try:
        rows = query_driver(driver_cmd, timeout=60.0)
    except DynamatError:
        return None
    out: tuple[list[str], list[str]] = ([], [])
    for r in rows:
        if isinstance(r, dict):
            plugin = bool((r.get("source") or {}).get("plugin"))
            out[plugin].extend(n for n in [r.get("name"), *(r.get("aliases") or [])] if isinstance(n, str))
    return out


def _resolves_here(model: str) -> bool:
    from dynamat_driver import DriverError
    from dynamat_driver.models import get_model_info

    try:
        get_model_info(model)
    except DriverError:
        return False
    return True


def check_model_known(model: str, file_names=(), driver_cmd: str | None = None) -> None:
    """Refuses, in one line naming near matches, a ``model`` that is neither a models file's name
    (``file_names``), nor ``MODULE:CALLABLE`` (its syntax is :func:`dynamat.names.model_folder`'s to
    check, its import the driver's), nor a name the driver resolves."""
    model_folder(model)  # a name that cannot be a folder (or a malformed spec) says so first, more precisely
    if model in file_names or ":" in model or _resolves_here(model):
        return
    if driver_cmd:
        listed, note = _driver_names(driver_cmd), ""
        if listed is None:
            return  # that driver could not be asked: the run will say what it says
        registered, plugins = listed
        if model.lower() in {n.lower() for n in registered} or model.strip() in plugins:
            return
        names = registered + plugins
    else:  # a plugin family that cannot be used may be the one meant: its error says why
        from dynamat.models_file import registered_names
        from dynamat_driver.models.plugins import broken_plugins_note

        names, note = list(registered_names()), broken_plugins_note()
    names = sorted(set(names) | set(file_names))
    near = difflib.get_close_matches(model, names, n=3, cutoff=0.6) or difflib.get_close_matches(
        model.lower(), [n.lower() for n in names], n=3, cutoff=0.6)
    listing = "`dynamat models" + (f" --driver-cmd {shlex.quote(driver_cmd)}" if driver_cmd else "") + "`"
    raise DynamatError(
        f"unknown model {model!r}" + (f" (did you mean {' or '.join(near)}?)" if near else "")
        + f"; {listing} lists the models the driver serves"
        + ("; the --models-file names " + ", ".join(sorted(file_names)) if file_names else "")
        + "; a calculator of your own is MODULE:CALLABLE or a --models-file table" + note)


def _option_keys(driver_args) -> list[str]:
    """The KEY of every ``-o``/``--option KEY=VALUE`` among driver arguments, read as the driver's click
    parser reads them (``--option=K=V``, ``--option K=V``, ``-o K=V``, ``-oK=V``)."""
    keys, args = [], list(driver_args)
    for i, a in enumerate(args):
        if a in ("-o", "--option"):
            value = args[i + 1] if i + 1 < len(args) else ""
        elif a.startswith("--option="):
            value = a[len("--option="):]
        elif a.startswith("-o") and not a.startswith("--"):
            value = a[2:]
        else:
            continue
        key, sep, _ = value.partition("=")
        if not sep or not key.strip():  # as the driver would say at its start, after the run folder is made
            raise DynamatError(f"driver option {a!r} wants KEY=VALUE, got {value!r}")
        keys.append(key.strip())
    return keys


def check_model_options(model: str, driver_args) -> None:
    """Refuses, in the driver's own words, an option (``-o KEY=VALUE`` in ``driver_args``) that a registered
    model's loader does not take (:attr:`ModelInfo.options`), before any run folder is made or job queued.
    ``MODULE:CALLABLE`` models and plugin families take what their code takes: their driver checks."""
    keys = _option_keys(driver_args)
    if not keys:
        return
    from dynamat_driver import DriverError
    from dynamat_driver.models import get_model_info, reject_unknown_options
    from dynamat_driver.models.plugins import BUILTIN_FAMILIES

    try:
        info = get_model_info(model)
    except DriverError:
        return  # not a name of this environment's registry: check_model_known says what is wrong
    if info.family == "custom" or info.family not in BUILTIN_FAMILIES:
        return
    try:
        reject_unknown_options(dict.fromkeys(keys, ""), info.options, info.name)
    except DriverError as exc:
        raise DynamatError(str(exc)) from None


__all__ = ["check_model_known", "check_model_options"]
