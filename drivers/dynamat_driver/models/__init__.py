"""Model registry: name → family adapter, loader arguments, tier, size, pip extra.

One module per model family (like i-PI's ``ipi/pes/*.py``), each defining
``load(info, *, device, dtype, model_path, options) -> Model``. Importing this registry imports
no model package (no torch): family modules import their package only inside ``load``.

Tiers (rough cost per evaluation on a CPU, used to schedule campaigns):

* ``test``   analytic potentials (EMT, LJ, harmonic): milliseconds, any machine.
* ``small``  foundation MLIPs below ~1 M parameters (CHGNet, SevenNet-0): ~0.2–1 s per
  100 atoms on a CPU core; GPU recommended for production lengths.
* ``medium`` 1–10 M parameters (SevenNet-l3i5): several times ``small``.
* ``large``  above 10 M parameters (reserved for UMA-M, NequIP-OAM-XL, ...).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import sys
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from .. import DriverError, __version__


@dataclass(frozen=True)
class ModelInfo:
    name: str  # CLI name, e.g. "chgnet"
    family: str  # module in dynamat_driver.models
    human_name: str  # as in papers, e.g. "CHGNet 0.3.0"
    tier: str  # "test" | "small" | "medium" | "large"
    n_params: int | None  # trainable parameters, if known
    extra: str | None  # pip extra of dynamat / dynamat-driver that installs the package
    packages: tuple[str, ...] = ()  # import names the family needs (checked without importing)
    kwargs: Mapping[str, Any] = field(default_factory=dict)  # loader arguments
    default_dtype: str = "float64"
    dtypes: tuple[str, ...] = ("float64",)
    description: str = ""

    @property
    def pip_hint(self) -> str:
        return f"pip install 'dynamat[{self.extra}]'" if self.extra else ""


#: analytic models accept either dtype and always compute in float64
ANALYTIC_DTYPES = ("float64", "float32")

REGISTRY: dict[str, ModelInfo] = {
    m.name: m
    for m in [
        ModelInfo(
            "emt", "ase_builtin", "ASE EMT", "test", 0, None,
            kwargs={"kind": "emt"}, dtypes=ANALYTIC_DTYPES,
            description="ASE's effective-medium theory (H C N O Al Ni Cu Pd Ag Pt Au); a test model",
        ),
        ModelInfo(
            "lj", "ase_builtin", "Lennard-Jones (ASE)", "test", 0, None,
            kwargs={"kind": "lj"}, dtypes=ANALYTIC_DTYPES,
            description="one smooth LJ pair potential for all species; options epsilon (eV, default 0.1), "
            "sigma (Å, default 'auto': nearest-neighbour distance of the first structure / 2^(1/6)), "
            "rc (Å, default 3 sigma)",
        ),
        ModelInfo(
            "harmonic", "harmonic", "Einstein crystal (harmonic springs)", "test", 0, None,
            dtypes=ANALYTIC_DTYPES,
            description="each atom tied by a spring to its template site (fractional coordinates); "
            "option k (eV/Å², default 1.0)",
        ),
        ModelInfo(
            "chgnet", "chgnet", "CHGNet 0.3.0", "small", 412_525, "chgnet",
            packages=("chgnet", "torch"),
            kwargs={"model_name": "0.3.0"},
            default_dtype="float32", dtypes=("float32", "float64"),
            description="CHGNet 0.3.0 (MPtrj), weights shipped in the chgnet wheel",
        ),
        ModelInfo(
            "sevennet-0", "sevennet", "SevenNet-0 (11Jul2024)", "small", 842_623, "sevennet",
            packages=("sevenn", "torch"),
            kwargs={"checkpoint": "7net-0"},
            default_dtype="float32", dtypes=("float32",),
            description="SevenNet-0 (MPtrj), weights shipped in the sevenn wheel",
        ),
        ModelInfo(
            "sevennet-l3i5", "sevennet", "SevenNet-l3i5", "medium", 1_171_327, "sevennet",
            packages=("sevenn", "torch"),
            kwargs={"checkpoint": "7net-l3i5"},
            default_dtype="float32", dtypes=("float32",),
            description="SevenNet l_max=3, 5 interaction layers (MPtrj), weights in the sevenn wheel",
        ),
    ]
}


def list_models() -> list[ModelInfo]:
    """All registered models, in registry order."""
    return list(REGISTRY.values())


def get_model_info(name: str) -> ModelInfo:
    try:
        return REGISTRY[name]
    except KeyError:
        raise DriverError(f"unknown model {name!r}; known models: {', '.join(REGISTRY)} (see --list)") from None


def is_installed(info: ModelInfo) -> bool:
    """Whether the model's packages can be imported (checked without importing them)."""
    return all(importlib.util.find_spec(p) is not None for p in info.packages)


def model_info_dict(name: str) -> dict:
    """A JSON-able description of one model (for run.json, reports)."""
    info = get_model_info(name)
    d = asdict(info)
    d["kwargs"] = dict(info.kwargs)
    d["packages"] = list(info.packages)
    d["dtypes"] = list(info.dtypes)
    d["installed"] = is_installed(info)
    d["pip"] = info.pip_hint
    return d


def registry_table() -> str:
    rows = [("name", "model", "tier", "params", "dtype", "extra", "installed")]
    for m in list_models():
        rows.append(
            (
                m.name,
                m.human_name,
                m.tier,
                f"{m.n_params:,}" if m.n_params else "-",
                m.default_dtype,
                m.extra or "-",
                "yes" if is_installed(m) else "no",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def package_versions(names: Sequence[str] = ()) -> dict[str, str]:
    """Installed versions (from metadata, without importing) of the driver's dependencies."""
    out = {"python": sys.version.split()[0], "dynamat-driver": __version__}
    for dist in ("numpy", "ase", "click", *names):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


# --------------------------------------------------------------------------------------------
# the model interface
# --------------------------------------------------------------------------------------------


class Model:
    """One loaded model. Subclasses implement :meth:`calculate` and, if the model can evaluate
    several structures in one call, :meth:`calculate_batch` with ``can_batch = True``.

    Results are ``(energy eV, forces (n,3) eV/Å, stress eV/Å³ (Voigt or 3×3) or None)``.
    """

    can_batch = False
    #: atomic numbers the model covers; None = all
    covered_numbers: frozenset[int] | None = None

    def __init__(self, info: ModelInfo, device: str = "cpu", dtype: str | None = None):
        self.info = info
        self.name = info.name
        self.device = device
        self.dtype = dtype or info.default_dtype
        self.n_params: int | None = info.n_params
        self.version_packages: tuple[str, ...] = ()

    # hooks -------------------------------------------------------------------------------
    def check_species(self, numbers: Sequence[int]) -> None:
        """Raises DriverError naming the elements the model does not cover."""
        if self.covered_numbers is None:
            return
        from ase.data import chemical_symbols

        missing = sorted({int(z) for z in numbers} - set(self.covered_numbers))
        if missing:
            cov = " ".join(chemical_symbols[z] for z in sorted(self.covered_numbers))
            raise DriverError(
                f"model {self.name!r} does not cover element(s) "
                f"{' '.join(chemical_symbols[z] for z in missing)} (it covers: {cov})"
            )

    def prepare(self, atoms) -> None:
        """Called once before the first evaluation, with the template structure (or the first
        structure received). Models that depend on a reference structure use it."""

    def calculate(self, atoms, first: bool):  # pragma: no cover - abstract
        raise NotImplementedError

    def calculate_batch(self, atoms_list: Sequence) -> list:
        return [self.calculate(a, False) for a in atoms_list]

    def versions(self) -> dict[str, str]:
        return package_versions(self.version_packages)

    def describe(self) -> dict:
        return {
            "model": self.name,
            "human_name": self.info.human_name,
            "family": self.info.family,
            "device": self.device,
            "dtype": self.dtype,
            "n_params": self.n_params,
            "batched": self.can_batch,
        }


class CalculatorModel(Model):
    """A model behind an ASE calculator. After the first call only ``['positions', 'cell']``
    are passed as system changes, so calculators that rebuild their neighbour list on
    ``numbers``/``pbc`` changes (EMT) do not rebuild it on every step."""

    def __init__(self, info: ModelInfo, calc, device: str = "cpu", dtype: str | None = None):
        super().__init__(info, device, dtype)
        self.calc = calc

    def calculate(self, atoms, first: bool):
        from ase.calculators.calculator import all_changes

        props = ["energy", "forces"]
        want_stress = atoms.cell.rank == 3
        if want_stress:
            props.append("stress")
        self.calc.calculate(atoms, props, list(all_changes) if first else ["positions", "cell"])
        res = self.calc.results
        return float(res["energy"]), np.array(res["forces"], dtype=np.float64), (
            np.array(res["stress"], dtype=np.float64) if want_stress and "stress" in res else None
        )


_VERBOSE = False


def set_verbose(flag: bool) -> None:
    """Whether model packages may print while loading (to stderr); else their output is dropped."""
    global _VERBOSE
    _VERBOSE = bool(flag)


def _quiet():
    """Where model packages' load-time chatter on stdout goes (stdout is never used for data)."""
    import io

    return sys.stderr if _VERBOSE else io.StringIO()


def _import_family(family: str):
    return importlib.import_module(f"{__name__}.{family}")


def load_model(
    name: str,
    *,
    device: str = "cpu",
    dtype: str | None = None,
    model_path: str | None = None,
    options: Mapping[str, str] | None = None,
) -> Model:
    """Loads a registered model. Errors (missing package, weights, bad options, unsupported
    dtype or device) are raised as one-line DriverError messages."""
    info = get_model_info(name)
    if dtype is not None and dtype not in info.dtypes:
        raise DriverError(f"model {name!r} supports dtype {' or '.join(info.dtypes)}, not {dtype}")
    missing = [p for p in info.packages if importlib.util.find_spec(p) is None]
    if missing:
        raise DriverError(
            f"model {name!r} needs the Python package(s) {', '.join(missing)}, not installed in this "
            f"environment ({sys.executable}): {info.pip_hint} (or pip install './drivers[{info.extra}]')"
        )
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise DriverError(f"device must be cpu or cuda, got {device!r}")
    module = _import_family(info.family)
    return module.load(info, device=device, dtype=dtype, model_path=model_path, options=dict(options or {}))


def check_torch_device(device: str) -> None:
    """Raises DriverError if torch cannot use ``device`` (call after importing torch)."""
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise DriverError("--device cuda was asked for, but torch sees no CUDA device here")


def parse_float_option(options: Mapping[str, str], key: str, default, model: str):
    if key not in options:
        return default
    raw = options[key]
    try:
        return float(raw)
    except (TypeError, ValueError):
        raise DriverError(f"model {model!r}: option {key}={raw!r} is not a number") from None


def reject_unknown_options(options: Mapping[str, str], known: Sequence[str], model: str) -> None:
    unknown = sorted(set(options) - set(known))
    if unknown:
        known_txt = ", ".join(known) if known else "none"
        raise DriverError(f"model {model!r} has no option(s) {', '.join(unknown)} (known: {known_txt})")


__all__ = [
    "REGISTRY",
    "ModelInfo",
    "Model",
    "CalculatorModel",
    "list_models",
    "get_model_info",
    "is_installed",
    "model_info_dict",
    "registry_table",
    "load_model",
    "package_versions",
]
