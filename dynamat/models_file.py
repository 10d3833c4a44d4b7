"""``--models-file models.toml``: a user's models, one TOML table each, named by the table.

    [my-lj]
    calculator = "ase.calculators.lj:LennardJones"    # MODULE:CALLABLE, imported by the driver only
    options = {sigma = 2.3, epsilon = 0.4, rc = 6.0}   # its keyword arguments
    label = "LJ (fitted)"                              # name in reports [default: the table name]
    tier = 5                                           # an integer or a word [default: none]
    n_params = 2                                       # parameter count, for the Pareto front
    training_set = "my AIMD, 300 K"                    # recorded
    dispersion = "d3-bj"                               # or "d3-bj(r2scan)": --dispersion for this model
    driver_cmd = "~/envs/mace/bin/dynamat-driver"      # its own environment

The table name is what ``--model`` / ``--models`` take and the run folder's name (checked by
:func:`dynamat.names.check_name`; a registered model's name is refused, so a report never shows
two different models under one name). The file is data (:mod:`tomllib`): nothing in it runs here.
The server hands the driver ``--model MODULE:CALLABLE -o KEY=VALUE ...`` and the facts
(``--label --tier --n-params --training-set``), which the driver's timing file reports back, whence
run.json, score.json and every report table and figure take them as they do a registered model's.
Options are passed as text and typed by the driver as ``--model-option`` values are (a TOML
string ``"path:best.pt"`` is made absolute from the models file's folder).
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from dynamat.errors import DynamatError
from dynamat.names import MODEL_SPEC, check_name

KEYS = ("calculator", "options", "driver_cmd", "label", "tier", "n_params", "dispersion", "training_set")
_DISPERSION = re.compile(r"^d3-bj(?:\(([A-Za-z0-9_+-]{1,40})\))?$")
_TEXT_MAX = 200


@dataclass(frozen=True)
class ModelEntry:
    """One table of a models file."""

    name: str
    calculator: str  # MODULE:CALLABLE
    options: dict = field(default_factory=dict)  # option name -> the driver's text for it
    driver_cmd: str | None = None
    label: str | None = None
    tier: int | str | None = None
    n_params: int | None = None
    dispersion: str | None = None  # "d3-bj" or "d3-bj(functional)"
    training_set: str | None = None

    def driver_args(self) -> tuple[str, ...]:
        """What the driver gets besides ``--model self.calculator``: options, facts, dispersion."""
        args = [f"--option={k}={v}" for k, v in self.options.items()]
        args.append(f"--label={self.label or self.name}")
        if self.tier is not None:
            args.append(f"--tier={self.tier}")
        if self.n_params is not None:
            args.append(f"--n-params={self.n_params}")
        if self.training_set is not None:
            args.append(f"--training-set={self.training_set}")
        if self.dispersion:
            args += dispersion_args("d3-bj", _DISPERSION.match(self.dispersion).group(1) or None)
        return tuple(args)


def dispersion_args(dispersion: str | None, functional: str | None) -> tuple[str, ...]:
    """``--dispersion`` and ``--dispersion-functional`` (the command line's, or a table's ``dispersion``) as
    driver arguments; the driver checks the functional's name against its parameter tables."""
    if functional is not None and not dispersion:
        raise DynamatError("--dispersion-functional only matters with --dispersion d3-bj")
    if not dispersion:
        return ()
    name_ok = functional is None or 0 < len(functional) <= 40 and all(c.isalnum() or c in "-_+()" for c in functional)
    if not name_ok:
        raise DynamatError(f"--dispersion-functional wants a functional's name like pbe or r2scan, got {functional!r}")
    return (f"--dispersion={dispersion}",) + (() if functional is None else (f"--dispersion-functional={functional}",))


def model_option_args(pairs, must_exist: bool = True) -> tuple[str, ...]:
    """``--model-option`` values as driver arguments; a malformed one is one line (the server never
    imports the model, so the key's meaning is the driver's to check). ``must_exist``: a ``path:`` file
    must be there now (a driver started by this command reads it); False for a command printed to be
    run later (``dynamat inputs``), whose driver says so when it starts."""
    out, seen = [], {}
    for p in pairs:
        key, sep, value = p.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key.isidentifier() or any(not c.isprintable() for c in value):
            raise DynamatError(f"--model-option wants KEY=VALUE with a Python name as KEY, got {p!r}")
        if key in seen:  # the driver would take the last one: a typo in a long command would pass unseen
            raise DynamatError(f"--model-option {key} is given twice ({seen[key]!r} and {p!r}): give it once")
        seen[key] = p
        if value.startswith("path:"):  # the user's folder, not the run folder the driver works in
            if not value[len("path:"):].strip():
                raise DynamatError(f"--model-option {p!r} names no path after 'path:'")
            value = "path:" + os.path.abspath(os.path.expanduser(value[len("path:"):].strip()))
            if must_exist and not os.path.exists(value[len("path:"):]):  # the driver would find out only in the run folder
                raise DynamatError(f"--model-option {key}: {value[len('path:'):]} does not exist")
        out.append(f"--option={key}={value}")
    return tuple(out)


def _fail(path: Path, table: str, msg: str) -> DynamatError:
    return DynamatError(f"{path}: [{table}]: {msg}")


def _text(path, table, key, value) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > _TEXT_MAX or not value.isprintable():
        raise _fail(path, table, f"{key} must be one line of printable text (at most {_TEXT_MAX} characters), "
                                 f"got {value!r}")
    return value


def _option_text(path: Path, table: str, key: str, value) -> str:
    """A TOML value as the driver's ``-o KEY=VALUE`` text (typed again by the driver)."""
    if not key.isidentifier():
        raise _fail(path, table, f"option name {key!r} is not a Python identifier")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise _fail(path, table, f"option {key} = {value!r} is not a finite number")
        return repr(value)
    if isinstance(value, str) and value.isprintable() and len(value) <= 4096:
        if value.startswith("path:"):  # relative to the models file, not to the run folder
            return "path:" + str((path.parent / os.path.expanduser(value[len("path:"):])).resolve())
        return value
    raise _fail(path, table, f"option {key} must be a boolean, number or one-line string, got {type(value).__name__}")


def _entry(path: Path, name: str, table) -> ModelEntry:
    if not isinstance(table, dict):
        raise DynamatError(f"{path}: {name!r} must be a table ([{name}] with calculator = \"MODULE:CALLABLE\")")
    try:
        check_name("model", name)
    except DynamatError as exc:
        raise DynamatError(f"{path}: table [{name}]: {exc}") from None
    unknown = sorted(set(table) - set(KEYS))
    if unknown:
        raise _fail(path, name, f"unknown key(s) {', '.join(unknown)} (known: {', '.join(KEYS)})")
    calc = table.get("calculator")
    if not isinstance(calc, str) or not MODEL_SPEC.match(calc):
        raise _fail(path, name, f"calculator must be \"MODULE:CALLABLE\" with dotted Python names "
                                f"(e.g. \"ase.calculators.lj:LennardJones\"), got {calc!r}")
    options = table.get("options", {})
    if not isinstance(options, dict):
        raise _fail(path, name, f"options must be a table (options = {{key = value}}), got {type(options).__name__}")
    tier = table.get("tier")
    if tier is not None and (isinstance(tier, bool) or not isinstance(tier, (int, str))
                             or isinstance(tier, str) and not re.fullmatch(r"[A-Za-z0-9_.-]{1,20}", tier)):
        raise _fail(path, name, f"tier must be an integer or a short word, got {tier!r}")
    n_params = table.get("n_params")
    if n_params is not None and (isinstance(n_params, bool) or not isinstance(n_params, int) or n_params < 0):
        raise _fail(path, name, f"n_params must be a non-negative integer, got {n_params!r}")
    dispersion = table.get("dispersion")
    if dispersion is not None and (not isinstance(dispersion, str) or not _DISPERSION.match(dispersion)):
        raise _fail(path, name, f"dispersion must be \"d3-bj\" or \"d3-bj(FUNCTIONAL)\", got {dispersion!r}")
    text = {k: None if table.get(k) is None else _text(path, name, k, table[k])
            for k in ("label", "training_set", "driver_cmd")}
    return ModelEntry(name=name, calculator=calc, options={k: _option_text(path, name, k, v) for k, v in options.items()},
                      driver_cmd=None if text["driver_cmd"] is None else os.path.expanduser(text["driver_cmd"]),
                      label=text["label"], tier=tier, n_params=n_params, dispersion=dispersion,
                      training_set=text["training_set"])


def registered_names() -> set[str]:
    # the registry is data only (standard library), importable by the server without any model package;
    # plugin families installed here too (their modules import no model package at load, by contract)
    from dynamat_driver.models.plugins import plugin_families
    from dynamat_driver.models.registry import ALIASES, REGISTRY

    return set(REGISTRY) | set(ALIASES) | {n for fam in plugin_families().values() for n in fam.models}


def read_models_file(path: str | Path) -> dict[str, ModelEntry]:
    """name -> :class:`ModelEntry`; any problem is one :class:`DynamatError` line naming file and table."""
    path = Path(path).expanduser()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DynamatError(f"--models-file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DynamatError(f"--models-file {path}: cannot read it: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise DynamatError(f"--models-file {path} is not valid TOML: {exc}") from None
    path = path.resolve()
    if not data:
        raise DynamatError(f"--models-file {path} names no model (one [name] table per model)")
    taken = registered_names()
    out = {}
    for name, table in data.items():
        if name in taken or name.lower() in taken:
            raise DynamatError(f"{path}: table [{name}] has the name of a registered model: give yours another name")
        out[name] = _entry(path, name, table)
    return out


@dataclass(frozen=True)
class Served:
    """How a model name is served: the driver's ``--model``, extra driver arguments, driver command."""

    driver_model: str
    driver_args: tuple[str, ...] = ()
    driver_cmd: str | None = None
    entry: ModelEntry | None = None


def serve(model: str, entries: dict[str, ModelEntry] | None, driver_cmd: str | None = None) -> Served:
    """``model`` as the driver serves it: a models file's table, else the name itself (a registered
    model or ``MODULE:CALLABLE``). A ``driver_cmd`` given on the command line wins over the file's."""
    entry = (entries or {}).get(model)
    if entry is None:
        return Served(model, (), driver_cmd)
    return Served(entry.calculator, entry.driver_args(), driver_cmd or entry.driver_cmd, entry)


__all__ = ["KEYS", "ModelEntry", "Served", "dispersion_args", "model_option_args", "read_models_file", "registered_names", "serve"]
