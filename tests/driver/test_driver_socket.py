"""dynamat-driver against i-PI's own server code (InterfaceSocket + FFSocket), in-process.

The test process plays i-PI: it opens i-PI's InterfaceSocket, queues force requests through
i-PI's FFSocket exactly as i-PI's dynamics would, and gets i-PI's float64 results back. The
driver runs as a real subprocess over a real unix or inet socket. Conversions in the checks use
i-PI's own unit table, not the driver's.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.geometry import cellpar_to_cell

ipi_units = pytest.importorskip("ipi.utils.units")
from ipi.engine.forcefields import FFSocket  # noqa: E402
from ipi.interfaces.sockets import InterfaceSocket  # noqa: E402

from conftest import driver_cmd  # noqa: E402

BOHR = ipi_units.unit_to_internal("length", "angstrom", 1.0)  # bohr per Å
HARTREE = ipi_units.unit_to_internal("energy", "electronvolt", 1.0)  # hartree per eV
FORCE = HARTREE / BOHR  # hartree/bohr per eV/Å: the ratio, see dynamat_driver.units

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def structures(n: int, seed: int = 0, symbols=("Cu", "Au")) -> list[Atoms]:
    """n rattled Cu3Au-like fcc cells (32 atoms) in a triclinic, i-PI-compatible cell
    (ASE's standard lower-triangular cell, so i-PI's h = cell.T is upper-triangular)."""
    base = bulk(symbols[0], "fcc", a=3.75, cubic=True).repeat((2, 2, 2))
    base.symbols[[0, 5, 10, 23, 31]] = symbols[1]
    cell = cellpar_to_cell([7.6, 7.4, 7.5, 88.0, 93.0, 91.0])
    base.set_cell(cell, scale_atoms=True)
    out = []
    rng = np.random.default_rng(seed)
    for _ in range(n):
        a = base.copy()
        a.positions += rng.normal(scale=0.08, size=a.positions.shape)
        a.positions[3] += 7.5 * np.array(cell[0]) / np.linalg.norm(cell[0])  # an atom outside the cell
        out.append(a)
    return out


class IPIServer:
    """i-PI's FFSocket + InterfaceSocket, driven from the test."""

    def __init__(self, mode: str, batch_size: int = 1, pars: dict | None = None):
        self.tmp = tempfile.mkdtemp(prefix="dm")
        self.mode = mode
        if mode == "unix":
            self.prefix = self.tmp + "/"
            self.address, self.port = "ipi", 0
            self.client_args = ["--unix", self.prefix + self.address]
        else:
            self.prefix = "/tmp/ipi_"
            self.address, self.port = "127.0.0.1", free_port()
            self.client_args = ["--inet", f"127.0.0.1:{self.port}"]
        self.iface = InterfaceSocket(
            address=self.address,
            port=self.port,
            mode=mode,
            sockets_prefix=self.prefix,
            timeout=300.0,
            batch_size=batch_size,
        )
        self.ff = FFSocket(latency=1e-4, name="dmtest", pars=pars or {}, dopbc=False, threaded=True, interface=self.iface)
        self.ff.start()
        self.procs: list[subprocess.Popen] = []

    def queue(self, atoms_list: list[Atoms]):
        reqs = []
        for i, a in enumerate(atoms_list):
            h = np.ascontiguousarray(np.array(a.cell).T * BOHR)
            q = (a.positions * BOHR).reshape(-1).copy()
            reqs.append(self.ff.queue(SimpleNamespace(q=q), SimpleNamespace(h=h, ih=np.linalg.inv(h)), reqid=i))
        return reqs

    def start_driver(self, *args: str, cwd: str | None = None) -> subprocess.Popen:
        p = subprocess.Popen(
            driver_cmd() + list(self.client_args) + list(args),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=cwd or self.tmp,
        )
        self.procs.append(p)
        return p

    def results(self, reqs, proc: subprocess.Popen, timeout: float = 60.0):
        deadline = time.monotonic() + timeout
        for r in reqs:
            while not r._event_done.wait(0.05):
                if proc.poll() is not None:
                    raise AssertionError(f"driver exited {proc.returncode}: {proc.stderr.read()}")
                if time.monotonic() > deadline:
                    raise AssertionError("timed out waiting for forces")
        out = [r["result"] for r in reqs]
        for r in reqs:
            self.ff.release(r)
        return out

    def stop(self):
        try:
            self.ff.stop()
        except Exception:
            pass
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        shutil.rmtree(self.tmp, ignore_errors=True)


@pytest.fixture
def server_factory():
    servers: list[IPIServer] = []

    def make(mode="unix", batch_size=1, pars=None):
        s = IPIServer(mode, batch_size, pars)
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.stop()


def finish(server: IPIServer, proc: subprocess.Popen) -> str:
    """Stops the server (i-PI sends EXIT) and checks the driver exits 0; returns its stderr."""
    server.ff.stop()
    out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    return err


def reference(atoms_list, calc_factory):
    """The calculator's in-process values converted to i-PI units with i-PI's own table."""
    ref = []
    for a in atoms_list:
        b = a.copy()
        b.calc = calc_factory()
        # float64 before converting: MLIPs return float32 arrays, and float32 * float stays float32
        e = float(b.get_potential_energy())
        f = np.asarray(b.get_forces(), dtype=np.float64)
        s = np.asarray(b.get_stress(voigt=False), dtype=np.float64)
        ref.append((e * HARTREE, f.reshape(-1) * FORCE, -s.T * b.get_volume() * HARTREE))
    return ref


def assert_close(results, ref, rtol, atol_force_evA=0.0):
    for (pot, f, vir, extra), (e_ref, f_ref, v_ref) in zip(results, ref):
        scale_f = np.abs(f_ref).max()
        assert abs(pot - e_ref) <= rtol * abs(e_ref) + atol_force_evA * HARTREE, (pot, e_ref)
        np.testing.assert_allclose(f, f_ref, rtol=0, atol=rtol * scale_f + atol_force_evA * FORCE)
        np.testing.assert_allclose(vir, v_ref, rtol=0, atol=rtol * np.abs(v_ref).max() + atol_force_evA * HARTREE * 10)


# --------------------------------------------------------------------------------------------
# EMT: exact agreement through the socket
# --------------------------------------------------------------------------------------------


def test_emt_unix_single_matches_calculator(server_factory):
    atoms = structures(3, seed=1)
    srv = server_factory("unix", batch_size=1, pars={"species": atoms[0].get_chemical_formula(mode="reduce")})
    reqs = srv.queue(atoms)
    proc = srv.start_driver("--model", "emt")
    results = srv.results(reqs, proc)
    assert_close(results, reference(atoms, EMT), rtol=1e-8)
    finish(srv, proc)


def test_emt_inet_batched_with_padding_matches_calculator(server_factory, tmp_path):
    atoms = structures(4, seed=2)  # batch_size 3: one full batch, one of 1 padded with 2 copies
    srv = server_factory("inet", batch_size=3, pars={"species": atoms[0].get_chemical_formula(mode="reduce")})
    reqs = srv.queue(atoms)
    timing = tmp_path / "t.json"
    proc = srv.start_driver("--model", "emt", "--timing-file", str(timing), "--verbose")
    results = srv.results(reqs, proc)
    assert_close(results, reference(atoms, EMT), rtol=1e-8)
    err = finish(srv, proc)
    assert "batch_size 3" in err
    import json

    t = json.loads(timing.read_text())
    assert t["status"] == "finished" and t["batch_size"] == 3
    assert t["n_requests"] == 2 and t["n_structures_received"] == 6
    assert t["n_evaluations"] == 4  # the two padded copies are not recomputed
    assert t["model_seconds_per_evaluation"]["median"] > 0
    assert t["device"] == "cpu" and t["dtype"] == "float64" and "ase" in t["versions"]


def test_species_from_template_token_and_template_option(server_factory, tmp_path):
    import ase.io

    atoms = structures(2, seed=3)
    ase.io.write(tmp_path / "init.xyz", atoms[0], format="extxyz")
    # no species token: the driver reads the template i-PI names (relative to its cwd)
    srv = server_factory("unix", pars={"template": "init.xyz"})
    reqs = srv.queue(atoms)
    proc = srv.start_driver("--model", "emt", cwd=str(tmp_path))
    # no parameters at all (like ASE's socket server): --template
    srv2 = server_factory("unix", pars={})
    reqs2 = srv2.queue(atoms)
    proc2 = srv2.start_driver("--model", "emt", "--template", str(tmp_path / "init.xyz"))
    ref = reference(atoms, EMT)
    assert_close(srv.results(reqs, proc), ref, rtol=1e-8)
    assert_close(srv2.results(reqs2, proc2), ref, rtol=1e-8)
    finish(srv, proc)
    finish(srv2, proc2)


def _expect_driver_error(proc: subprocess.Popen, *needles: str) -> str:
    out, err = proc.communicate(timeout=30)
    assert proc.returncode != 0
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("dynamat-driver: error:")]
    assert len(lines) == 1, err
    for n in needles:
        assert n in lines[0], err
    return lines[0]


def test_bad_init_is_one_line_error(server_factory):
    """Problems found at INIT or at the first POSDATA end the driver with one line."""
    cases = []
    fe = structures(1, seed=4, symbols=("Cu", "Fe"))  # EMT has no Fe
    cases.append((fe, {"species": fe[0].get_chemical_formula(mode="reduce")}, ("does not cover", "Fe")))
    cu = structures(1, seed=5)
    cases.append((cu, {"species": "Cu30"}, ("32 atoms", "Cu30")))  # atom count disagrees
    cases.append((cu, {"template": "missing.xyz"}, ("no species", "--template")))
    cases.append((cu, {"species": "Cu3Qq"}, ("Qq",)))  # not an element
    running = []
    for atoms, pars, needles in cases:
        srv = server_factory("unix", pars=pars)
        srv.queue(atoms)
        running.append((srv.start_driver("--model", "emt"), needles))
    for proc, needles in running:
        _expect_driver_error(proc, *needles)


# --------------------------------------------------------------------------------------------
# batched model calls and the sequential fallback give identical forces
# --------------------------------------------------------------------------------------------


def test_batched_and_sequential_identical_harmonic(server_factory, tmp_path):
    import ase.io

    atoms = structures(5, seed=7)  # batch_size 4: one full batch, one padded
    ase.io.write(tmp_path / "init.xyz", structures(1, seed=8)[0], format="extxyz")
    running = []
    for extra in ([], ["--no-batch"]):
        srv = server_factory("unix", batch_size=4, pars={"species": atoms[0].get_chemical_formula(mode="reduce")})
        reqs = srv.queue(atoms)
        proc = srv.start_driver(
            "--model", "harmonic", "-o", "k=1.7", "--template", str(tmp_path / "init.xyz"),
            "--timing-file", str(tmp_path / f"t{len(extra)}.json"), *extra,
        )
        running.append((srv, reqs, proc))
    runs = [srv.results(reqs, proc) for srv, reqs, proc in running]
    for srv, _, proc in running:
        finish(srv, proc)
    for (p1, f1, v1, _), (p2, f2, v2, _) in zip(*runs):
        assert p1 == p2
        np.testing.assert_array_equal(f1, f2)
        np.testing.assert_array_equal(v1, v2)
    assert not np.allclose(runs[0][0][1], runs[0][1][1])  # different structures, different forces
    import json

    batched = json.loads((tmp_path / "t0.json").read_text())
    sequential = json.loads((tmp_path / "t1.json").read_text())
    # the padded batch holds one distinct structure: a plain call
    assert batched["n_batched_calls"] == 1 and sequential["n_batched_calls"] == 0
    assert batched["n_evaluations"] == sequential["n_evaluations"] == 5


# --------------------------------------------------------------------------------------------
# foundation MLIPs (slow): CHGNet 0.3.0, SevenNet-0
# --------------------------------------------------------------------------------------------


@pytest.fixture
def one_torch_thread():
    """Multi-threaded CPU torch is not bitwise reproducible (SevenNet-0 forces vary by ~5e-7
    eV/Å from call to call with 2 threads); one thread in both processes makes the socket
    comparison exact."""
    torch = pytest.importorskip("torch")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _mlip_check(server_factory, model: str, calc_factory, extra_args=("--threads", "1"), tol_evA=1e-6, tol_batch_evA=1e-5):
    atoms = structures(3, seed=11)
    species = atoms[0].get_chemical_formula(mode="reduce")
    ref = reference(atoms, calc_factory)
    # batch_size 1: the calculator's own code path, through the socket
    srv = server_factory("unix", batch_size=1, pars={"species": species})
    reqs = srv.queue(atoms)
    proc = srv.start_driver("--model", model, *extra_args)
    assert_close(srv.results(reqs, proc, timeout=300), ref, rtol=0, atol_force_evA=tol_evA)
    finish(srv, proc)
    # batch_size 2 (one full, one padded batch): the batched model path
    srv = server_factory("inet", batch_size=2, pars={"species": species})
    reqs = srv.queue(atoms)
    proc = srv.start_driver("--model", model, *extra_args)
    assert_close(srv.results(reqs, proc, timeout=300), ref, rtol=0, atol_force_evA=tol_batch_evA)
    finish(srv, proc)


@pytest.mark.slow
def test_chgnet_through_socket_matches_calculator(server_factory, one_torch_thread):
    pytest.importorskip("chgnet")
    from chgnet.model import CHGNet, CHGNetCalculator

    from ase.neighborlist import neighbor_list

    model = CHGNet.load(model_name="0.3.0", use_device="cpu", verbose=False)
    # The driver runs CHGNet with first-order autograd (no create_graph: 3.5x less memory), whose
    # backward kernels round differently from CHGNetCalculator's: the float32 bound of
    # test_driver_zoo.float32_reorder_tolerance, sqrt(m) eps max(|F|), with m the terms CHGNet sums
    # into a force: its bonds (5 Å) and its angles (pairs of bonds within 3 Å), ~6,700 here, and
    # |F|max < 2 eV/Å for these cells: ~2e-5 eV/Å, where the same code path gives 1e-6.
    a0 = structures(1, seed=11)[0]
    bonds = len(neighbor_list("i", a0, 5.0))
    short = np.bincount(neighbor_list("i", a0, 3.0), minlength=len(a0))
    m = bonds + int((short * (short - 1)).sum())
    tol = float(np.sqrt(m)) * float(np.finfo(np.float32).eps) * 2.0
    _mlip_check(server_factory, "chgnet", lambda: CHGNetCalculator(model=model, use_device="cpu"), tol_evA=tol,
                tol_batch_evA=tol)


@pytest.mark.slow
def test_sevennet0_through_socket_matches_calculator(server_factory, one_torch_thread):
    pytest.importorskip("sevenn")
    from sevenn.calculator import SevenNetCalculator

    calc = SevenNetCalculator(model="7net-0", device="cpu")
    _mlip_check(server_factory, "sevennet-0", lambda: calc)


@pytest.mark.slow
def test_chgnet_float64_through_socket(server_factory, one_torch_thread):
    """--dtype float64: the socket reproduces the in-process double-precision model to 1e-8."""
    pytest.importorskip("chgnet")
    from dynamat_driver.models import load_model

    atoms = structures(2, seed=12)
    model = load_model("chgnet", dtype="float64")
    ref = []
    for a in atoms:
        e, f, s = model.calculate(a.copy(), True)
        s3 = np.array([[s[0], s[5], s[4]], [s[5], s[1], s[3]], [s[4], s[3], s[2]]]) if np.shape(s) == (6,) else np.asarray(s)
        ref.append((e * HARTREE, np.asarray(f).reshape(-1) * FORCE, -s3.T * a.get_volume() * HARTREE))
    srv = server_factory("unix", batch_size=2, pars={"species": atoms[0].get_chemical_formula(mode="reduce")})
    reqs = srv.queue(atoms)
    proc = srv.start_driver("--model", "chgnet", "--dtype", "float64", "--no-batch", "--threads", "1")
    assert_close(srv.results(reqs, proc, timeout=300), ref, rtol=1e-8)
    finish(srv, proc)
