"""``pairlj``: a Lennard-Jones pair potential, batched in numpy — a dynamat model family from a plugin.

    E = Σ_{i<j, r_ij < rc} φ(r_ij),  φ(r) = 4ε[(σ/r)¹² − (σ/r)⁶] − φ₀,  φ₀ = 4ε[(σ/rc)¹² − (σ/rc)⁶]
    F_i = −∂E/∂r_i,    σ_ab = (1/V) Σ_{i<j} (∂φ/∂r) D_a D_b / r    (ASE's sign, eV/Å³)

as ASE's ``LennardJones(smooth=False)``. ``calculate_batch`` evaluates the pairs of every structure
of a batch in one set of array operations (neighbour lists from ASE, one per structure); the stress
is computed only when asked (``skips_stress``). Options: ``sigma`` (Å, 2.3), ``epsilon`` (eV, 0.4),
``rc`` (Å, 6.0).

What dynamat-driver needs of a family (dynamat_driver.models.plugins, adapter API 1): ``ADAPTER_API``,
``MODELS`` and ``load``. Nothing heavy is imported at module level: the driver imports this module
to list its models.
"""

from __future__ import annotations

from dynamat_driver import DriverError
from dynamat_driver.models import Model, ModelInfo

#: the adapter interface version this family implements (dynamat_driver.models.plugins.ADAPTER_API_VERSION)
ADAPTER_API = 1

MODELS = [
    ModelInfo(
        "example-lj", "pairlj", "Example LJ (plugin)", "example", 3, None,
        default_dtype="float64", dtypes=("float64", "float32"), env="main",
        description="Lennard-Jones pair potential in numpy, batched; options sigma (Å), epsilon (eV), rc (Å)",
    ),
]

_DEFAULTS = {"sigma": 2.3, "epsilon": 0.4, "rc": 6.0}


def load(info: ModelInfo, *, device="cpu", dtype=None, model_path=None, options=None) -> Model:
    if model_path:
        raise DriverError(f"model {info.name!r} has no weights: it takes no --model-path")
    if device != "cpu":
        raise DriverError(f"model {info.name!r} runs on the CPU (numpy), not {device}")
    params = dict(_DEFAULTS)
    for key, text in (options or {}).items():
        if key not in params:
            raise DriverError(f"model {info.name!r} takes options {', '.join(params)}, not {key!r}")
        try:
            params[key] = float(text)
        except ValueError:
            raise DriverError(f"model {info.name!r}: option {key} wants a number, got {text!r}") from None
        if not params[key] > 0:
            raise DriverError(f"model {info.name!r}: option {key} must be > 0, got {text}")
    return PairLJ(info, **params)


class PairLJ(Model):
    can_batch = True  # one call for a whole batch: i-PI's batched requests, packed runs
    skips_stress = True  # stress=False really skips it

    def __init__(self, info: ModelInfo, sigma: float, epsilon: float, rc: float):
        super().__init__(info, device="cpu", dtype="float64")
        self.sigma, self.epsilon, self.rc = sigma, epsilon, rc
        self.version_packages = ("numpy", "ase")

    def calculate(self, atoms, first: bool, stress: bool = True):
        return self.calculate_batch([atoms], stress=stress)[0]

    def calculate_batch(self, atoms_list, stress: bool = True):
        import numpy as np
        from ase.neighborlist import neighbor_list

        # the pairs of every structure, offset so that all of them live in one array
        i_all, d_all, owner, offset = [], [], [], 0
        for b, atoms in enumerate(atoms_list):
            i, d = neighbor_list("iD", atoms, self.rc)
            i_all.append(i + offset)
            d_all.append(d)
            owner.append(np.full(len(i), b))
            offset += len(atoms)
        i, d, owner = np.concatenate(i_all), np.concatenate(d_all).reshape(-1, 3), np.concatenate(owner)
        r2 = np.einsum("ij,ij->i", d, d)
        c6 = (self.sigma**2 / r2) ** 3
        c12 = c6 * c6
        e0 = 4 * self.epsilon * ((self.sigma / self.rc) ** 12 - (self.sigma / self.rc) ** 6)
        pair_e = 0.5 * (4 * self.epsilon * (c12 - c6) - e0)  # each pair is listed both ways
        # D points from i to j: the force on i from j is (dφ/dr) D/r = g D, g = −24ε(2c12 − c6)/r²
        g = -24 * self.epsilon * (2 * c12 - c6) / r2
        f_pair = g[:, None] * d
        energies = np.bincount(owner, weights=pair_e, minlength=len(atoms_list))
        forces = np.zeros((offset, 3))
        np.add.at(forces, i, f_pair)
        out, start = [], 0
        for b, atoms in enumerate(atoms_list):
            n = len(atoms)
            sigma = None
            if stress and atoms.cell.rank == 3:
                sel = owner == b
                sigma = 0.5 * np.einsum("pa,pb->ab", f_pair[sel], d[sel]) / abs(atoms.cell.volume)
            out.append((float(energies[b]), forces[start : start + n].copy(), sigma))
            start += n
        return out

    def describe(self) -> dict:
        d = super().describe()
        d.update(sigma_A=self.sigma, epsilon_eV=self.epsilon, rc_A=self.rc)
        return d
