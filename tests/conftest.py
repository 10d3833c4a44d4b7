"""Helpers the tests share (import them: ``from conftest import ...``).

Waiting is always polling with a deadline (:func:`wait_until`), never a fixed sleep: a loaded machine
gets the time it needs, and a test that times out says what it waited for. Nothing here imports the
server side (``dynamat``), so the driver's tests can use it too.
"""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "dynamat" / "data" / "demo_reference.h5"
BIN = Path(sys.executable).parent


def dynamat_cmd(*args: str, timeout: float = 600, cwd=None, env=None) -> subprocess.CompletedProcess:
    """Runs the installed `dynamat` console script (a real process, as a user would)."""
    exe = BIN / "dynamat"
    cmd = [str(exe)] if exe.exists() else [shutil.which("dynamat")]
    return subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env)


def driver_cmd() -> list[str]:
    """The installed `dynamat-driver` console script, or the module where it is not installed."""
    exe = BIN / "dynamat-driver"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "dynamat_driver.cli"]


def wait_until(predicate, timeout: float, what: str, poll: float = 0.05):
    """Polls ``predicate()`` until it returns something true, and returns that; fails after
    ``timeout`` seconds with a message naming ``what`` it waited for."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(poll)


def wait_for_step(props: Path, step: int, timeout: float = 120.0, poll: float = 0.05) -> None:
    """Waits until i-PI's properties file ``props`` has a row at MD step >= ``step``."""

    def reached() -> bool:
        rows = [ln for ln in props.read_text().splitlines() if ln.strip() and ln[0] != "#"] if props.exists() else []
        return bool(rows) and float(rows[-1].split()[0]) >= step

    wait_until(reached, timeout, f"step {step} in {props}", poll)


def assert_same_frames(a, b, *fields: str) -> None:
    """Two trajectories hold bit-identical ``fields`` (steps, positions, forces, ...)."""
    import numpy as np

    for f in fields:
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f), err_msg=f)


def assert_one_line_error(res, *needles: str, prog: str = "dynamat", code: int | None = 2,
                          after_progress: bool = False) -> str:
    """The bad-input contract: exit status ``code`` (None: any non-zero), no traceback, and stderr
    exactly one line ``<prog>: error: ...`` holding every needle; with ``after_progress``, progress
    lines may come before it, but no other error line. ``res``: a CompletedProcess or click's Result.
    Returns the error line."""
    status = res.returncode if hasattr(res, "returncode") else res.exit_code
    assert (status != 0 if code is None else status == code), (status, res.stderr)
    assert "Traceback" not in res.stderr, res.stderr
    lines = res.stderr.strip().splitlines()
    prefix = f"{prog}: error:"
    assert lines and lines[-1].startswith(prefix), res.stderr
    if after_progress:
        assert not any(ln.startswith(prefix) for ln in lines[:-1]), res.stderr
    else:
        assert len(lines) == 1, res.stderr
    for needle in needles:
        assert needle in lines[-1], (needle, lines[-1])
    return lines[-1]


def leftover_processes(tag: str) -> list[str]:
    """i-PI or driver processes whose command line or working folder contains ``tag`` (a run folder,
    a temp folder, a socket name), as ``"pid: command line"``; read from /proc."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmd = fh.read().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        # i-PI by hand (i-pi) or as runs start it (python -m dynamat.ipi_launch), and drivers
        if any(name in cmd for name in ("i-pi", "dynamat.ipi_launch", "dynamat-driver")) and (tag in cmd or tag in cwd):
            found.append(f"{pid}: {cmd.strip()}")
    return found


def assert_no_leftovers(tag: str, timeout: float = 15.0) -> None:
    """Waits (a process that was just told to stop may take a moment to go) until no i-PI or driver
    process of ``tag`` is left; fails naming those still there."""
    try:
        wait_until(lambda: not leftover_processes(tag), timeout, f"the i-PI and driver processes of {tag} to end")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; still running: {leftover_processes(tag)}") from None


def einstein_oscillations(rng, n_atoms: int, masses_amu, n_frames: int, dt_fs: float, temperature_k: float,
                          freq_thz=(3.0, 7.0)):
    """An Einstein crystal's exact motion: each Cartesian component of each atom an independent harmonic
    oscillator of random frequency (uniform in ``freq_thz``, THz) and phase, holding exactly k_B T of
    energy, so the kinetic temperature and the VDOS are known in closed form.

    ``masses_amu``: one for all, or one per atom with shape (n_atoms, 1). Draws the frequencies, then the phases,
    from ``rng``. Returns (displacements from the sites in Å, velocities in Å/fs), each (n_frames, n_atoms, 3).
    """
    import numpy as np

    from dynamat.units import AMU_A2_PER_FS2_TO_EV, KB_EV_PER_K

    w = 2 * np.pi * rng.uniform(*freq_thz, size=(n_atoms, 3)) * 1e-3  # rad/fs
    phase = rng.uniform(0, 2 * np.pi, size=(n_atoms, 3))
    amp = np.sqrt(2 * KB_EV_PER_K * temperature_k / (masses_amu * w**2 * AMU_A2_PER_FS2_TO_EV))
    t = np.arange(n_frames)[:, None, None] * dt_fs
    return amp * np.cos(w * t + phase), -amp * w * np.sin(w * t + phase)


def emt_copper(temperature_K: float, seed: int):
    """32 Cu atoms on the lattice with EMT and Maxwell-Boltzmann momenta at ``temperature_K`` (zero total
    momentum): where the import tests' ASE MD starts."""
    import numpy as np
    from ase.build import bulk
    from ase.calculators.emt import EMT
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary

    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2))
    atoms.calc = EMT()
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=np.random.default_rng(seed))
    Stationary(atoms)
    return atoms


def labelled_frame(atoms, momenta: bool = True):
    """A copy of the MD frame ``atoms`` holding its energy, forces and stress (ASE's SinglePointCalculator, as
    ASE's writers store them); ``momenta=False`` leaves its momenta out, as a positions-only writer would."""
    from ase.calculators.singlepoint import SinglePointCalculator

    f = atoms.copy()
    if not momenta:
        f.set_momenta(None)
    f.calc = SinglePointCalculator(f, energy=atoms.get_potential_energy(), forces=atoms.get_forces(),
                                   stress=atoms.get_stress())
    return f


@pytest.fixture
def demo_reference() -> Path:
    return DEMO
