"""The one trajectory container every reader fills and every metric reads.

Arrays only, frame axis first. Units: positions and cells in Å (cell vectors as rows),
velocities in Å/fs, energies in eV, forces in eV/Å, stress in eV/Å³ as Voigt
[xx, yy, zz, yz, xz, xy] with ASE's sign convention (positive = tensile), ``dt_fs`` the
time between *saved* frames in fs.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

#: frames each side of a score needs over the matched duration (the scorer's step 1); the reference's own
#: frames bound its side, so a reference with fewer can never be scored (``reference import`` refuses one)
MIN_MATCHED_FRAMES = 8


@dataclass
class Trajectory:
    numbers: np.ndarray  # (N,) atomic numbers
    positions: np.ndarray  # (M, N, 3) Å
    cells: np.ndarray  # (M, 3, 3) Å, rows are lattice vectors
    pbc: np.ndarray = field(default_factory=lambda: np.ones(3, bool))  # (3,)
    dt_fs: float | None = None  # time between saved frames, fs
    velocities: np.ndarray | None = None  # (M, N, 3) Å/fs
    energies: np.ndarray | None = None  # (M,) eV
    forces: np.ndarray | None = None  # (M, N, 3) eV/Å
    stress: np.ndarray | None = None  # (M, 6) eV/Å³, Voigt xx yy zz yz xz xy, ASE sign
    steps: np.ndarray | None = None  # (M,) MD step index of each frame
    temperature_K: float | None = None  # target temperature of the run, K
    name: str = ""
    notes: list[str] = field(default_factory=list)  # what the reader dropped or assumed, one line each

    def check(self, source: str = "") -> "Trajectory":
        """Refuses what no model or metric can use, naming the file, frame and field: atomic numbers
        outside 1-118, no frames, non-finite positions or cells, a singular cell along a periodic
        direction (an extxyz written without its Lattice= line reads as a zero cell)."""
        from dynamat.errors import DynamatError

        where = source or self.name or "the trajectory"
        if self.n_frames == 0:
            raise DynamatError(f"{where} holds no frames")
        bad = self.numbers[(self.numbers < 1) | (self.numbers > 118)]
        if len(bad):
            raise DynamatError(f"{where}: atomic number {int(bad[0])} is not an element (1-118)")
        for key in ("positions", "cells", "velocities", "energies", "forces", "stress"):
            arr = getattr(self, key)
            if arr is None:
                continue
            ok = np.isfinite(np.asarray(arr).reshape(len(arr), -1)).all(axis=1)
            if not ok.all():
                raise DynamatError(f"{where}: frame {int(np.flatnonzero(~ok)[0])} has non-finite {key}")
        if self.pbc.any():
            lengths = np.linalg.norm(self.cells, axis=2)[:, self.pbc]
            vol = np.abs(np.linalg.det(self.cells))
            flat = (lengths.min(axis=1) < 1e-6) | ((vol < 1e-6) & self.pbc.all())
            if flat.any():
                raise DynamatError(f"{where}: frame {int(np.flatnonzero(flat)[0])} has a zero or singular cell along a "
                                   "periodic direction (an extxyz without a Lattice= line?)")
        return self

    def __post_init__(self) -> None:
        self.numbers = np.asarray(self.numbers, dtype=int).reshape(-1)
        self.positions = np.asarray(self.positions, dtype=float)
        if self.positions.ndim == 2:
            self.positions = self.positions[None]
        m, n = self.positions.shape[:2]
        if self.positions.shape != (m, n, 3) or len(self.numbers) != n:
            raise ValueError(
                f"positions must be (frames, {len(self.numbers)}, 3), got {self.positions.shape}"
            )
        cells = np.asarray(self.cells, dtype=float)
        if cells.shape == (3, 3):
            cells = np.broadcast_to(cells, (m, 3, 3))
        if cells.shape != (m, 3, 3):
            raise ValueError(f"cells must be (3, 3) or ({m}, 3, 3), got {cells.shape}")
        self.cells = cells
        self.pbc = np.broadcast_to(np.asarray(self.pbc, dtype=bool), (3,)).copy()
        for key, shape in (
            ("velocities", (m, n, 3)),
            ("energies", (m,)),
            ("forces", (m, n, 3)),
            ("stress", (m, 6)),
            ("steps", (m,)),
        ):
            value = getattr(self, key)
            if value is None:
                continue
            value = np.asarray(value, dtype=int if key == "steps" else float)
            if key == "stress" and value.shape == (m, 3, 3):
                value = full_to_voigt(value)
            if value.shape != shape:
                raise ValueError(f"{key} must have shape {shape}, got {value.shape}")
            setattr(self, key, value)
        if self.dt_fs is not None and not (np.isfinite(self.dt_fs) and self.dt_fs > 0):
            raise ValueError(f"dt_fs must be a positive number of fs, got {self.dt_fs}")

    @property
    def n_frames(self) -> int:
        return self.positions.shape[0]

    @property
    def n_atoms(self) -> int:
        return self.positions.shape[1]

    @property
    def duration_fs(self) -> float:
        """Time spanned by the saved frames, (M − 1)·dt, in fs."""
        if self.dt_fs is None:
            raise ValueError("trajectory has no frame interval (dt_fs)")
        return (self.n_frames - 1) * self.dt_fs

    @property
    def volumes(self) -> np.ndarray:
        """(M,) cell volumes in Å³."""
        return np.abs(np.linalg.det(self.cells))

    def __len__(self) -> int:
        return self.n_frames

    def __getitem__(self, index) -> "Trajectory":
        """Frame selection (int, slice or index array) returning a new Trajectory."""
        if isinstance(index, (int, np.integer)):
            index = slice(int(index), int(index) + 1 if index != -1 else None)
        step = index.step if isinstance(index, slice) and index.step else 1
        pick = lambda a: None if a is None else a[index]  # noqa: E731
        return replace(
            self,
            positions=self.positions[index],
            cells=self.cells[index],
            velocities=pick(self.velocities),
            energies=pick(self.energies),
            forces=pick(self.forces),
            stress=pick(self.stress),
            steps=pick(self.steps),
            dt_fs=None if self.dt_fs is None else self.dt_fs * step,
        )

    def truncated_to(self, duration_fs: float) -> "Trajectory":
        """The leading frames that span at most ``duration_fs`` (matched durations, paper Eq. 6)."""
        if self.dt_fs is None:
            raise ValueError("trajectory has no frame interval (dt_fs)")
        n = int(np.floor(duration_fs / self.dt_fs + 1e-9)) + 1
        return self[: max(1, min(n, self.n_frames))]


#: i-PI writes symmetric tensors (virial_md, virial_cv, stress_md) as xx yy zz xy xz yz; ASE's Voigt
#: order is xx yy zz yz xz xy. Indexing i-PI's six columns with this gives ASE's order.
IPI_TO_VOIGT = [0, 1, 2, 5, 4, 3]


def ipi_virial_to_stress(virial_ipi: np.ndarray) -> np.ndarray:
    """(..., 6) i-PI virial per volume (eV/Å³, order xx yy zz xy xz yz) → (..., 6) stress in eV/Å³,
    ASE Voigt order and sign: the configurational stress is minus the virial per volume."""
    return -np.asarray(virial_ipi, dtype=float)[..., IPI_TO_VOIGT]


def stress_to_ipi_virial(stress: np.ndarray) -> np.ndarray:
    """The inverse of :func:`ipi_virial_to_stress` (the permutation is its own inverse)."""
    return -np.asarray(stress, dtype=float)[..., IPI_TO_VOIGT]


def stress_from_virial(virial_eV: np.ndarray, volume_A3: float) -> np.ndarray:
    """An extxyz ``virial`` (eV; 3×3 or 9 numbers) → stress = −virial / V (eV/Å³), ASE Voigt."""
    return -full_to_voigt(np.asarray(virial_eV, dtype=float).reshape(3, 3)) / float(volume_A3)


def to_voigt(stress: np.ndarray) -> np.ndarray:
    """A stress given as Voigt (6,) or as a 3×3 matrix → (6,) ASE Voigt, float."""
    s = np.asarray(stress, dtype=float)
    return full_to_voigt(s) if s.shape == (3, 3) else s.reshape(6)


def full_to_voigt(tensor: np.ndarray) -> np.ndarray:
    """(..., 3, 3) → (..., 6) in ASE's Voigt order xx yy zz yz xz xy."""
    t = np.asarray(tensor)
    return np.stack(
        [t[..., 0, 0], t[..., 1, 1], t[..., 2, 2], t[..., 1, 2], t[..., 0, 2], t[..., 0, 1]], axis=-1
    )


def voigt_to_full(voigt: np.ndarray) -> np.ndarray:
    """(..., 6) ASE Voigt → (..., 3, 3) symmetric tensor."""
    v = np.asarray(voigt)
    xx, yy, zz, yz, xz, xy = (v[..., i] for i in range(6))
    return np.stack(
        [np.stack([xx, xy, xz], -1), np.stack([xy, yy, yz], -1), np.stack([xz, yz, zz], -1)], -2
    )
