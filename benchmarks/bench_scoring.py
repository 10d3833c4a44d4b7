"""Benchmark the scorer: its two parts side by side, its RDF against a per-frame loop, its memory.

Synthetic 108-atom fcc trajectories (thermal AR(1) displacements, σ ≈ 0.1 Å, stress). By default,
in one process on the same two ``--parts-frames`` (2,000) frame trajectories: dynamat's own
observables (``score_md``: RDF, pressure, VDOS with bootstrap) against what the ``matbench`` object
(Matbench-discovery's six keys) adds to a score (``dynamat.scoring.run.score_with_matbench``), and
their ratio.
``--full`` then scores two ``--frames`` (20,000) frame trajectories completely (both parts) and
reports the peak memory; ``--rdf-baseline`` times our RDF against a per-frame numpy loop
(all-pairs minimum-image distance matrix, then ``np.histogram``) on them and checks they agree.

    .venv/bin/python benchmarks/bench_scoring.py                   # the two parts, 2k frames
    .venv/bin/python benchmarks/bench_scoring.py --full            # + full score of 20k frames
    .venv/bin/python benchmarks/bench_scoring.py --rdf-baseline --cell triclinic
    .venv/bin/python benchmarks/bench_scoring.py --full --frames 80000 --parts-frames 0
"""

from __future__ import annotations

import argparse
import itertools
import resource
import time
import tracemalloc

import numpy as np

from dynamat.metrics.rdf import rdf, rdf_r_max
from dynamat.scoring import score_md
from dynamat.scoring.run import matbench_object, score_with_matbench
from dynamat.trajectory import Trajectory

CELLS = {
    "cubic": np.eye(3) * 3 * 3.61,
    # sheared, not reducible to orthorhombic: minimum images need lattice-offset checks
    "triclinic": np.array([[10.83, 0.0, 0.0], [3.2, 10.4, 0.0], [1.7, 2.3, 10.1]]),
}


def synthetic(n_frames: int, cell: np.ndarray, seed: int, sigma: float = 0.1, phi: float = 0.95):
    """Atoms on fcc sites of a 3×3×3 conventional cell mapped into ``cell``, AR(1) displacements."""
    rng = np.random.default_rng(seed)
    basis = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    frac = np.array([(b + n) / 3 for n in itertools.product(range(3), repeat=3) for b in basis])
    sites = frac @ cell
    n = len(sites)
    pos = np.empty((n_frames, n, 3))
    x = rng.normal(scale=sigma, size=(n, 3))
    kick = sigma * np.sqrt(1 - phi**2)
    for t in range(n_frames):
        x = phi * x + rng.normal(scale=kick, size=(n, 3))
        pos[t] = sites + x
    stress = np.zeros((n_frames, 6))
    stress[:, :3] = rng.normal(scale=1e-3, size=(n_frames, 1)) + 2e-4
    return Trajectory(
        numbers=np.full(n, 29), positions=pos, cells=cell, dt_fs=2.5, stress=stress,
    )


def rdf_per_frame(positions, cell, n_bins, r_max, orthorhombic):
    """The straightforward version: one N×N minimum-image distance matrix per frame."""
    n = positions.shape[1]
    iu = np.triu_indices(n, 1)
    edges = np.linspace(0.0, r_max, n_bins + 1)
    inv = np.linalg.inv(cell)
    images = np.array(list(itertools.product((-1, 0, 1), repeat=3))) @ cell
    counts = np.zeros(n_bins)
    for frame in positions:
        d = frame[None, :, :] - frame[:, None, :]
        s = d @ inv
        s -= np.rint(s)
        d = s @ cell
        if orthorhombic:
            dist = np.sqrt((d**2).sum(-1))[iu]
        else:  # nearest of the 27 neighbouring images (exact for a reduced cell below r_max)
            dist = np.sqrt(((d[iu][:, None, :] + images[None]) ** 2).sum(-1)).min(1)
        counts += np.histogram(dist, bins=edges)[0]
    vol = abs(np.linalg.det(cell))
    shell = 4 / 3 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    return 0.5 * (edges[1:] + edges[:-1]), counts / (n * (n - 1) / 2 * len(positions) / vol * shell)


def timed(fn, repeat: int):
    """(wall s, CPU s, result) of the fastest of ``repeat`` calls; CPU time sums all threads and
    is the stable measure on a shared machine."""
    best = (np.inf, np.inf, None)
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        res = fn()
        best = min(best, (time.perf_counter() - t0, time.process_time() - c0, res),
                   key=lambda x: x[1])
    return best


def compare_parts(n_frames: int, cell, n_boot: int, repeat: int) -> None:
    """dynamat's own observables and the matbench object on the same trajectories, interleaved.

    The matbench object's cost is what it adds to a score: the full score as ``dynamat score``
    computes it (``score_with_matbench``: its bond angles ride in score_md's RDF pass, whose
    counts its RDF reuses) minus score_md alone. Its cost computed on its own is printed too."""
    ref = synthetic(n_frames, cell, seed=0)
    mlip = synthetic(n_frames, cell, seed=1, sigma=0.11)
    best = {k: (np.inf, np.inf) for k in ("own", "both", "alone")}
    runs = {"own": lambda: score_md(ref, mlip, n_boot=n_boot),
            "both": lambda: score_with_matbench(ref, mlip, n_boot=n_boot)["matbench"],
            "alone": lambda: matbench_object(ref, mlip)}
    out = {}
    for _ in range(repeat):  # interleaved, so a burst of load elsewhere hits all alike
        for k, fn in runs.items():
            w, c, out[k] = timed(fn, 1)
            best[k] = min(best[k], (w, c), key=lambda x: x[1])
    assert out["both"] == out["alone"], "the shared pass changed a Matbench number"
    own, both, alone = best["own"], best["both"], best["alone"]
    mb = (both[0] - own[0], both[1] - own[1])
    print(f"{n_frames} frames × {ref.n_atoms} atoms, best of {repeat}:")
    print(f"  baseline: dynamat's own observables (score_md, n_boot={n_boot}): {own[1]:7.2f} s CPU "
          f"{own[0]:7.2f} s wall")
    print(f"  full score (score_md + matbench object, one pass per side):  {both[1]:7.2f} s CPU "
          f"{both[0]:7.2f} s wall")
    print(f"  ours:     matbench object, added to the score:                {mb[1]:7.2f} s CPU "
          f"{mb[0]:7.2f} s wall")
    print(f"            (computed on its own, its own passes:                {alone[1]:7.2f} s CPU "
          f"{alone[0]:7.2f} s wall)")
    print(f"  ratio (ours / baseline, target ≤ 1): {mb[1] / own[1]:.2f}x CPU, {mb[0] / own[0]:.2f}x wall")
    print("  " + ", ".join(f"{k} {v:.6g}" for k, v in out["both"].items()))


def full_score(ref, mlip, n_boot: int) -> None:
    """Both parts of a score, as ``dynamat score`` computes them, with the peak memory."""
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    t0, c0 = time.perf_counter(), time.process_time()
    scores = score_with_matbench(ref, mlip, n_boot=n_boot)
    t_score, c_score = time.perf_counter() - t0, time.process_time() - c0
    keys = scores["matbench"]
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    traj_mb = sum(a.nbytes for t in (ref, mlip) for a in (t.positions, t.cells, t.stress)) / 2**20
    print(f"full score of {ref.n_frames} frames (score_md, n_boot={n_boot}, with the matbench object): "
          f"{t_score:.2f} s wall, {c_score:.2f} s CPU; "
          f"peak working memory {peak / 2**20:.0f} MiB (tracemalloc, beyond the {traj_mb:.0f} MiB "
          f"of input arrays); process max RSS "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    for key in ("rdf_error_pct", "pressure_mae_GPa", "pressure_hist_error_pct", "vdos_error_pct",
                "E_RPV_pct", "L_RPV_pct"):
        unc = scores[key + "_unc"]
        print(f"  {key:26s} {scores[key]:9.4f} ± {'n/a' if unc is None else f'{unc:.4f}'} "
              f"(floor {scores[key + '_floor']:.4f})")
    print("  matbench: " + ", ".join(f"{k} {v:.6g}" for k, v in keys.items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--parts-frames", type=int, default=2_000,
                    help="frames for the own-observables vs matbench comparison (0: skip it)")
    ap.add_argument("--frames", type=int, default=20_000, help="frames for --full and --rdf-baseline")
    ap.add_argument("--full", action="store_true", help="score --frames frames fully, with peak memory")
    ap.add_argument("--rdf-baseline", action="store_true",
                    help="time our RDF of --frames frames against a per-frame loop")
    ap.add_argument("--cell", choices=sorted(CELLS), default="cubic")
    ap.add_argument("--bins", type=int, default=500)
    ap.add_argument("--n-boot", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1, help="RDF threads for our code (--rdf-baseline)")
    ap.add_argument("--repeat", type=int, default=2, help="timings are the best of this many")
    args = ap.parse_args()

    cell = CELLS[args.cell]
    if args.parts_frames:
        compare_parts(args.parts_frames, cell, args.n_boot, args.repeat)
    if not (args.full or args.rdf_baseline):
        return
    t0 = time.perf_counter()
    ref = synthetic(args.frames, cell, seed=0)
    mlip = synthetic(args.frames, cell, seed=1, sigma=0.11)
    print(f"synthetic {args.frames} frames × {ref.n_atoms} atoms ({args.cell}) built in "
          f"{time.perf_counter() - t0:.1f} s")
    if args.rdf_baseline:
        r_max = rdf_r_max(cell)
        t_ours, c_ours, (r, g) = timed(lambda: rdf(ref.positions, ref.cells, n_bins=args.bins,
                                                   n_threads=args.threads), args.repeat)
        print(f"ours ({args.threads} thread{'s' * (args.threads > 1)}): RDF {t_ours:7.2f} s wall "
              f"{c_ours:7.2f} s CPU")
        t_base, c_base, (_, g_base) = timed(
            lambda: rdf_per_frame(ref.positions, cell, args.bins, r_max, args.cell == "cubic"),
            args.repeat)
        print(f"per-frame:          RDF {t_base:7.2f} s wall {c_base:7.2f} s CPU")
        print(f"speed-up {t_base / t_ours:.1f}x wall, {c_base / c_ours:.1f}x CPU; "
              f"max |Δg(r)| = {np.abs(g - g_base).max():.3g}")
    if args.full:
        full_score(ref, mlip, args.n_boot)


if __name__ == "__main__":
    main()
