"""``--dispersion d3-bj``: a DFT-D3(BJ) correction added to any loaded model.

The paper's molecular-crystal references are PBE+D3 while most foundation models are trained on
PBE without dispersion; :class:`D3Model` wraps a :class:`~.base.Model` and returns the sum of its
energy, forces and stress and the D3(BJ) ones (Grimme et al., J. Chem. Phys. 132, 154104 (2010);
Becke-Johnson damping: J. Comput. Chem. 32, 1456 (2011)) for the same structure.

The correction comes from simple-dftd3 (PyPI ``dftd3``), the reference implementation, through its
Python API, in float64 whatever the model's dtype. It handles periodic cells itself (lattice sums
over images within real-space cutoffs; its defaults, kept here: 60 Bohr = 31.75 Å for the two-body
term, 40 Bohr = 21.17 Å for the coordination numbers) and leaves out the three-body (ATM) term, as
its ASE calculator ``dftd3.ase.DFTD3(method=..., damping="d3bj")`` and the usual PBE-D3(BJ)
(VASP ``IVDW=12``) do. tad-dftd3 (pure PyTorch) has no periodic boundary conditions, so it serves
only as an independent check on molecules in the tests.

Units: energy eV, forces eV/Å, stress eV/Å³ with ASE's sign (positive = tensile), Voigt order.
"""

from __future__ import annotations

from typing import Sequence

from .. import DriverError
from .base import Model

#: ``--dispersion`` values (simple-dftd3's ASE calculator calls D3(BJ) ``damping="d3bj"``)
METHODS = ("d3-bj",)
DEFAULT_FUNCTIONAL = "pbe"
#: simple-dftd3 has reference C6 up to lawrencium; heavier atoms give 0 or crash the library
D3_MAX_Z = 103
PACKAGE_HINT = "pip install dftd3 (simple-dftd3's Python API; or ./drivers[d3])"


def label(method: str, functional: str) -> str:
    """What run.json records, e.g. ``d3-bj(pbe)``."""
    return f"{method}({functional})"


def _damping(functional: str):
    try:
        from dftd3.interface import RationalDampingParam
    except ImportError as exc:
        raise DriverError(f"--dispersion d3-bj needs simple-dftd3, not importable here ({exc}): "
                          f"{PACKAGE_HINT}") from None
    try:
        return RationalDampingParam(method=functional)  # two-body only (atm=False), as DFTD3(damping="d3bj")
    except RuntimeError:
        raise DriverError(f"--dispersion-functional {functional!r}: simple-dftd3 has no D3(BJ) parameters for it "
                          "(e.g. pbe, pbe0, b3lyp, r2scan, tpss)") from None


class D3Correction:
    """D3(BJ) energy (eV), forces (eV/Å) and stress (eV/Å³, 3×3) of ASE Atoms, float64; the library's
    model is kept while the species and pbc stay the same and only positions and cell move.

    ``realspace_cutoff``: simple-dftd3's ``set_realspace_cutoff`` keywords in Bohr (disp2, disp3, cn,
    width2, width3); None keeps its defaults (hard cutoffs at 60/40/40 Bohr), as its ASE calculator.
    With a hard cutoff the energy steps (< 1e-6 eV in the tests' cells) where a pair crosses it, and
    the analytic forces and stress leave the steps out, so finite differences of the energy across
    a crossing disagree with them; a smooth cutoff (``width2`` > 0) has no steps.
    """

    def __init__(self, functional: str = DEFAULT_FUNCTIONAL, realspace_cutoff: dict | None = None):
        self.functional = functional
        self.param = _damping(functional)
        self.realspace_cutoff = dict(realspace_cutoff) if realspace_cutoff else None
        self._model = None
        self._key = None

    def _dispersion_model(self, atoms):
        import numpy as np
        from ase.units import Bohr
        from dftd3.interface import DispersionModel

        pos, cell = atoms.positions / Bohr, atoms.cell.array / Bohr
        key = (atoms.numbers.tobytes(), tuple(bool(p) for p in atoms.pbc))
        if self._model is not None and key == self._key:
            self._model.update(pos, cell)
        else:
            self._model = DispersionModel(np.asarray(atoms.numbers), pos, cell, np.asarray(atoms.pbc))
            if self.realspace_cutoff:
                cut = {"disp2": 60.0, "disp3": 40.0, "cn": 40.0, **self.realspace_cutoff}
                self._model.set_realspace_cutoff(**cut)
            self._key = key
        return self._model

    def __call__(self, atoms, stress: bool = True):
        """(energy, forces, stress or None); stress only for a 3D cell, as the models give it."""
        from ase.units import Bohr, Hartree

        if len(atoms) and int(atoms.numbers.max()) > D3_MAX_Z:
            raise DriverError(f"no D3 parameters for Z > {D3_MAX_Z}")
        try:
            res = self._dispersion_model(atoms).get_dispersion(param=self.param, grad=True)
        except RuntimeError as exc:
            self._model = None
            raise DriverError(f"simple-dftd3 could not evaluate the structure: {exc}") from None
        energy = float(res["energy"]) * Hartree
        forces = -res["gradient"] * (Hartree / Bohr)
        sigma = None
        if stress and atoms.cell.rank == 3:
            sigma = res["virial"] * (Hartree / abs(atoms.cell.volume))  # dE/dε / V: ASE's stress
        return energy, forces, sigma


def _full_stress(stress):
    import numpy as np
    from ase.stress import voigt_6_to_full_3x3_stress

    s = np.asarray(stress, dtype=np.float64)
    return voigt_6_to_full_3x3_stress(s) if s.shape == (6,) else s.reshape(3, 3)


class D3Model(Model):
    """``base`` + D3(BJ): same species (those of ``base`` up to Z = 103), batching, stress skipping."""

    def __init__(self, base: Model, method: str = "d3-bj", functional: str = DEFAULT_FUNCTIONAL):
        if method not in METHODS:
            raise DriverError(f"--dispersion must be one of {', '.join(METHODS)}, got {method!r}")
        functional = (functional or DEFAULT_FUNCTIONAL).strip().lower()
        self.d3 = D3Correction(functional)
        self.base = base
        self.method, self.functional = method, functional
        self.dispersion = label(method, functional)
        # the wrapper stands in for the model everywhere (evaluator, timing file, pack)
        self.info, self.name, self.device, self.dtype = base.info, base.name, base.device, base.dtype
        self.n_params, self.weights = base.n_params, base.weights
        self.can_batch, self.skips_stress = base.can_batch, base.skips_stress
        covered = base.covered_numbers
        self.covered_numbers = None if covered is None else frozenset(z for z in covered if z <= D3_MAX_Z)

    def check_species(self, numbers: Sequence[int]) -> None:
        from ase.data import chemical_symbols

        beyond = sorted({int(z) for z in numbers if int(z) > D3_MAX_Z})
        if beyond:
            raise DriverError(f"--dispersion {self.method}: no D3 parameters for element(s) "
                              f"{' '.join(chemical_symbols[z] for z in beyond)} (D3 covers H to Lr)")
        self.base.check_species(numbers)

    def prepare(self, atoms) -> None:
        self.base.prepare(atoms)

    @property
    def keeps_reference(self) -> bool:
        return self.base.keeps_reference

    def _add(self, result, atoms, stress: bool):
        import numpy as np

        energy, forces, sigma = result
        e3, f3, s3 = self.d3(atoms, stress=stress and sigma is not None)
        total = None if sigma is None or s3 is None else _full_stress(sigma) + s3
        return float(energy) + e3, np.asarray(forces, dtype=np.float64).reshape(-1, 3) + f3, total

    def calculate(self, atoms, first: bool, **kw):
        return self._add(self.base.calculate(atoms, first, **kw), atoms, kw.get("stress", True))

    def calculate_batch(self, atoms_list: Sequence, **kw) -> list:
        results = self.base.calculate_batch(atoms_list, **kw)
        return [self._add(r, a, kw.get("stress", True)) for r, a in zip(results, atoms_list)]

    def versions(self) -> dict[str, str]:
        from .helpers import package_versions

        return {**self.base.versions(), **package_versions(("dftd3",))}

    def describe(self) -> dict:
        d = self.base.describe()
        d.update(dispersion=self.dispersion, human_name=f"{d.get('human_name') or self.name}+D3")
        return d


def check_dispersion(method: str | None, functional: str | None = None) -> None:
    """One DriverError line for an unknown method or functional, or simple-dftd3 missing."""
    if not method:
        if functional:
            raise DriverError("--dispersion-functional only matters with --dispersion d3-bj")
        return
    if method not in METHODS:
        raise DriverError(f"--dispersion must be one of {', '.join(METHODS)}, got {method!r}")
    _damping((functional or DEFAULT_FUNCTIONAL).strip().lower())


def with_dispersion(model: Model, method: str | None, functional: str | None = None) -> Model:
    """``model`` itself without ``--dispersion``, else wrapped in :class:`D3Model`."""
    check_dispersion(method, functional)
    return D3Model(model, method, functional or DEFAULT_FUNCTIONAL) if method else model


__all__ = ["D3Correction", "D3Model", "DEFAULT_FUNCTIONAL", "METHODS", "check_dispersion", "label", "with_dispersion"]
