"""``harmonic``: an Einstein crystal, for path-integral and thermostat tests with exact answers.

Each atom i is tied by a spring of stiffness ``k`` (eV/Å², option ``k``, default 1.0) to its
site, the atom's position in the template structure (``--template``, else the template named by
i-PI, else the first structure served). Sites are kept in *fractional* coordinates, so they move
with the cell:

    E = ½ k Σ_i |Δ_i|²,  Δ_i = r_i − s_i·h  (minimum image along periodic directions)
    F_i = −k Δ_i
    σ = (k / V) Σ_i Δ_i ⊗ Δ_i      (ASE sign: σ = (1/V) ∂E/∂ε, exact for this E)

Every atom vibrates independently with ω = sqrt(k/m): the classical ⟨E_pot⟩ = 3N k_B T / 2 and
the quantum ⟨E_pot⟩ = (3N ħω/4) coth(ħω / 2k_BT) follow, the reference numbers for PIMD tests.
Without a full-rank cell the sites are Cartesian and no stress is returned.

The model evaluates batches (i-PI's batched requests, e.g. all beads) in one numpy call.
"""

from __future__ import annotations

import numpy as np

from . import DriverError, Model, ModelInfo, parse_float_option


def load(info: ModelInfo, *, device="cpu", dtype=None, model_path=None, options=None):
    options = options or {}
    if model_path:
        raise DriverError(f"model {info.name!r} takes no --model-path")
    k = parse_float_option(options, "k", 1.0, info.name)
    if not k > 0:
        raise DriverError(f"model {info.name!r}: k must be > 0, got {k}")
    return HarmonicModel(info, k)


class HarmonicModel(Model):
    can_batch = True
    skips_stress = True

    def __init__(self, info: ModelInfo, k: float):
        super().__init__(info, device="cpu", dtype="float64")
        self.k = float(k)
        self.sites_frac: np.ndarray | None = None
        self.sites_cart: np.ndarray | None = None

    def prepare(self, atoms) -> None:
        if atoms.cell.rank == 3:
            self.sites_frac = atoms.cell.scaled_positions(atoms.positions)
        self.sites_cart = np.array(atoms.positions, dtype=np.float64)

    def _displacements(self, positions: np.ndarray, cells: np.ndarray, pbc: np.ndarray):
        """positions (B, n, 3), cells (B, 3, 3) rows → Δ (B, n, 3), periodic (bool)."""
        if self.sites_cart is None:
            raise DriverError("harmonic: no reference sites (prepare() was not called)")
        if positions.shape[1] != len(self.sites_cart):
            raise DriverError(
                f"harmonic: the structure has {positions.shape[1]} atoms, the template {len(self.sites_cart)}"
            )
        full = self.sites_frac is not None and all(abs(np.linalg.det(c)) > 1e-12 for c in cells)
        if not full:
            return positions - self.sites_cart[None], False
        d = positions - np.matmul(self.sites_frac[None], cells)  # (B, n, 3)
        if pbc.any():
            frac = np.matmul(d, np.linalg.inv(cells))
            frac[..., pbc] -= np.round(frac[..., pbc])
            d = np.matmul(frac, cells)
        return d, True

    def _results(self, d: np.ndarray, volumes, with_stress: bool):
        out = []
        for b in range(d.shape[0]):
            db = d[b]
            energy = 0.5 * self.k * float(np.einsum("ij,ij->", db, db))
            forces = -self.k * db
            stress = self.k * (db.T @ db) / volumes[b] if with_stress else None
            out.append((energy, forces, stress))
        return out

    def calculate(self, atoms, first: bool, stress: bool = True):
        return self.calculate_batch([atoms], stress=stress)[0]

    def calculate_batch(self, atoms_list, stress: bool = True):
        pos = np.stack([np.asarray(a.positions, dtype=np.float64) for a in atoms_list])
        cells = np.stack([np.asarray(a.cell.array, dtype=np.float64) for a in atoms_list])
        pbc = np.asarray(atoms_list[0].pbc, dtype=bool)
        d, periodic = self._displacements(pos, cells, pbc)
        vols = [abs(float(np.linalg.det(c))) for c in cells]
        return self._results(d, vols, periodic and stress)

    def describe(self) -> dict:
        d = super().describe()
        d["k_eV_per_A2"] = self.k
        return d


__all__ = ["HarmonicModel", "load"]
