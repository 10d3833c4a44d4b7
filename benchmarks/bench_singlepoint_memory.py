#!/usr/bin/env python
"""Peak memory of single-point evaluations through dynamat-driver, by batch size (issue 15 §3).

``dynamat singlepoint`` sends reference frames to the driver in batches (i-PI's batched protocol,
default 8 structures a request). Each case runs in a fresh ``dynamat-driver`` process served by a
minimal i-PI-protocol server written here, with ``--dtype``/threads as given; the driver's peak
resident memory (VmHWM from /proc, the kernel's high-water mark) and its model time per structure
are printed, and every batch size's forces are compared with batch size 1's.

    python benchmarks/bench_singlepoint_memory.py [--model chgnet] [--frames 16] [--batch-sizes 1,8]
        [--system ti32|si64] [--driver-cmd .venvs/zoo/bin/dynamat-driver]

Target: <= 1 GB at the default batch size for CHGNet on 32-atom Ti (4.45 GB before; 0.91 GB at
batch size 1).
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from ase.build import bulk

from dynamat_driver.protocol import EXIT, FORCEREADY, GETFORCE, HDRLEN, INIT, NEEDINIT, POSDATA, STATUS
from dynamat_driver.units import BOHR_PER_ANGSTROM, HARTREE_PER_EV

BIN = Path(sys.executable).parent


def structures(system: str, n: int):
    if system == "ti32":
        base = bulk("Ti", "hcp", a=2.95, c=4.68).repeat((2, 2, 4))
    else:
        base = bulk("Si", "diamond", a=5.43, cubic=True).repeat((2, 2, 2))
    rng = np.random.default_rng(5)
    out = []
    for _ in range(n):
        a = base.copy()
        a.positions += rng.normal(scale=0.05, size=a.positions.shape)
        out.append(a)
    return out


def recvall(sock, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise RuntimeError("driver closed the socket")
        buf += chunk
    return bytes(buf)


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def serve(driver_cmd, model: str, atoms_list, batch: int, extra=()) -> dict:
    """Sends atoms_list to a fresh driver in batches of ``batch``; returns forces, peak memory, timing."""
    tmp = Path(tempfile.mkdtemp(prefix="bm"))
    path = str(tmp / "s")
    lst = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lst.bind(path)
    lst.listen(1)
    timing = tmp / "t.json"
    proc = subprocess.Popen(driver_cmd + ["--model", model, "--unix", path, "--timing-file", str(timing), *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        lst.settimeout(300)
        sock, _ = lst.accept()
        sock.sendall(STATUS)
        assert recvall(sock, HDRLEN) == NEEDINIT
        par = f"species: {atoms_list[0].get_chemical_formula(mode='reduce')}"
        if batch > 1:
            par += f", batch_size:{batch}"
        par_b = par.encode()
        sock.sendall(INIT + np.int32(0).tobytes() + np.int32(len(par_b)).tobytes() + par_b)
        nat = len(atoms_list[0])
        forces = []
        t0 = time.perf_counter()
        for i in range(0, len(atoms_list), batch):
            chunk = atoms_list[i: i + batch]
            chunk = chunk + [chunk[-1]] * (batch - len(chunk))  # padded, as i-PI does
            hs = [np.ascontiguousarray(np.array(a.cell).T * BOHR_PER_ANGSTROM) for a in chunk]
            pos = [np.ascontiguousarray(a.positions * BOHR_PER_ANGSTROM) for a in chunk]
            sock.sendall(STATUS)
            recvall(sock, HDRLEN)
            if batch == 1:
                body = hs[0].tobytes() + np.linalg.inv(hs[0]).tobytes() + np.int32(nat).tobytes() + pos[0].tobytes()
            else:
                body = np.int32(nat).tobytes() + b"".join(h.tobytes() + np.linalg.inv(h).tobytes() for h in hs) \
                    + b"".join(p.tobytes() for p in pos)
            sock.sendall(POSDATA + body + GETFORCE)
            assert recvall(sock, HDRLEN) == FORCEREADY
            if batch == 1:
                recvall(sock, 8 + 4)
                f = np.frombuffer(recvall(sock, 24 * nat), np.float64).reshape(1, nat, 3)
                recvall(sock, 72)
                n = int(np.frombuffer(recvall(sock, 4), np.int32)[0])
                recvall(sock, n)
            else:
                recvall(sock, 8 * batch + 4)
                f = np.frombuffer(recvall(sock, 24 * nat * batch), np.float64).reshape(batch, nat, 3)
                recvall(sock, 72 * batch)
                for _ in range(batch):
                    n = int(np.frombuffer(recvall(sock, 4), np.int32)[0])
                    recvall(sock, n)
            forces.extend(f[: len(atoms_list[i: i + batch])] / (HARTREE_PER_EV * BOHR_PER_ANGSTROM))
        wall = time.perf_counter() - t0
        peak = peak_rss_mb(proc.pid)
        sock.sendall(EXIT)
        proc.wait(timeout=60)
        t = json.loads(timing.read_text())
        return {"forces": np.array(forces), "peak_mb": peak, "wall_per_structure": wall / len(atoms_list),
                "model_per_structure": t["model_seconds_total"] / t["n_evaluations"]}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        lst.close()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="chgnet")
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--batch-sizes", default="1,8")
    ap.add_argument("--system", choices=["ti32", "si64"], default="ti32")
    ap.add_argument("--driver-cmd", default=str(BIN / "dynamat-driver"))
    ap.add_argument("--option", action="append", default=[], help="extra driver arguments, e.g. --option=--threads=2")
    args = ap.parse_args()
    atoms = structures(args.system, args.frames)
    sizes = [int(x) for x in args.batch_sizes.split(",")]
    extra = [e for o in args.option for e in o.split("=", 1)]
    ref = None
    print(f"{args.model} single points, {args.frames} frames of {args.system} ({len(atoms[0])} atoms), "
          f"one fresh driver per batch size:")
    for b in sizes:
        r = serve([args.driver_cmd], args.model, atoms, b, extra)
        if ref is None:
            ref = r["forces"]
        dF = float(np.abs(r["forces"] - ref).max())
        print(f"  batch {b:2d}: peak driver memory {r['peak_mb'] / 1024:.2f} GB, model "
              f"{1e3 * r['model_per_structure']:.0f} ms/structure, wall {1e3 * r['wall_per_structure']:.0f} "
              f"ms/structure, max |F - F(batch {sizes[0]})| {dF:.2e} eV/Å")


if __name__ == "__main__":
    main()
