"""dynamat.ipi_launch: i-PI as dynamat starts it writes the very files `i-pi input.xml` writes."""

import subprocess
import tempfile
from pathlib import Path
from types import SimpleNamespace

import ase.io
import numpy as np
from ase.build import bulk

from dynamat import ipi_launch
from dynamat.engines.ipi_input import MDSettings, render_input

from conftest import BIN

#: besides the input's binary positions and velocities (Å, Å/ASE time, Å cells): forces, atomic units, every 3rd step
BINARY_TOO = "    <trajectory filename='frc' stride='3' format='bin'> forces </trajectory>\n    <checkpoint"


def _run(folder: Path, ipi_cmd: list[str]) -> dict[str, bytes]:
    """An every-step Langevin run of 30 steps of 32 Cu atoms with EMT; its output files' bytes."""
    folder.mkdir()
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    ase.io.write(folder / "init.xyz", atoms, format="extxyz")
    sock = tempfile.mkdtemp(prefix="dl")
    text = render_input(MDSettings("langevin", 0.5, 10.0, 1, 30, 300.0, seed=5), init_file="init.xyz",
                        species=atoms.get_chemical_formula(), sockets_prefix=sock + "/", address="s")
    (folder / "input.xml").write_text(text.replace("    <checkpoint", BINARY_TOO, 1))
    ipi = subprocess.Popen(ipi_cmd + ["input.xml"], cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        drv = subprocess.run([str(BIN / "dynamat-driver"), "--model", "emt", "--unix", sock + "/s",
                              "--connect-timeout", "60"], cwd=folder, capture_output=True, text=True, timeout=300)
        assert drv.returncode == 0, drv.stderr
        assert ipi.wait(timeout=60) == 0
    finally:
        ipi.kill()
    return {p.name: p.read_bytes() for p in folder.glob("simulation.*.bin")}


def test_the_launcher_writes_what_i_pi_writes(tmp_path, monkeypatch):
    """Positions, velocities and forces frames byte for byte as plain i-PI writes them (same seed, same
    deterministic model), with real values in them; the launcher's writer is the one in use."""
    from ipi.utils.io.backends import io_binary

    monkeypatch.setattr(io_binary, "print_binary", io_binary.print_binary)  # restored after the install below
    plain = _run(tmp_path / "plain", [str(BIN / "i-pi")])
    ours = _run(tmp_path / "ours", [str(BIN / "python"), "-m", "dynamat.ipi_launch"])
    assert sorted(plain) == ["simulation.frc_0.bin", "simulation.pos_0.bin", "simulation.vel_0.bin"]
    assert ours == plain
    frame = 9 * 8 + 8 + 32 * 3 * 8  # cell, count, values: the velocities of step 0 are thermal, not zeros
    assert np.abs(np.frombuffer(plain["simulation.vel_0.bin"][80:frame], dtype=float)).max() > 1e-4
    assert ipi_launch.install()


def test_a_writer_that_differs_is_not_installed(monkeypatch):
    """The probe compares bytes: a replacement that writes anything else (here, one value off) leaves i-PI's."""
    from ipi.utils.io.backends import io_binary

    own = io_binary.print_binary
    monkeypatch.setattr(io_binary, "print_binary", own)

    ours = ipi_launch.print_binary

    def off_by_one(atoms, cell, filedesc, title="", cell_conv=1.0, atoms_conv=1.0):
        q = np.array(atoms.q, dtype=float)
        q[-1] = np.nextafter(q[-1], np.inf)
        ours(SimpleNamespace(natoms=atoms.natoms, names=atoms.names, q=q), cell, filedesc, title, cell_conv,
             atoms_conv)

    assert ipi_launch._probe(own) == ipi_launch._probe(ipi_launch.print_binary)
    monkeypatch.setattr(ipi_launch, "print_binary", off_by_one)
    assert not ipi_launch.install()
    assert io_binary.print_binary is own
