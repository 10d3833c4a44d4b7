"""``null``: zero energy, forces and stress, computed in no time: the do-nothing model that
measures the harness itself (i-PI's step, the socket, the driver loop) in
``benchmarks/bench_md_overhead.py``. Atoms fly in straight lines; never a benchmark of physics.
"""

from __future__ import annotations

import numpy as np

from . import DriverError, Model, ModelInfo


def load(info: ModelInfo, *, device="cpu", dtype=None, model_path=None, options=None):
    if model_path:
        raise DriverError(f"model {info.name!r} takes no --model-path")
    return NullModel(info)


class NullModel(Model):
    can_batch = True
    skips_stress = True

    def __init__(self, info: ModelInfo):
        super().__init__(info, device="cpu", dtype="float64")
        self._zeros: np.ndarray | None = None

    def calculate(self, atoms, first: bool, stress: bool = True):
        n = len(atoms)
        if self._zeros is None or len(self._zeros) != n:
            self._zeros = np.zeros((n, 3))
        return 0.0, self._zeros, (np.zeros(6) if stress else None)

    def calculate_batch(self, atoms_list, stress: bool = True):
        return [self.calculate(a, False, stress) for a in atoms_list]


__all__ = ["NullModel", "load"]
