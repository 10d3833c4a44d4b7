#!/usr/bin/env python
"""Per-job overhead of `dynamat campaign` against the MD time of each job, and a projection to the
paper's full matrix (15 models x 17 systems x 20 ps = 255 jobs).

Runs the small campaign (EMT and LJ on the two demo systems, --steps N) with the local executor and,
when SLURM is available (a reachable cluster, or - as root with slurm-wlm installed - a private
one-node cluster started for the occasion), with the SLURM executor. For each job it prints, from
the tasks' state files:

  queue     submission -> the task's shell starts (SLURM: dispatch and waiting for a free CPU)
  py-start  the task's shell -> its Python is ready (imports)
  run-start Python ready -> first MD step (i-PI and driver start, model load, first force call)
  MD        first MD step -> MD end
  scoring   score.json written with `dynamat score`'s code
and the overhead share (everything but MD) of the job's wall time.

    .venv/bin/python benchmarks/bench_campaign.py [--steps 100] [--jobs 2] [--executors local,slurm]
        [--sec-per-step 0.01,0.05,0.2] [--startup-s 0,10,30]

The projection assumes the paper's protocols (12 systems at 0.25 fs -> 80 000 steps, 5 molecular
crystals at 0.5 fs -> 40 000 steps), the measured per-job overheads (scoring extrapolated linearly
in frames from a timed full score of the 4 ps demo reference; real systems have more atoms, see
bench_scoring.py for that scaling) and a range of MLIP seconds per MD step; MLIP start-up (model
load) is added as --startup-s on top of the measured EMT start-up.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from dynamat.campaign import CampaignSpec, pair_timings, run_campaign
from dynamat.errors import DynamatError

MODELS = ["emt", "lj"]
SYSTEMS = ["bulkCu_300K-demo_EMT", "bulkCu3Au_500K-demo_EMT"]
COLS = ("queue_s", "python_startup_s", "run_startup_s", "md_s", "scoring_s", "task_total_s")


def _timings(out: Path) -> list[dict]:
    rows = []
    for m in MODELS:
        for s in SYSTEMS:
            t = pair_timings(out, m, s)
            st = json.loads((out / "_campaign" / "state" / m / f"{s}.json").read_text())
            times = st["times"]
            t["run_startup_s"] = times["first_step"] - times["task"]
            rows.append({"pair": f"{m}/{s}", **t})
    return rows


def _print_rows(label: str, rows: list[dict], wall_s: float, report_s: float | None) -> dict:
    print(f"\n== {label}: campaign wall {wall_s:.1f} s, report {report_s or 0:.1f} s")
    print(f"{'pair':<34} {'queue':>6} {'py-start':>8} {'run-start':>9} {'MD':>6} {'scoring':>7} {'total':>6} "
          f"{'ms/step':>7} {'overhead':>8}")
    for r in rows:
        over = 1 - r["md_s"] / r["task_total_s"] if r["task_total_s"] else float("nan")
        q = r["queue_s"] or 0.0
        print(f"{r['pair']:<34} {q:6.2f} {r['python_startup_s'] or 0:8.2f} {r['run_startup_s']:9.2f} "
              f"{r['md_s']:6.2f} {r['scoring_s']:7.2f} {r['task_total_s']:6.2f} "
              f"{1e3 * (r['seconds_per_step'] or 0):7.1f} {100 * over:7.0f}%")
    med = {k: statistics.median([r[k] or 0.0 for r in rows]) for k in COLS}
    med["queue_min_s"] = min(r["queue_s"] or 0.0 for r in rows)
    med["seconds_per_step"] = statistics.median([r["seconds_per_step"] for r in rows if r["seconds_per_step"]])
    print(f"{'median':<34} {med['queue_s']:6.2f} {med['python_startup_s']:8.2f} {med['run_startup_s']:9.2f} "
          f"{med['md_s']:6.2f} {med['scoring_s']:7.2f} {med['task_total_s']:6.2f}")
    return med


def _campaign(executor: str, root: Path, steps: int, jobs: int, **kw) -> dict:
    out = root / executor
    spec = CampaignSpec(tuple(MODELS), tuple(SYSTEMS), out, executor=executor, jobs=jobs, steps=steps,
                        cpus_per_task=1, poll_s=0.5, **kw)
    res = run_campaign(spec)
    med = _print_rows(f"{executor} executor, {len(MODELS) * len(SYSTEMS)} jobs x {steps} steps, "
                      f"{jobs} at a time", _timings(out), res.wall_s, res.report_s)
    t0 = time.monotonic()
    run_campaign(spec)
    med["rerun_skip_s"] = time.monotonic() - t0
    med["report_s"] = res.report_s or 0.0
    print(f"rerun (all {len(MODELS) * len(SYSTEMS)} skipped): {med['rerun_skip_s']:.2f} s")
    return med


def _scoring_per_frame() -> tuple[float, int]:
    from dynamat.reference import default_reference
    from dynamat.io import read_reference
    from dynamat.scoring import score_md

    ref = read_reference(default_reference(), SYSTEMS[0])
    best = float("inf")
    for _ in range(2):
        t0 = time.perf_counter()
        score_md(ref, ref, dims=3)
        best = min(best, time.perf_counter() - t0)
    return best / ref.n_frames, ref.n_frames


def _slurm_available() -> str | None:
    if not shutil.which("sinfo"):
        return None
    try:
        r = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return "existing" if r.returncode == 0 and "idle" in r.stdout else None


def _project(meds: dict[str, dict], sec_per_step: list[float], startup_extra: list[float],
             score_per_frame: float) -> None:
    # the paper's matrix: 12 systems with 0.25 fs (a frame every 10 steps) and 5 molecular crystals
    # with 0.5 fs (a frame every step), 20 ps each, for 15 models
    groups = [(15 * 12, 80_000, 8_000), (15 * 5, 40_000, 40_000)]
    n_jobs = sum(g[0] for g in groups)
    print(f"\n== projection: {n_jobs} jobs (15 models x 17 systems x 20 ps), per-job overhead vs MD, in job-hours")
    print(f"scoring measured at {1e3 * score_per_frame:.2f} ms/frame (32 atoms), extrapolated linearly")
    for ex, med in meds.items():
        dispatch = med["queue_min_s"]  # a free slot's dispatch latency; waiting for resources is not overhead
        print(f"\n{ex}: dispatch {dispatch:.2f} s + python start-up {med['python_startup_s']:.2f} s + "
              f"run start-up {med['run_startup_s']:.2f} s (EMT) per job; report {med['report_s']:.1f} s once")
        print(f"{'s/step':>7} {'+model load':>11} {'MD h':>8} {'overhead h':>10} {'overhead':>8}")
        for sps in sec_per_step:
            for extra in startup_extra:
                md_h = sum(n * steps * sps for n, steps, _ in groups) / 3600
                over_s = sum(n * (dispatch + med["python_startup_s"] + med["run_startup_s"] + extra
                                  + frames * score_per_frame + 1.0) for n, _, frames in groups) + med["report_s"]
                over_h = over_s / 3600
                print(f"{sps:7.3f} {extra:10.0f}s {md_h:8.1f} {over_h:10.2f} {100 * over_h / (md_h + over_h):7.2f}%")
    print("(+1 s per job for reading the reference and writing score.json; i-PI's own per-step cost is in s/step)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--executors", default="local,slurm")
    ap.add_argument("--sec-per-step", default="0.01,0.05,0.2")
    ap.add_argument("--startup-s", default="0,30", help="extra MLIP start-up (model load) per job, seconds")
    args = ap.parse_args()
    meds: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench-campaign-") as tmp:
        root = Path(tmp)
        if "local" in args.executors:
            meds["local"] = _campaign("local", root, args.steps, args.jobs)
        if "slurm" in args.executors:
            if _slurm_available():
                meds["slurm"] = _campaign("slurm", root, args.steps, args.jobs)
            else:
                from dynamat.campaign_testcluster import ClusterUnavailable, private_slurm_cluster

                try:
                    with private_slurm_cluster(root / "cluster") as info:
                        print(f"\n(private one-node SLURM cluster: {info['cpus']} CPUs, auth/{info['auth']})")
                        meds["slurm"] = _campaign("slurm", root, args.steps, args.jobs)
                except ClusterUnavailable as exc:
                    print(f"\n== slurm executor skipped: {exc}")
                except DynamatError as exc:
                    print(f"\n== slurm executor failed: {exc}")
        spf, n = _scoring_per_frame()
        _project(meds, [float(x) for x in args.sec_per_step.split(",")],
                 [float(x) for x in args.startup_s.split(",")], spf)


if __name__ == "__main__":
    main()
