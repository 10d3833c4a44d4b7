"""ASE's built-in test potentials: ``emt`` and ``lj``.

``emt``: ASE's effective-medium theory. It covers only H C N O Al Ni Cu Pd Ag Pt Au (the metals
are fitted; H C N O are rough); the driver refuses other elements before serving.

``lj``: ASE's LennardJones calculator with one pair potential for every species pair and ASE's
smooth cut-off (energy and forces go to zero between ``ro = 0.66 rc`` and ``rc``). Defaults,
chosen so that any structure is stable enough for a smoke-test run:

* ``epsilon`` = 0.1 eV (well depth; about a tenth of a metal's cohesive energy per bond),
* ``sigma`` = ``auto``: the shortest interatomic distance of the first structure served
  (the template, if given) divided by 2^(1/6), i.e. the starting structure sits at the pair
  minimum; a number in Å overrides it,
* ``rc`` = 3 sigma.

Pass options as ``--option epsilon=0.2 --option sigma=2.3``.
"""

from __future__ import annotations

from . import CalculatorModel, DriverError, ModelInfo, parse_float_option

EMT_ELEMENTS = ("H", "C", "N", "O", "Al", "Ni", "Cu", "Pd", "Ag", "Pt", "Au")


def load(info: ModelInfo, *, device="cpu", dtype=None, model_path=None, options=None):
    options = options or {}
    if model_path:
        raise DriverError(f"model {info.name!r} takes no --model-path")
    kind = info.kwargs.get("kind")
    if kind == "emt":
        return EMTModel(info)
    if kind == "lj":
        return LJModel(info, options)
    raise DriverError(f"ase_builtin: unknown kind {kind!r}")


class EMTModel(CalculatorModel):
    skips_stress = True  # CalculatorModel.calculate asks without "stress" (EMT computes it anyway: cheap)

    def __init__(self, info: ModelInfo):
        from ase.calculators.emt import EMT
        from ase.data import atomic_numbers

        super().__init__(info, EMT(), device="cpu", dtype="float64")
        self.covered_numbers = frozenset(atomic_numbers[s] for s in EMT_ELEMENTS)


def shortest_distance(atoms, start_cutoff: float = 4.0) -> float:
    """Shortest interatomic distance (minimum image, periodic images included)."""
    from ase.neighborlist import neighbor_list

    if len(atoms) < 2 and not atoms.pbc.any():
        raise DriverError("lj: sigma='auto' needs at least two atoms")
    cutoff = start_cutoff
    for _ in range(6):
        d = neighbor_list("d", atoms, cutoff)
        if len(d):
            return float(d.min())
        cutoff *= 2
    raise DriverError("lj: no neighbours within 128 Å; pass --option sigma=VALUE")


class LJModel(CalculatorModel):
    skips_stress = True

    def __init__(self, info: ModelInfo, options: dict):
        super().__init__(info, None, device="cpu", dtype="float64")
        self.epsilon = parse_float_option(options, "epsilon", 0.1, info.name)
        sigma = options.get("sigma", "auto")
        self.sigma = None if sigma == "auto" else parse_float_option(options, "sigma", None, info.name)
        self.rc_opt = parse_float_option(options, "rc", None, info.name)
        if self.sigma is not None:
            self._build()

    def _build(self):
        from ase.calculators.lj import LennardJones

        rc = self.rc_opt if self.rc_opt is not None else 3.0 * self.sigma
        self.calc = LennardJones(epsilon=self.epsilon, sigma=self.sigma, rc=rc, smooth=True)

    def prepare(self, atoms) -> None:
        if self.calc is None:
            self.sigma = shortest_distance(atoms) / 2 ** (1 / 6)
            self._build()

    def describe(self) -> dict:
        d = super().describe()
        d.update(epsilon_eV=self.epsilon, sigma_A=self.sigma, rc_A=None if self.calc is None else self.calc.parameters.rc)
        return d


__all__ = ["EMT_ELEMENTS", "EMTModel", "LJModel", "load", "shortest_distance"]
