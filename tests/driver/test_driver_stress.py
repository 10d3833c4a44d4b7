"""Stress on demand (``dynamat-driver --stress-stride N --first-step S --beads P``).

Proven exact with real i-PI runs: NVT with and without the option writes identical trajectories
(positions and velocities, every written digit) and identical properties, pressure (virial)
included, at every written step; also across a restart from a RESTART file whose step is not a
multiple of the stride, and for path integrals whose beads i-PI splits over padded batches. EMT
(analytic, float64) and CHGNet 0.3.0 (float32; its weights ship in the chgnet wheel).

The i-PI inputs are written here rather than by the server wing, so that these tests pin the
driver's contract with i-PI itself.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk

from dynamat_driver.stress import StressSchedule

from conftest import driver_cmd

BIN = Path(sys.executable).parent

XML = """<simulation verbosity='low' safe_stride='{safe_stride}' sockets_prefix='{prefix}'>
  <output prefix='sim'>
    <properties stride='{stride}' filename='out' flush='1'> [ step, time{{femtosecond}}, temperature{{kelvin}}, potential{{electronvolt}}, conserved{{electronvolt}}, virial_md{{ev/ang3}}, pressure_md{{gigapascal}}{pimd_props} ] </properties>
    <trajectory filename='pos' stride='{stride}' format='ase' flush='1'> positions{{ase}} </trajectory>
    <trajectory filename='vel' stride='{stride}' format='ase' flush='1'> velocities{{ase}} </trajectory>
    <checkpoint filename='chk' stride='1000' overwrite='true'/>
  </output>
  <total_steps> {steps} </total_steps>
  <prng><seed> 4242 </seed></prng>
  <ffsocket name='d' mode='unix' pbc='false'>
    <address> s </address>
    <latency> 1e-4 </latency>
    <batch_size> {batch_size} </batch_size>
    <parameters> {{species: {species}}} </parameters>
  </ffsocket>
  <system>
    <initialize nbeads='{nbeads}'>
      <file mode='ase' units='angstrom'> init.extxyz </file>
      <velocities mode='thermal' units='kelvin'> 600 </velocities>
    </initialize>
    <forces><force forcefield='d'/></forces>
    <ensemble><temperature units='kelvin'> 600 </temperature></ensemble>
    <motion mode='dynamics'>
      <dynamics mode='nvt'>
        <timestep units='femtosecond'> 2.0 </timestep>
        <thermostat mode='{thermostat}'><tau units='femtosecond'> 20 </tau>{lam}</thermostat>
      </dynamics>
    </motion>
  </system>
</simulation>
"""


def alloy(rep=(2, 2, 2)):
    a = bulk("Cu", "fcc", a=3.7, cubic=True).repeat(rep)
    a.symbols[[0, 5]] = "Au"
    a.rattle(0.03, seed=4)
    return a


class Run:
    """One i-PI run folder, served by one dynamat-driver per leg (fresh start, then restarts)."""

    def __init__(self, root: Path, name: str, atoms, *, steps, stride, nbeads=1, batch_size=1, thermostat="svr",
                 safe_stride=1):
        import ase.io

        self.dir = root / name
        self.dir.mkdir()
        self.sockdir = tempfile.mkdtemp(prefix="ds")  # short: unix socket paths are limited to 107 bytes
        ase.io.write(self.dir / "init.extxyz", atoms)
        pimd = ", virial_cv{ev/ang3}, kinetic_cv{electronvolt}" if nbeads > 1 else ""
        lam = "<pile_lambda> 1.0 </pile_lambda>" if thermostat == "pile_l" else ""
        (self.dir / "input.xml").write_text(XML.format(
            safe_stride=safe_stride, stride=stride, pimd_props=pimd, steps=steps, prefix=self.sockdir + "/",
            batch_size=batch_size, species=atoms.get_chemical_formula(mode="reduce"), nbeads=nbeads,
            thermostat=thermostat, lam=lam))
        self.legs = 0

    def leg(self, model_args: list[str], start: str = "input.xml", timeout=600) -> dict:
        """Runs i-PI from ``start`` to its total_steps with a fresh driver; returns the driver's timing."""
        self.legs += 1
        timing = self.dir / f"timing{self.legs}.json"
        ipi = subprocess.Popen([str(BIN / "i-pi"), start], cwd=self.dir, stdout=open(self.dir / f"ipi{self.legs}.log", "w"),
                               stderr=subprocess.STDOUT)
        drv = subprocess.Popen(driver_cmd() + [*model_args, "--unix", self.sockdir + "/s", "--connect-timeout", "60",
                                               "--timing-file", str(timing), "--timing-every", "100000"],
                               cwd=self.dir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            ipi.wait(timeout=timeout)
            _, err = drv.communicate(timeout=60)
        finally:
            for p in (ipi, drv):
                if p.poll() is None:
                    p.kill()
                    p.wait()
        assert ipi.returncode == 0, (self.dir / f"ipi{self.legs}.log").read_text()[-2000:]
        assert drv.returncode == 0 and "Traceback" not in err, err
        return json.loads(timing.read_text())

    def extend_restart(self, total_steps: int) -> str:
        """RESTART (written at the end of a leg) with a new total_steps: the next leg continues."""
        text = (self.dir / "RESTART").read_text()
        step = int(re.search(r"<step>\s*(\d+)\s*</step>", text).group(1))
        text = re.sub(r"<total_steps>\s*\d+\s*</total_steps>", f"<total_steps>{total_steps}</total_steps>", text)
        (self.dir / "RESTART.next").write_text(text)
        self.restart_step = step
        return "RESTART.next"

    def outputs(self) -> dict[str, str]:
        out = {}
        for p in sorted(self.dir.glob("sim.*")):
            if p.suffix != ".chk":
                out[p.name] = p.read_text()
        return out

    def properties(self) -> np.ndarray:
        return np.loadtxt(self.dir / "sim.out", ndmin=2)

    def close(self):
        shutil.rmtree(self.sockdir, ignore_errors=True)


@pytest.fixture
def runs(tmp_path):
    made: list[Run] = []

    def make(*a, **kw):
        r = Run(tmp_path, *a, **kw)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


def assert_identical(a: Run, b: Run, min_rows: int):
    oa, ob = a.outputs(), b.outputs()
    assert oa.keys() == ob.keys() and "sim.out" in oa
    for k in oa:
        assert oa[k] == ob[k], f"{k} differs between the runs with and without --stress-stride"
    rows = b.properties()
    assert len(rows) >= min_rows
    assert np.isfinite(rows).all(), "a written row holds the NaN placeholder: the schedule is misaligned"
    return rows


# --------------------------------------------------------------------------------------------
# the schedule alone: i-PI's request patterns as measured (see dynamat_driver/stress.py)
# --------------------------------------------------------------------------------------------


def _requests_for(step_structs, steps, batch_size):
    """Splits each step's bead structures into requests of <= batch_size as i-PI may (whatever
    was queued when a client was free: chunks of random size), padding a partial batch with copies
    of its last structure. Returns the requests and the step each belongs to."""
    rng = np.random.default_rng(3)
    out, owner = [], []
    for s, structs in zip(steps, step_structs):
        rest = list(structs)
        while rest:
            k = int(rng.integers(1, min(batch_size, len(rest)) + 1))
            chunk, rest = rest[:k], rest[k:]
            out.append(chunk + [chunk[-1]] * (batch_size - len(chunk)))
            owner.append(s)
    return out, owner


@pytest.mark.parametrize("beads, batch_size, first_step", [(1, 1, 0), (1, 1, 25), (4, 4, 0), (4, 3, 0), (4, 1, 0),
                                                           (8, 3, 17), (8, 8, 0)])
def test_schedule_marks_exactly_the_written_steps(beads, batch_size, first_step):
    rng = np.random.default_rng(beads * 100 + batch_size)
    cell = np.eye(3) * 10.0
    steps = list(range(first_step, first_step + 40))
    step_structs = []
    for s in steps:
        if s == 0:  # a fresh start: every bead is the initial structure
            x0 = rng.normal(size=(4, 3))
            step_structs.append([x0] * beads)
        else:
            step_structs.append([rng.normal(size=(4, 3)) for _ in range(beads)])
    requests, owner = _requests_for(step_structs, steps, batch_size)
    sched = StressSchedule(stride=5, first_step=first_step, beads=beads)
    got = [sched.needs_stress([cell] * len(r), r) for r in requests]
    assert got == [s % 5 == 0 for s in owner]
    assert not sched.desynchronised and sched.step == steps[-1] + 1


def test_schedule_gives_up_visibly_when_the_count_cannot_be_right():
    sched = StressSchedule(stride=10, beads=2)
    cell = np.eye(3)
    rng = np.random.default_rng(0)
    sched.needs_stress([cell] * 2, [rng.normal(size=(2, 3)) for _ in range(2)])  # step 0
    # three distinct structures for a 2-bead step: not i-PI's pattern
    assert sched.needs_stress([cell] * 3, [rng.normal(size=(2, 3)) for _ in range(3)]) is True
    assert sched.desynchronised
    assert all(sched.needs_stress([cell], [rng.normal(size=(2, 3))]) for _ in range(5))


def test_bad_schedule_options_are_one_line_errors():
    for args, needle in ((["--stress-stride", "0"], "--stress-stride must be >= 1"),
                         (["--stress-stride", "10", "--first-step", "-1"], "--first-step must be >= 0"),
                         (["--first-step", "3"], "only matter with --stress-stride")):
        res = subprocess.run(driver_cmd() + ["--model", "emt", *args], capture_output=True, text=True, timeout=60)
        lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
        assert res.returncode == 1 and len(lines) == 1 and needle in lines[0], res.stderr


# --------------------------------------------------------------------------------------------
# real i-PI: identical outputs with and without the option
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("thermostat", ["svr", "langevin"])
def test_emt_nvt_identical_with_stress_on_demand(runs, thermostat):
    atoms = alloy()
    stride = 10
    full = runs("full", atoms, steps=60, stride=stride, thermostat=thermostat)
    t_full = full.leg(["--model", "emt"])
    lazy = runs("lazy", atoms, steps=60, stride=stride, thermostat=thermostat)
    t_lazy = lazy.leg(["--model", "emt", "--stress-stride", str(stride)])
    rows = assert_identical(full, lazy, 7)
    assert rows[:, 0].tolist() == list(range(0, 61, stride))
    assert np.abs(rows[:, 5]).max() > 1e-5  # a real virial (ev/ang3) was written
    assert t_full["stress"]["policy"].startswith("model stress on every request")
    s = t_lazy["stress"]
    # 61 requests (the initial structure + 60 steps), 7 of them on written steps
    assert (s["requests_with_stress"], s["requests_without_stress"]) == (7, 54) and not s["desynchronised"]
    assert t_lazy["n_evaluations_with_stress"] == 7 and t_lazy["n_evaluations"] == 61


def restarted_pair(runs, atoms, args, *, stride, first_leg, total, **kw):
    """The same run with and without --stress-stride, each stopped at ``first_leg`` steps and
    continued from i-PI's RESTART to ``total``; returns {name: (Run, timing of the second leg)}."""
    legs = {}
    for name, extra in (("full2", []), ("lazy2", ["--stress-stride", str(stride)])):
        r = runs(name, atoms, steps=first_leg, stride=stride, **kw)
        r.leg([*args, *extra])
        nxt = r.extend_restart(total)
        assert r.restart_step == first_leg
        t = r.leg([*args, *extra, *(["--first-step", str(r.restart_step)] if extra else [])], start=nxt)
        legs[name] = (r, t)
    return legs


def test_emt_nvt_identical_with_stress_on_demand_across_a_restart(runs):
    """Restart at step 25, not a multiple of the stride. (A restarted i-PI run is not bitwise the
    uninterrupted one, ~1e-8 relative: i-PI's RESTART precision; so the restarted runs with and
    without the option are compared with each other.)"""
    legs = restarted_pair(runs, alloy(), ["--model", "emt"], stride=10, first_leg=25, total=60)
    rows = assert_identical(legs["full2"][0], legs["lazy2"][0], 7)
    assert rows[:, 0].tolist() == [0, 10, 20, 30, 40, 50, 60]
    s = legs["lazy2"][1]["stress"]
    # second leg: the step-25 structure again (not written) + steps 26..60: stress on 30, 40, 50, 60
    assert (s["requests_with_stress"], s["requests_without_stress"]) == (4, 32), s
    assert s["first_step"] == 25 and s["next_step"] == 61


def test_a_wrong_first_step_shows_as_nan_in_the_written_pressure(runs):
    """The placeholder is loud: told the wrong origin, the driver's NaN virial reaches i-PI's
    output at the written steps instead of a plausible number."""
    r = runs("wrong", alloy(), steps=20, stride=10)
    r.leg(["--model", "emt", "--stress-stride", "10", "--first-step", "3"])
    rows = r.properties()
    assert np.isnan(rows[:, 5]).all() and np.isfinite(rows[:, 3]).all()


@pytest.mark.parametrize("batch_size", [4, 3])
def test_emt_pimd_identical_with_stress_on_demand(runs, batch_size):
    """4 beads (PILE-L), all in one batch or split 3 + 1 with padding: virial_md and virial_cv
    identical at every written step."""
    atoms = alloy((1, 1, 2))
    kw = dict(steps=30, stride=5, nbeads=4, batch_size=batch_size, thermostat="pile_l")
    full = runs("full", atoms, **kw)
    full.leg(["--model", "emt"])
    lazy = runs("lazy", atoms, **kw)
    t = lazy.leg(["--model", "emt", "--stress-stride", "5", "--beads", "4"])
    rows = assert_identical(full, lazy, 7)
    assert rows[:, 0].tolist() == list(range(0, 31, 5))
    s = t["stress"]
    assert not s["desynchronised"] and s["next_step"] == 31
    # no stress for the 4 beads of the 24 unwritten steps; stress for those of steps 5..30 and for
    # step 0 (4 identical beads, evaluated once per request: 1 to 4 requests)
    assert t["n_evaluations"] - t["n_evaluations_with_stress"] == 24 * 4
    assert 6 * 4 + 1 <= t["n_evaluations_with_stress"] <= 6 * 4 + 4


@pytest.mark.slow
def test_chgnet_nvt_identical_with_stress_on_demand_also_across_a_restart(runs):
    pytest.importorskip("chgnet")
    atoms = alloy((2, 1, 1))  # 8 atoms: CHGNet at ~40 ms per step here
    stride = 5
    args = ["--model", "chgnet", "--threads", "1"]  # one thread: bitwise reproducible torch on CPU
    full = runs("full", atoms, steps=30, stride=stride)
    full.leg(args)
    lazy = runs("lazy", atoms, steps=30, stride=stride)
    t = lazy.leg(args + ["--stress-stride", str(stride)])
    rows = assert_identical(full, lazy, 7)
    assert np.abs(rows[:, 5]).max() > 1e-5
    assert t["n_evaluations_with_stress"] == 7 and t["n_evaluations"] == 31
    with_s = t["model_seconds_per_evaluation_with_stress"]["median"]
    without = t["model_seconds_per_evaluation_without_stress"]["median"]
    print(f"\nCHGNet-8 model time: {with_s * 1e3:.1f} ms with stress, {without * 1e3:.1f} ms without")

    legs = restarted_pair(runs, atoms, args, stride=stride, first_leg=12, total=30)
    rows = assert_identical(legs["full2"][0], legs["lazy2"][0], 7)
    assert rows[:, 0].tolist() == list(range(0, 31, stride))
    assert legs["lazy2"][1]["n_evaluations_with_stress"] == 4  # step 15, 20, 25, 30 (12 is not written)


# --------------------------------------------------------------------------------------------
# SevenNet-0 (weights in the sevenn wheel): the adapter's stress-free path and its CPU rewrites
# --------------------------------------------------------------------------------------------


def test_e3nn_split_of_column_slices_is_bitwise_neutral():
    """e3nn_graphs.split_column_slices on a graph of slices that tile the tensor (rewritten) and one
    with a gap (left alone): outputs and gradients bitwise those of the original graph."""
    torch = pytest.importorskip("torch")
    import operator

    from torch import fx

    from dynamat_driver.models.e3nn_graphs import split_column_slices

    def build(spans, width):
        g = fx.Graph()
        x = g.placeholder("x")
        flat = g.call_method("reshape", (x, -1, width))
        # e3nn also reads the flattened input's shape (its batch size): not a use of its values
        rows = g.call_function(operator.getitem, (g.call_function(getattr, (flat, "shape")), 0))
        outs = [g.call_function(torch.mul, (g.call_function(operator.getitem, (flat, (slice(None), slice(a, b)))),
                                            float(i + 2))) for i, (a, b) in enumerate(spans)]
        g.output(g.call_function(torch.mul, (g.call_function(torch.cat, (outs, 1)), rows)))
        return g

    rng = torch.Generator().manual_seed(0)
    for spans, width, rewritten in (([(0, 3), (3, 7), (7, 12)], 12, 1), ([(0, 3), (5, 12)], 12, 0)):
        x = torch.randn(50, width, generator=rng, requires_grad=True)
        g0, g1 = build(spans, width), build(spans, width)
        assert split_column_slices(g1) == rewritten
        g1.lint()
        m0, m1 = fx.GraphModule(torch.nn.Module(), g0), fx.GraphModule(torch.nn.Module(), g1)
        y0, y1 = m0(x), m1(x)
        w = torch.randn(y0.shape, generator=rng)
        (d0,) = torch.autograd.grad((y0 * w).sum(), [x])
        (d1,) = torch.autograd.grad((y1 * w).sum(), [x])
        assert torch.equal(y0, y1) and torch.equal(d0, d1)
        assert any(n.target is torch.split for n in g1.nodes) == bool(rewritten)


def test_sevennet_stress_free_and_streamlined_paths_are_bitwise_the_calculator():
    """One thread (bitwise reproducible torch on CPU). The adapter (e3nn graphs rewritten, message
    backward as index_select, forces without the edge virial on request) against a fresh
    SevenNetCalculator: energy, forces and stress bitwise equal; without stress, energy and forces
    bitwise equal and no stress; batched, the same with and without stress."""
    pytest.importorskip("sevenn")
    code = """
import numpy as np, torch, warnings
warnings.simplefilter("ignore")
torch.set_num_threads(1)
from ase.build import bulk
from sevenn.calculator import SevenNetCalculator
from dynamat_driver.models import load_model
m = load_model("sevennet-0")
assert m.skips_stress and m.streamlined > 0
ref = SevenNetCalculator(model="7net-0", device="cpu")
a = bulk("Cu", "fcc", a=3.62, cubic=True).repeat((2, 2, 2)); a.symbols[[0, 5]] = "Au"; a.rattle(0.05, seed=1)
b = a.copy(); b.rattle(0.05, seed=2)
for x in (a, b):
    ref.calculate(x.copy(), ["energy", "forces", "stress"]); r = ref.results
    e1, f1, s1 = m.calculate(x, True, stress=True)
    e0, f0, s0 = m.calculate(x, False, stress=False)
    assert r["energy"] == e1 == e0, (r["energy"], e1, e0)
    assert np.array_equal(r["forces"], f1) and np.array_equal(f1, f0)
    assert np.array_equal(r["stress"], s1) and s0 is None
    assert np.abs(s1).max() > 1e-4 and np.abs(f1).max() > 1e-2
with_s, without = m.calculate_batch([a, b], stress=True), m.calculate_batch([a, b], stress=False)
for (e1, f1, s1), (e0, f0, s0) in zip(with_s, without):
    assert e1 == e0 and np.array_equal(f1, f0) and s0 is None and s1 is not None
print("ok", m.streamlined)
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and res.stdout.startswith("ok"), res.stderr[-3000:]


@pytest.mark.slow
def test_sevennet_nvt_identical_with_stress_on_demand(runs):
    """Real i-PI, SevenNet-0 on 8 atoms: outputs with --stress-stride identical to every written digit."""
    pytest.importorskip("sevenn")
    atoms = alloy((2, 1, 1))
    args = ["--model", "sevennet-0", "--threads", "1"]
    full = runs("full", atoms, steps=20, stride=5)
    full.leg(args)
    lazy = runs("lazy", atoms, steps=20, stride=5)
    t = lazy.leg(args + ["--stress-stride", "5"])
    rows = assert_identical(full, lazy, 5)
    assert np.abs(rows[:, 5]).max() > 1e-5
    assert t["n_evaluations_with_stress"] == 5 and t["n_evaluations"] == 21
    assert t["stress"]["model_skips_stress"]
