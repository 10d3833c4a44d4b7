"""The model interface every family adapter implements: :class:`Model`, and :class:`CalculatorModel`
for models behind an ASE calculator."""

from __future__ import annotations

from typing import Sequence

from .. import DriverError
from .helpers import package_versions
from .registry import ModelInfo


class Model:
    """One loaded model. Subclasses implement :meth:`calculate` and, if the model can evaluate
    several structures in one call, :meth:`calculate_batch` with ``can_batch = True``.

    Results are ``(energy eV, forces (n,3) eV/Å, stress eV/Å³ (Voigt or 3×3) or None)``.
    """

    can_batch = False
    #: whether calculate/calculate_batch take ``stress=False`` and then skip the model's stress
    #: (``--stress-stride``); models without it always compute it (the driver still returns the
    #: placeholder virial on unwritten steps, so outputs do not depend on the family)
    skips_stress = False
    #: atomic numbers the model covers; None = all
    covered_numbers: frozenset[int] | None = None
    #: facts a user gives a model of their own (a models file's label, tier, n_params,
    #: training_set), shown by :meth:`describe` over the loaded model's
    described: dict = {}

    def __init__(self, info: ModelInfo, device: str = "cpu", dtype: str | None = None):
        self.info = info
        self.name = info.name
        self.device = device
        self.dtype = dtype or info.default_dtype
        self.n_params: int | None = info.n_params
        self.version_packages: tuple[str, ...] = ()
        self.weights: str | None = None  # where the weights were loaded from

    @property
    def keeps_reference(self) -> bool:
        """Whether results depend on a reference structure that :meth:`prepare` keeps: then the
        structures of different simulations never share a model call (packed runs)."""
        return type(self).prepare is not Model.prepare

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
        """(plus ``stress=True`` where ``skips_stress``)"""
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
            "tier": self.info.tier,
            "device": self.device,
            "dtype": self.dtype,
            "n_params": self.n_params,
            "batched": self.can_batch,
            "weights": self.weights,
            **self.described,
        }


class CalculatorModel(Model):
    """A model behind an ASE calculator. After the first call only ``['positions', 'cell']``
    are passed as system changes, so calculators that rebuild their neighbour list on
    ``numbers``/``pbc`` changes (EMT) do not rebuild it on every step."""

    def __init__(self, info: ModelInfo, calc, device: str = "cpu", dtype: str | None = None):
        super().__init__(info, device, dtype)
        self.calc = calc

    def calculate(self, atoms, first: bool, stress: bool = True):
        import numpy as np
        from ase.calculators.calculator import all_changes

        props = ["energy", "forces"]
        want_stress = stress and atoms.cell.rank == 3
        if want_stress:
            props.append("stress")
        self.calc.calculate(atoms, props, list(all_changes) if first else ["positions", "cell"])
        res = self.calc.results
        return float(res["energy"]), np.array(res["forces"], dtype=np.float64), (
            np.array(res["stress"], dtype=np.float64) if want_stress and "stress" in res else None
        )


def torch_n_params(module) -> int:
    return int(sum(p.numel() for p in module.parameters()))


__all__ = ["CalculatorModel", "Model", "torch_n_params"]
