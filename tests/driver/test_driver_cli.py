"""dynamat-driver as a program: a real ``i-pi`` run, and one-line errors."""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk

from conftest import assert_one_line_error, driver_cmd, wait_until

BIN = Path(sys.executable).parent
FORBIDDEN = ("matplotlib", "mdtraj", "h5py", "ipi", "dynamat", "torch")

# runs the driver's CLI and reports, at exit, which forbidden top-level modules were imported
WRAPPED_DRIVER = (
    "import sys, atexit\n"
    f"BAD = {FORBIDDEN!r}\n"
    "atexit.register(lambda: sys.stderr.write('LOADED:' + ','.join(sorted("
    "m for m in sys.modules if m.split('.')[0] in BAD)) + '\\n'))\n"
    "from dynamat_driver.cli import main\n"
    "sys.argv[0] = 'dynamat-driver'\n"
    "main()\n"
)


@pytest.fixture
def procs():
    """Processes started by a test; whatever is left running is killed afterwards."""
    started: list[subprocess.Popen] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


@pytest.fixture
def sockdir():
    d = tempfile.mkdtemp(prefix="dm")  # short: unix socket paths are limited to 107 bytes
    yield d + "/"
    shutil.rmtree(d, ignore_errors=True)


def alloy():
    a = bulk("Cu", "fcc", a=3.7, cubic=True).repeat((2, 2, 2))
    a.symbols[[0, 9, 17]] = "Au"
    a.rattle(0.02, seed=4)
    return a


@pytest.mark.parametrize("nbeads, batch_size", [(1, 1), (3, 2)])
def test_real_ipi_run_with_emt(tmp_path, procs, sockdir, nbeads, batch_size):
    pytest.importorskip("ipi")
    from dynamat.engines.ipi_input import MDSettings, write_inputs

    atoms = alloy()
    write_inputs(
        atoms,
        MDSettings("svr", 1.0, 50.0, 5, 20, 300.0, nbeads=nbeads),
        tmp_path,
        sockets_prefix=sockdir,
        address="drv",
        batch_size=batch_size,
    )
    ipi = subprocess.Popen(
        [str(BIN / "i-pi"), "input.xml"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    procs.append(ipi)
    timing = tmp_path / "driver_timing.json"
    drv = subprocess.Popen(
        [sys.executable, "-c", WRAPPED_DRIVER, "--model", "emt", "--unix", sockdir + "drv",
         "--timing-file", str(timing), "--connect-timeout", "30"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    procs.append(drv)
    ipi_out, _ = ipi.communicate(timeout=120)
    assert ipi.returncode == 0, ipi_out[-2000:]
    _, err = drv.communicate(timeout=30)
    assert drv.returncode == 0, err
    assert "Traceback" not in err and "error" not in err
    assert "LOADED:\n" in err, err  # no server-wing, i-PI or torch module in the driver process

    rows = np.loadtxt(tmp_path / "simulation.out", ndmin=2)
    assert rows[:, 0].tolist() == [0, 5, 10, 15, 20]
    for b in range(nbeads):
        assert (tmp_path / f"simulation.pos_{b}.extxyz").stat().st_size > 0
    # step 0: i-PI's potential (eV, all beads at the initial structure) is EMT's energy
    from ase.calculators.emt import EMT

    ref = atoms.copy()
    ref.calc = EMT()
    assert rows[0, 4] == pytest.approx(ref.get_potential_energy(), rel=1e-6, abs=1e-6)

    t = json.loads(timing.read_text())
    assert t["status"] == "finished" and t["end_reason"] == "exit"
    assert t["batch_size"] == batch_size and t["system"]["n_atoms"] == len(atoms)
    assert t["n_structures_received"] >= 21 * nbeads
    assert t["model_seconds_per_evaluation"]["median"] > 0
    if platform.libc_ver()[0] == "glibc":  # the driver keeps freed memory (allocator.py)
        assert t["allocator"].startswith("glibc malloc: no mmap, no trim")


def run_driver(*args, timeout=60, cwd=None):
    return subprocess.run(driver_cmd() + list(args), capture_output=True, text=True, timeout=timeout, cwd=cwd)


def run_drivers(*arg_lists, timeout=60):
    """Runs several driver command lines at once (they spend most time importing)."""
    ps = [subprocess.Popen(driver_cmd() + list(a), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
          for a in arg_lists]
    out = []
    for p in ps:
        o, e = p.communicate(timeout=timeout)
        out.append(subprocess.CompletedProcess(p.args, p.returncode, o, e))
    return out


def test_one_line_errors(tmp_path, sockdir):
    """Unknown model, an element the model does not cover (refused before connecting: no
    server exists here), unreachable unix and inet servers, bad options and arguments."""
    import ase.io

    a = alloy()
    a.symbols[3] = "Fe"
    ase.io.write(tmp_path / "fe.xyz", a, format="extxyz")
    cases = [
        (["--model", "mace-mp-0-huge"], ("unknown model", "chgnet")),
        (["--model", "emt", "--template", str(tmp_path / "fe.xyz"), "--unix", sockdir + "none"], ("does not cover", "Fe")),
        (["--model", "emt", "--unix", sockdir + "nobody", "--connect-timeout", "0.5"], ("cannot reach", sockdir + "nobody")),
        (["--model", "emt", "--inet", "127.0.0.1:1", "--connect-timeout", "0.3"], ("cannot reach", "127.0.0.1:1")),
        (["--model", "harmonic", "-o", "kk=2"], ("no option", "kk")),
        (["--model", "emt", "--unix", "a", "--inet", "b:1"], ("either --unix or --inet",)),
        (["--model", "emt", "--template", str(tmp_path / "no.xyz")], ("does not exist",)),
        (["--model", "sevennet-0", "--dtype", "float64"], ("float32",)),
        (["--model", "emt", "--pack-dir", str(tmp_path / "nope")], ("is not a folder",)),
        (["--model", "emt", "--pack-dir", str(tmp_path), "--unix", "x"], ("--pack-dir takes",)),
        ([], ("--model",)),
    ]
    t0 = time.monotonic()
    results = run_drivers(*[c[0] for c in cases])
    for res, (_, needles) in zip(results, cases):
        assert_one_line_error(res, *needles, prog="dynamat-driver", code=None)  # 2: bad usage, 1: a failure
    assert time.monotonic() - t0 < 30


def test_pack_refuses_bad_sessions_one_by_one(tmp_path, sockdir):
    """Pack mode: a request that is not JSON and one whose i-PI is not there each end with a done file
    saying why (and a line in the run's driver log); the pack itself carries on, then exits when idle."""
    import json

    (tmp_path / "bad.request.json").write_text("{not json")
    (tmp_path / "gone.request.json").write_text(json.dumps({
        "socket": sockdir + "nobody", "connect_timeout": 0.2, "log_file": str(tmp_path / "gone.log"),
        "timing_file": str(tmp_path / "gone_timing.json")}))
    res = run_driver("--model", "emt", "--pack-dir", str(tmp_path), "--pack-idle-exit", "1", timeout=60)
    assert res.returncode == 0, res.stderr
    bad = json.loads((tmp_path / "bad.done.json").read_text())
    assert bad["status"] == "error" and "unreadable request" in bad["error"]
    gone = json.loads((tmp_path / "gone.done.json").read_text())
    assert gone["status"] == "error" and "cannot reach" in gone["error"]
    assert "cannot reach" in (tmp_path / "gone.log").read_text()
    assert json.loads((tmp_path / "gone_timing.json").read_text())["status"] == "error"
    pack = json.loads((tmp_path / "pack.json").read_text())
    assert pack["status"] == "finished" and pack["sessions_served"] == 0 and pack["model_calls"] == 0


def test_timing_file_records_errors(tmp_path, sockdir):
    t = tmp_path / "t.json"
    res = run_driver("--model", "emt", "--unix", sockdir + "x", "--connect-timeout", "0.2", "--timing-file", str(t))
    assert res.returncode != 0
    data = json.loads(t.read_text())
    assert data["status"] == "error" and "cannot reach" in data["error"]


def test_list():
    res = run_driver("--list")
    assert res.returncode == 0
    for name in ("emt", "lj", "harmonic", "chgnet", "sevennet-0", "sevennet-l3i5"):
        assert name in res.stdout
    data = json.loads(run_driver("--list", "--json").stdout)
    assert {d["name"] for d in data} >= {"emt", "chgnet"}


@pytest.mark.slow
def test_unloadable_weights_name_model_path(tmp_path):
    pytest.importorskip("chgnet")
    bad = tmp_path / "broken.pth.tar"
    bad.write_bytes(b"not a checkpoint")
    res = run_driver("--model", "chgnet", "--model-path", str(bad), timeout=120)
    assert_one_line_error(res, "cannot load", str(bad), prog="dynamat-driver", code=None)


def test_sigterm_hands_over_to_a_new_driver(tmp_path, procs, sockdir):
    """A driver stopped with SIGTERM mid-run closes its socket cleanly (FIN, not RST): i-PI
    re-queues the request and a new driver finishes the run (a SIGKILLed client, by contrast,
    leaves i-PI's consolidated poll thread dead)."""
    pytest.importorskip("ipi")
    from dynamat.engines.ipi_input import MDSettings, write_inputs

    steps = 400
    write_inputs(alloy(), MDSettings("svr", 1.0, 50.0, 10, steps, 300.0), tmp_path, sockets_prefix=sockdir, address="drv")
    ipi = subprocess.Popen([str(BIN / "i-pi"), "input.xml"], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs.append(ipi)
    t1 = tmp_path / "t1.json"
    # --timing-every 1: written at every evaluation (larger values are throttled to one write per 5 s, and
    # the first driver could finish the run before the file shows it serving)
    args = ["--model", "emt", "--unix", sockdir + "drv", "--connect-timeout", "30", "--timing-every", "1"]
    d1 = subprocess.Popen(driver_cmd() + args + ["--timing-file", str(t1)], stderr=subprocess.PIPE, text=True)
    procs.append(d1)

    def serving() -> bool:
        try:
            if json.loads(t1.read_text()).get("n_evaluations", 0) >= 20:
                return True
        except (OSError, ValueError):
            pass
        assert d1.poll() is None, "the first driver exited before serving 20 evaluations"
        return False

    wait_until(serving, 60, "the first driver to serve 20 evaluations")
    d1.send_signal(signal.SIGTERM)
    _, err1 = d1.communicate(timeout=20)
    first = json.loads(t1.read_text())
    if first["status"] == "completed" or first["n_requests"] > steps:
        pytest.skip("the first driver finished the run before SIGTERM arrived")
    assert d1.returncode == 143 and "Traceback" not in err1
    assert first["status"] == "interrupted"
    d2 = subprocess.Popen(driver_cmd() + args, stderr=subprocess.PIPE, text=True)
    procs.append(d2)
    ipi.wait(timeout=120)
    _, err2 = d2.communicate(timeout=30)
    assert ipi.returncode == 0 and d2.returncode == 0, err2
    rows = np.loadtxt(tmp_path / "simulation.out", ndmin=2)
    assert rows[:, 0].tolist() == list(range(0, steps + 1, 10))


def test_readme_usage_as_written(tmp_path, procs):
    """The README's two-line usage, run by bash as written (with the test model and a 20-step run):
    ``dynamat inputs`` writes a unique socket name, and the plain driver started in that folder finds
    it in ``input.xml``."""
    pytest.importorskip("ipi")
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = readme.split("```bash\n", 1)[1].split("```", 1)[0]
    lines = [ln.split("#", 1)[0].strip() for ln in block.splitlines() if ln.strip()]
    assert lines[0].startswith("dynamat inputs ") and "dynamat-driver --model chgnet" in lines[1], block
    script = "\n".join([
        lines[0] + " --time-ps 0.005",  # 20 steps of 0.25 fs
        lines[1].replace("--model chgnet", "--model emt"),
        "wait",
    ])
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    proc = subprocess.Popen(["bash", "-e", "-c", script], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    procs.append(proc)
    try:
        out, _ = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, out[-3000:]
    assert "dynamat-driver: error" not in out and "done (EXIT from i-PI)" in out, out[-3000:]
    rows = np.loadtxt(tmp_path / "my_run" / "simulation.out", ndmin=2)
    assert rows[-1, 0] == 20, out[-3000:]


def test_address_from_input_xml(tmp_path):
    """What a plain driver takes from ./input.xml: i-PI's own socket path (sockets_prefix + address),
    or host and port, and the template its parameters name."""
    from dynamat_driver.ipi_input import read_ipi_input

    (tmp_path / "init.xyz").write_text("1\n\nCu 0 0 0\n")
    xml = tmp_path / "input.xml"
    xml.write_text("<simulation sockets_prefix='/tmp/dm-x/'><ffsocket name='f' mode='unix'>"
                   "<address> run-1 </address><parameters>{species: Cu, template: init.xyz}</parameters>"
                   "</ffsocket></simulation>")
    got = read_ipi_input(str(xml))
    assert str(got.address) == "unix:/tmp/dm-x/run-1" and got.template == str(tmp_path / "init.xyz")
    xml.write_text("<simulation><ffsocket mode='inet'><address>node3</address><port>31500</port></ffsocket>"
                   "<system><initialize><file mode='ase'> gone.xyz </file></initialize></system></simulation>")
    got = read_ipi_input(str(xml))
    assert str(got.address) == "inet:node3:31500" and got.template is None  # named, but not there
    xml.write_text("<simulation><ffsocket mode='unix'><address>a</address></ffsocket>"
                   "<ffsocket mode='unix'><address>b</address></ffsocket></simulation>")
    res = run_driver("--model", "emt", "--connect-timeout", "0.1", cwd=tmp_path)
    assert_one_line_error(res, "2 <ffsocket> elements", "--unix", prog="dynamat-driver", code=None)
    res = run_driver("--model", "emt", "--unix", str(tmp_path / "nobody"), "--connect-timeout", "0.1", cwd=tmp_path)
    assert_one_line_error(res, "cannot reach", str(tmp_path / "nobody"), prog="dynamat-driver", code=None)  # --unix wins over input.xml
