#!/usr/bin/env python
"""Seconds per MD step: where dynamat's harness spends its time, and dynamat vs in-process ASE MD.

1. Breakdown, 108-atom fcc Cu with a do-nothing model (issue 15 §1: target <= 0.5 ms per step of
   overhead over a unix socket), each measured as i-PI's own "t/step" average:
     a. i-PI's step alone: the same input with ``<ffdirect><pes>dummy</pes>`` (no socket);
     b. + the unix socket round trip: a lean numpy client written here (recv, answer zeros);
     c. + dynamat-driver's loop: ``dynamat-driver --model null`` (parsing, Atoms, units, reply);
   the differences are the socket's and the driver's cost. The driver's own time per request
   (POSDATA received -> forces ready) comes from its timing file.
1b. i-PI's own options (``--only variants``): trajectory formats, latency, flushing, against the
   same lean-client run.
2. Totals, EMT-108, CHGNet-32 and SevenNet-0-32: in-process ASE MD (Nose-Hoover chain, extxyz frame every 10
   steps, the calculator on the Atoms) against i-PI + dynamat-driver with the same calculator,
   with and without ``--stress-stride`` (stress on written steps only), side by side in the same
   process run, repeats interleaved (A B C A B C ...) so load drift hits all alike; medians and
   ratios. Targets: CHGNet and SevenNet-0 steps <= 0.8x in-process ASE (stress on demand; for
   SevenNet, whose stress is nearly free, the bitwise-neutral CPU rewrites of its adapter).

Per-step overhead = wall time per step - model time per evaluation (the driver's timing file:
what the model call itself took, with and without stress). The i-PI input is the server wing's
own (``render_input``: safe_stride ~100, checkpoints ~1000 steps, a frame every 10 steps).

    python benchmarks/bench_md_overhead.py [--steps 3000] [--repeats 3] [--only breakdown|emt|chgnet|sevennet]
        [--threads 1] [--mlip-steps 110]   (>= 101: i-PI prints its t/step every 100 steps)
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from ase import io, units
from ase.build import bulk

from dynamat_driver.protocol import EXIT, FORCEREADY, GETFORCE, HAVEDATA, HDRLEN, INIT, NEEDINIT, POSDATA, READY, STATUS

BIN = Path(sys.executable).parent
STRIDE = 10


def render(atoms, steps: int, workdir: Path, sockdir: str, *, direct=False, **kw) -> Path:
    """dynamat's i-PI input for the metal protocol (0.25 fs, tau 254.5 fs, SVR, frames every 10)."""
    try:
        from dynamat.engines.ipi_input import MDSettings, render_input
    except ImportError:  # the server wing's layout before the move
        from dynamat.ipi_input import MDSettings, render_input
    io.write(workdir / "init.xyz", atoms, format="extxyz")
    text = render_input(MDSettings("svr", 0.25, 254.5, STRIDE, steps, 300.0, seed=7), init_file="init.xyz",
                        species=atoms.get_chemical_formula(mode="reduce"), sockets_prefix=sockdir, address="b",
                        verbosity="medium", **kw)
    if direct:  # the same simulation, forces from i-PI's own dummy PES: no socket at all
        text = re.sub(r"<ffsocket.*?</ffsocket>", "<ffdirect name='dynamat' pbc='false'><pes>dummy</pes></ffdirect>",
                      text, flags=re.S)
    (workdir / "input.xml").write_text(text)
    return workdir / "input.xml"


def ipi_ms_per_step(log: str) -> float:
    """Median of i-PI's "Average timings at MD step N. t/step: X" over N > 0 (N = 0 is startup)."""
    vals = [float(t) for n, t in re.findall(r"Average timings at MD step\s+(\d+)\. t/step:\s*([0-9.eE+-]+)", log)
            if int(n) > 0]
    if not vals:
        raise RuntimeError("i-PI printed no step timings (too few steps?)")
    return 1e3 * statistics.median(vals)


def lean_client(path: str, stop: threading.Event):
    """The least a socket client can do: answer every request with zero forces (numpy, one thread)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    for _ in range(600):
        try:
            s.connect(path)
            break
        except OSError:
            time.sleep(0.05)
    have, init, reply = False, False, None
    buf = bytearray(1 << 20)

    def recv(n):
        view = memoryview(buf)[:n]
        got = 0
        while got < n:
            k = s.recv_into(view[got:], n - got)
            if not k:
                raise EOFError
            got += k
        return view

    try:
        while not stop.is_set():
            h = bytes(recv(HDRLEN))
            if h == STATUS:
                s.sendall(HAVEDATA if have else READY if init else NEEDINIT)
            elif h == INIT:
                recv(4)
                n = int(np.frombuffer(recv(4), np.int32)[0])
                recv(n)
                init = True
            elif h == POSDATA:
                recv(144)
                nat = int(np.frombuffer(recv(4), np.int32)[0])
                recv(24 * nat)
                if reply is None:
                    reply = (FORCEREADY + np.float64(0).tobytes() + np.int32(nat).tobytes()
                             + np.zeros(3 * nat).tobytes() + np.zeros(9).tobytes() + np.int32(0).tobytes())
                have = True
            elif h == GETFORCE:
                s.sendall(reply)
                have = False
            elif h == EXIT:
                break
    except (EOFError, OSError):
        pass
    finally:
        s.close()


#: i-PI settings tried against the harness's overhead (issue 15 §1), as edits of the rendered input
VARIANTS = {
    "as written": lambda x: x,
    "trajectories format='xyz'": lambda x: x.replace("format='ase'", "format='xyz'"),
    "trajectories format='bin'": lambda x: x.replace("format='ase'", "format='bin'"),
    "no trajectories": lambda x: re.sub(r"<trajectory.*?</trajectory>", "", x, flags=re.S),
    "<latency>1e-6</latency>": lambda x: re.sub(r"(<ffsocket[^>]*>)", r"\1<latency>1e-6</latency>", x),
    "flush every 100 writes": lambda x: x.replace("flush='1'", "flush='100'"),
}


def run_ipi(atoms, steps: int, client: str, model_args=(), driver_cmd=None, edit=None, **kw) -> dict:
    """One i-PI run; client: 'direct' | 'lean' | 'driver'. Returns ms/step and the driver's timing."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sockdir = tempfile.mkdtemp(prefix="bo")
        try:
            xml = render(atoms, steps, tmp, sockdir + "/", direct=client == "direct", **kw)
            if edit is not None:
                xml.write_text(edit(xml.read_text()))
            ipi = subprocess.Popen([str(BIN / "i-pi"), "input.xml"], cwd=tmp, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
            drv, th, stop = None, None, threading.Event()
            if client == "lean":
                th = threading.Thread(target=lean_client, args=(sockdir + "/b", stop), daemon=True)
                th.start()
            elif client == "driver":
                drv = subprocess.Popen((driver_cmd or [str(BIN / "dynamat-driver")]) + [
                    *model_args, "--unix", sockdir + "/b", "--connect-timeout", "60",
                    "--timing-file", str(tmp / "t.json")], cwd=tmp, stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE, text=True)
            log, _ = ipi.communicate(timeout=7200)
            if ipi.returncode != 0:
                raise RuntimeError(log[-2000:])
            timing = {}
            if drv is not None:
                _, err = drv.communicate(timeout=120)
                if drv.returncode != 0:
                    raise RuntimeError(err[-2000:])
                timing = json.loads((tmp / "t.json").read_text())
            if th is not None:
                stop.set()
                th.join(10)
            return {"ms_per_step": ipi_ms_per_step(log), "timing": timing}
        finally:
            shutil.rmtree(sockdir, ignore_errors=True)


def model_ms(timing: dict, key="model_seconds_per_evaluation") -> float:
    v = (timing.get(key) or {}).get("mean")
    return 1e3 * v if v is not None else float("nan")


def make_calc(model: str):
    if model == "emt":
        from ase.calculators.emt import EMT

        return EMT()
    if model == "sevennet-0":
        from sevenn.calculator import SevenNetCalculator

        return SevenNetCalculator(model="7net-0", device="cpu")
    from chgnet.model import CHGNet, CHGNetCalculator

    return CHGNetCalculator(model=CHGNet.load(model_name="0.3.0", use_device="cpu", verbose=False), use_device="cpu")


def ase_ms_per_step(model: str, atoms, steps: int) -> float:
    """In-process ASE MD as a user would write it: NHC NVT, a frame every 10 steps."""
    from ase.md.nose_hoover_chain import NoseHooverChainNVT
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary

    atoms = atoms.copy()
    atoms.calc = make_calc(model)
    MaxwellBoltzmannDistribution(atoms, temperature_K=300.0, rng=np.random.default_rng(7))
    Stationary(atoms)
    md = NoseHooverChainNVT(atoms, timestep=0.25 * units.fs, temperature_K=300.0, tdamp=254.5 * units.fs)
    with tempfile.TemporaryDirectory() as tmp:
        traj = Path(tmp) / "ase.extxyz"
        md.attach(lambda: io.write(traj, atoms, format="extxyz", append=True), interval=STRIDE)
        warm = max(10, steps // 10)
        md.run(warm)
        t0 = time.perf_counter()
        md.run(steps - warm)
        return 1e3 * (time.perf_counter() - t0) / (steps - warm)


def cu(n_rep: int):
    return bulk("Cu", "fcc", a=3.5898, cubic=True).repeat(n_rep)


def breakdown(steps: int, repeats: int, threads: int):
    atoms = cu(3)
    rows = {k: [] for k in ("direct", "lean", "driver")}
    served = []
    for _ in range(repeats):
        rows["direct"].append(run_ipi(atoms, steps, "direct")["ms_per_step"])
        rows["lean"].append(run_ipi(atoms, steps, "lean")["ms_per_step"])
        r = run_ipi(atoms, steps, "driver", ["--model", "null"])
        rows["driver"].append(r["ms_per_step"])
        served.append(1e3 * r["timing"]["driver_seconds_per_request"])
    m = {k: statistics.median(v) for k, v in rows.items()}
    print(f"Breakdown, {len(atoms)} Cu atoms, do-nothing model, unix socket ({steps} steps x {repeats}; ms/step, "
          f"median of i-PI's t/step):")
    print(f"  i-PI step alone (ffdirect dummy)        {m['direct']:6.3f}   runs {[round(x, 3) for x in rows['direct']]}")
    print(f"  + socket round trip (lean numpy client) {m['lean'] - m['direct']:+6.3f}   total {m['lean']:.3f}   "
          f"runs {[round(x, 3) for x in rows['lean']]}")
    print(f"  + dynamat-driver loop (--model null)    {m['driver'] - m['lean']:+6.3f}   total {m['driver']:.3f}   "
          f"runs {[round(x, 3) for x in rows['driver']]}")
    print(f"  driver time per request (POSDATA -> forces ready, inside the driver): {statistics.median(served):.3f} ms")
    print(f"  => per-step overhead of dynamat with a do-nothing model: {m['driver']:.3f} ms (target <= 0.5)")
    return m


def variants(steps: int, repeats: int) -> None:
    """i-PI's own options against its per-step cost (lean client, 108 atoms), interleaved repeats."""
    atoms = cu(3)
    rows = {k: [] for k in VARIANTS}
    for _ in range(repeats):
        for name, edit in VARIANTS.items():
            rows[name].append(run_ipi(atoms, steps, "lean", edit=edit)["ms_per_step"])
    print(f"i-PI options, {len(atoms)} Cu atoms, lean client ({steps} steps x {repeats}; ms/step, median of t/step):")
    base = statistics.median(rows["as written"])
    for name, v in rows.items():
        m = statistics.median(v)
        print(f"  {name:28s} {m:6.3f}  ({m - base:+.3f})   runs {[round(x, 3) for x in v]}")


def totals(model: str, atoms, steps: int, repeats: int, threads: int | None):
    args = ["--model", model] + (["--threads", str(threads)] if threads else [])
    if threads and model != "emt":
        import torch

        torch.set_num_threads(threads)
    a, full, lazy = [], [], []
    for _ in range(repeats):
        a.append(ase_ms_per_step(model, atoms, steps))
        full.append(run_ipi(atoms, steps, "driver", args))
        lazy.append(run_ipi(atoms, steps, "driver", args + ["--stress-stride", str(STRIDE)]))
    ma = statistics.median(a)
    print(f"{model}-{len(atoms)} ({steps} steps x {repeats}), ms/step (median):")
    print(f"  in-process ASE MD (NHC, calculator)        {ma:8.2f}   runs {[round(x, 2) for x in a]}")
    for label, rs in (("i-PI + dynamat-driver, stress every step", full),
                      (f"i-PI + dynamat-driver --stress-stride {STRIDE}", lazy)):
        w = statistics.median(r["ms_per_step"] for r in rs)
        mm = statistics.median(model_ms(r["timing"]) for r in rs)
        t = rs[0]["timing"]
        ws = model_ms(t, "model_seconds_per_evaluation_with_stress")
        wo = model_ms(t, "model_seconds_per_evaluation_without_stress")
        print(f"  {label:43s}{w:8.2f}   ratio {w / ma:.3f}   model {mm:.2f} ms/eval (with stress {ws:.2f}, "
              f"without {wo:.2f}; {t.get('n_evaluations_with_stress')} of {t.get('n_evaluations')} with stress)   "
              f"overhead {w - mm:.2f} ms/step   runs {[round(r['ms_per_step'], 2) for r in rs]}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=3000, help="steps of the EMT and do-nothing runs (CHGNet: steps/15)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", choices=["breakdown", "variants", "emt", "chgnet", "sevennet"], default=None)
    ap.add_argument("--threads", type=int, default=None, help="torch threads for CHGNet and SevenNet (both sides)")
    ap.add_argument("--mlip-steps", type=int, default=None, help="steps of the CHGNet and SevenNet runs (default steps/15)")
    args = ap.parse_args()
    if args.only in (None, "breakdown"):
        breakdown(args.steps, args.repeats, args.threads)
    if args.only in (None, "variants"):
        variants(args.steps, args.repeats)
    if args.only in (None, "emt"):
        totals("emt", cu(3), args.steps, args.repeats, None)
    mlip_steps = args.mlip_steps or max(200, args.steps // 15)
    if args.only in (None, "chgnet"):
        totals("chgnet", cu(2), mlip_steps, args.repeats, args.threads)
    if args.only in (None, "sevennet"):
        totals("sevennet-0", cu(2), mlip_steps, args.repeats, args.threads)


if __name__ == "__main__":
    main()
