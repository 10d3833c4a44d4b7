"""Any ASE calculator (or a dynamat_driver :class:`Model`) as a model, named ``MODULE:CALLABLE``.

    dynamat-driver --model ase.calculators.emt:EMT
    dynamat-driver --model ase.calculators.lj:LennardJones -o sigma=2.3 -o epsilon=0.4 -o rc=6.0
    dynamat-driver --model mypkg.potentials:make_calc -o checkpoint=path:~/ckpt/best.pt --device cuda

``MODULE`` is imported with :func:`importlib.import_module` in the driver's environment (installed,
or on the driver's ``PYTHONPATH``), ``CALLABLE`` is looked up in it (dots walk attributes:
``pkg.mod:Factory.from_defaults``) and called once with the options as keyword arguments. It
returns an ASE ``Calculator`` (wrapped in :class:`CalculatorModel`, one structure per call) or a
:class:`Model` (used as is; it may batch).

Options ``-o KEY=VALUE`` are typed by their text: ``true``/``false`` → bool, an integer → int, a
decimal number → float (``nan`` and ``inf`` stay text), ``path:TEXT`` → the absolute path of TEXT (``~`` expanded; it must exist), anything
else → str. A calculator class that takes ``**kwargs`` and lists ``default_parameters`` (ASE's
do) refuses a keyword that is a near miss of one of those or of its explicit arguments: ASE would
store a misspelt one, unread (another keyword is passed: the list need not be complete).
``device`` and ``dtype`` go to the callable only when its signature names them (not through
``**kwargs``): ``--device cuda`` or ``--dtype`` for a callable without them is an error, never a
silent CPU or float64 run. ``--model-path FILE`` goes to a callable that names ``model_path``.

Stress: the calculator is asked for ``stress`` only on the steps whose virial i-PI writes (ASE's
``properties`` argument); a calculator that then returns none is an error. Every failure (import,
call, a result of the wrong kind or shape, no stress) is one ``DriverError`` line naming the
spec; non-finite energies or forces are refused by the evaluator, which the server reads as the
MD exploding.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
import re
from typing import Mapping

from .. import DriverError
from .base import CalculatorModel, Model
from .registry import ANALYTIC_DTYPES, ModelInfo

_DOTTED = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*"
SPEC = re.compile(rf"^({_DOTTED}):({_DOTTED})$")
_INT = re.compile(r"^[+-]?\d+$")
#: decimal numbers only: "nan", "inf" or "1_000" stay text (float() would take them)
_FLOAT = re.compile(r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$")


def spec_info(spec: str) -> ModelInfo:
    """A registry-like entry for ``spec``; checks the syntax only (nothing is imported)."""
    if not SPEC.match(spec or ""):
        raise DriverError(f"model {spec!r} is neither a registered name (see --list) nor MODULE:CALLABLE "
                          "with dotted Python names, e.g. ase.calculators.emt:EMT")
    return ModelInfo(name=spec, family="custom", human_name=spec, tier=None, n_params=None, extra=None,
                     default_dtype="float64", dtypes=ANALYTIC_DTYPES, env="main",
                     description="a user's ASE calculator or Model, MODULE:CALLABLE")


#: facts a user may give a model of their own (``--label`` ... : a models file's table), by the
#: key :meth:`Model.describe` shows them under
FACTS = {"label": "human_name", "tier": "tier", "n_params": "n_params", "training_set": "training_set"}


def check_facts(info: ModelInfo, facts: Mapping | None) -> dict:
    """``facts`` as :meth:`Model.describe` keys; only a ``MODULE:CALLABLE`` model takes them (a
    registered model's tier and size are the registry's)."""
    given = {k: v for k, v in (facts or {}).items() if v is not None}
    if not given:
        return {}
    if info.family != "custom":
        raise DriverError(f"--{'/--'.join(k.replace('_', '-') for k in given)} describe(s) a model of your own "
                          f"(MODULE:CALLABLE); {info.name!r} is registered with its own")
    out = {}
    for key, value in given.items():
        if key not in FACTS:
            raise DriverError(f"unknown model fact {key!r} (known: {', '.join(FACTS)})")
        if key == "n_params" and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise DriverError(f"--n-params must be a non-negative integer, got {value!r}")
        if key != "n_params" and not (isinstance(value, (int, str)) and str(value).isprintable()):
            raise DriverError(f"--{key.replace('_', '-')} must be printable text, got {value!r}")
        out[FACTS[key]] = value
    return out


def parse_option_value(text: str):
    """``-o`` text → bool, int, float, absolute path (``path:`` prefix) or str (see the module doc)."""
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if _INT.match(text.strip()):
        return int(text)
    if _FLOAT.match(text.strip()):
        return float(text)
    if text.startswith("path:"):
        path = os.path.abspath(os.path.expanduser(text[len("path:"):]))
        if not os.path.exists(path):
            raise DriverError(f"option path {path} does not exist")
        return path
    return text


def _resolve(spec: str):
    module_name, attr_path = SPEC.match(spec).groups()
    try:
        obj = importlib.import_module(module_name)
    except (Exception, SystemExit) as exc:  # a user's module: any failure at import is one line
        raise DriverError(f"model {spec!r}: cannot import {module_name}: {type(exc).__name__}: {_short(exc)}") from None
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise DriverError(f"model {spec!r}: {module_name} has no attribute {attr_path}") from None
        except Exception as exc:
            raise DriverError(f"model {spec!r}: looking up {attr_path} raised {type(exc).__name__}: {_short(exc)}") from None
    if not callable(obj):
        raise DriverError(f"model {spec!r}: {attr_path} is a {type(obj).__name__}, not a callable")
    return obj


def _short(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or "(no message)"


def _named_parameters(func) -> tuple[set[str], bool] | None:
    """(explicit keyword names, takes **kwargs), or None when Python cannot tell (a builtin)."""
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return None
    names = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return names, any(p.kind == p.VAR_KEYWORD for p in params)


def _call_arguments(spec: str, func, options: dict, device: str, dtype: str | None, model_path: str | None) -> dict:
    sig = _named_parameters(func)
    names, var_kw = sig if sig is not None else (set(), True)
    kwargs = dict(options)
    for key, value, flag in (("device", device, "--device"), ("dtype", dtype, "--dtype"),
                             ("model_path", model_path, "--model-path")):
        if key in options:  # the flag's value is the one recorded: an option would serve another unseen
            raise DriverError(f"model {spec!r}: {key} is the driver's {flag}: give {flag} {options[key]} "
                              f"(-o {key}=... would override it unrecorded)")
        if key in names:
            if value is not None:
                kwargs[key] = value
        elif value is not None and (key != "device" or value != "cpu"):
            raise DriverError(f"model {spec!r}: {flag} {value} given, but the callable takes no {key!r} argument")
    unknown = sorted(k for k in kwargs if k not in names)
    if unknown and not var_kw:
        raise DriverError(f"model {spec!r} takes no option(s) {', '.join(unknown)} "
                          f"(its arguments: {', '.join(sorted(names)) or 'none'})")
    known = _calculator_parameters(func)
    if var_kw and known:
        # ASE's Calculator.set() stores any keyword it is given: a misspelt one (sigmaa=2.3) would
        # be kept and never read, and the run would use the default unseen. default_parameters need
        # not list every keyword a calculator reads (ASE's Psi4 reads num_threads, charge, memory from
        # its parameters): only a near miss of a listed one is taken for a misspelling
        accepted = sorted((names | known) - {"device", "dtype", "model_path"})
        unknown = sorted(k for k in kwargs if k not in names and k not in known
                         and difflib.get_close_matches(k, accepted, n=1, cutoff=0.6))
        if unknown:
            raise DriverError(f"model {spec!r} takes no option(s) {', '.join(unknown)} "
                              f"(it accepts: {', '.join(accepted)})")
    return kwargs


def _calculator_parameters(func) -> set[str]:
    """The keys of a calculator class's ``default_parameters`` (ASE's list of its parameters), or an
    empty set: a factory function or a class without them (Calculator's own is ``{}``) says nothing."""
    params = getattr(func, "default_parameters", None) if inspect.isclass(func) else None
    return {str(k) for k in params} if isinstance(params, Mapping) else set()


def load(spec: str, *, device: str = "cpu", dtype: str | None = None, model_path: str | None = None,
         options: Mapping[str, str] | None = None) -> Model:
    """The user's model for ``spec``; every failure is one DriverError line naming the spec."""
    info = spec_info(spec)
    typed = {}
    for key, text in (options or {}).items():
        if not key.isidentifier():
            raise DriverError(f"model {spec!r}: option name {key!r} is not a Python identifier")
        try:
            typed[key] = parse_option_value(text)
        except DriverError as exc:
            raise DriverError(f"model {spec!r}: -o {key}: {exc}") from None
    func = _resolve(spec)
    kwargs = _call_arguments(spec, func, typed, device, dtype, model_path)
    try:
        made = func(**kwargs)
    except (Exception, SystemExit) as exc:
        raise DriverError(f"model {spec!r}: the call raised {type(exc).__name__}: {_short(exc)}") from None
    if isinstance(made, Model):
        return CheckedModel(made, spec, typed)
    if not (callable(getattr(made, "calculate", None)) and hasattr(made, "results")):
        raise DriverError(f"model {spec!r} returned a {type(made).__name__}, not an ASE Calculator or a "
                          "dynamat_driver Model")
    return CustomCalculatorModel(info, made, device=device, dtype=dtype, options=typed)


def check_result(spec: str, result, n_atoms: int, want_stress: bool):
    """``(energy, forces (n,3), stress or None)`` as float64 arrays, or one line saying what is wrong."""
    import numpy as np

    try:
        energy, forces, stress = result
    except (TypeError, ValueError):
        raise DriverError(f"model {spec!r} returned {type(result).__name__}, not (energy, forces, stress)") from None
    e = np.asarray(energy, dtype=np.float64) if _numeric(energy) else None
    if e is None or e.size != 1:
        raise DriverError(f"model {spec!r} returned energy {_what(energy)}, not one number (eV)")
    # copies: a calculator may refill one array in place on its next call (EMT does)
    f = np.array(forces, dtype=np.float64) if _numeric(forces) else None
    if f is None or f.shape != (n_atoms, 3):
        raise DriverError(f"model {spec!r} returned forces {_what(forces)} for {n_atoms} atoms, not ({n_atoms}, 3)")
    if want_stress:
        if stress is None:
            raise DriverError(f"model {spec!r} returned no stress where the protocol needs it (the written steps "
                              "of an NVT run): its calculator must compute 'stress' when asked")
        s = np.array(stress, dtype=np.float64) if _numeric(stress) else None
        if s is None or s.shape not in ((6,), (3, 3)):
            raise DriverError(f"model {spec!r} returned stress {_what(stress)}, not Voigt (6,) or (3, 3)")
        stress = s
    return float(e.reshape(())), f, stress


def _numeric(x) -> bool:
    import numpy as np

    if x is None:  # numpy would make it NaN, and a missing result would pass for an explosion
        return False
    try:
        np.asarray(x, dtype=np.float64)
        return True
    except (TypeError, ValueError):
        return False


def _what(x) -> str:
    import numpy as np

    if x is None:
        return "None"
    return f"of shape {np.shape(x)}" if _numeric(x) else f"of type {type(x).__name__}"


class CustomCalculatorModel(CalculatorModel):
    """A user's ASE calculator: asked for stress only when needed, its results checked."""

    skips_stress = True

    def __init__(self, info: ModelInfo, calc, device: str, dtype: str | None, options: dict):
        super().__init__(info, calc, device=device, dtype=dtype)
        self.options = options
        self.version_packages = (info.name.partition(":")[0].partition(".")[0],)

    def calculate(self, atoms, first: bool, stress: bool = True):
        from ase.calculators.calculator import all_changes

        want_stress = stress and atoms.cell.rank == 3
        props = ["energy", "forces"] + (["stress"] if want_stress else [])
        self.calc.results = {}  # a stress left from an earlier step must never pass for this one
        try:
            # as CalculatorModel: after the first call only positions and cell change
            self.calc.calculate(atoms, props, list(all_changes) if first else ["positions", "cell"])
        except Exception as exc:
            raise DriverError(f"model {self.name!r} raised {type(exc).__name__}: {_short(exc)}") from None
        res = self.calc.results
        return check_result(self.name, (res.get("energy"), res.get("forces"), res.get("stress") if want_stress else None),
                            len(atoms), want_stress)

    def describe(self) -> dict:
        d = super().describe()
        d.update(spec=self.name, options=self.options, calculator=type(self.calc).__name__)
        return d


class CheckedModel(Model):
    """A user's :class:`Model` (or a plugin family's), its results checked like a calculator's."""

    def __init__(self, inner: Model, spec: str, options: dict, is_spec: bool = True):
        self.__dict__.update(info=inner.info, name=spec, device=inner.device, dtype=inner.dtype,
                             n_params=inner.n_params, version_packages=inner.version_packages, weights=inner.weights)
        self.inner, self.options, self.is_spec = inner, options, is_spec  # is_spec: named MODULE:CALLABLE
        self.can_batch, self.skips_stress = inner.can_batch, inner.skips_stress
        self.covered_numbers = inner.covered_numbers

    def check_species(self, numbers) -> None:
        self.inner.check_species(numbers)

    def prepare(self, atoms) -> None:
        self.inner.prepare(atoms)

    @property
    def keeps_reference(self) -> bool:
        return self.inner.keeps_reference

    def _guard(self, call, *args, **kw):
        try:
            return call(*args, **kw)
        except DriverError:
            raise
        except Exception as exc:
            raise DriverError(f"model {self.name!r} raised {type(exc).__name__}: {_short(exc)}") from None

    def calculate(self, atoms, first: bool, **kw):
        want = kw.get("stress", True) and atoms.cell.rank == 3
        return check_result(self.name, self._guard(self.inner.calculate, atoms, first, **kw), len(atoms), want)

    def calculate_batch(self, atoms_list, **kw):
        out = self._guard(self.inner.calculate_batch, atoms_list, **kw)
        if len(out) != len(atoms_list):
            raise DriverError(f"model {self.name!r} returned {len(out)} results for {len(atoms_list)} structures")
        want = kw.get("stress", True)
        return [check_result(self.name, r, len(a), want and a.cell.rank == 3) for r, a in zip(out, atoms_list)]

    def versions(self) -> dict[str, str]:
        return self.inner.versions()

    def describe(self) -> dict:
        d = self.inner.describe()
        d.update(model=self.name, options=self.options, **self.described)
        if self.is_spec:
            d["spec"] = self.name
        return d


__all__ = ["FACTS", "SPEC", "CheckedModel", "check_facts", "CustomCalculatorModel", "check_result", "load",
           "parse_option_value", "spec_info"]
