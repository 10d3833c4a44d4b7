"""Golden outputs of reading + scoring + reporting, pinned by tests/server/test_score_regression.py.

The inputs are small fixed i-PI run folders under ``runs/`` (so the test pins reading and scoring,
not MD): ``runs/emt_classical`` is the output of

    dynamat run --model emt --system bulkCu_300K-demo_EMT --steps 400 --seed 1

(41 frames, i-PI SVR), ``runs/emt_pimd2`` of the same with ``--steps 200 --beads 2`` (21 centroid
frames, PILE-L). Only the files the readers use are kept (run.json, input.xml, init.xyz,
simulation.out and the trajectories but a PIMD run's per-bead velocities). From them :func:`compute` writes

* ``scores/<case>.score.json`` + ``<case>.curves.npz``: ``dynamat score --run`` of each run folder
  and ``dynamat score --trajectory runs/emt_classical/simulation.pos_0.extxyz --dt-fs 2.5`` (no
  velocities, no stress: the finite-difference VDOS and null pressures);
* ``pimd_differences.json``: :func:`dynamat.pimd.quantum_classical_differences` of the two runs;
* ``report/``: the tables (CSV, JSON) and the Matbench export of ``dynamat report`` over the
  synthetic results (:func:`dynamat.report.write_synthetic_results`, seed 0: tiers, an exploded run,
  null pressures) plus the three scores above.

Regenerate (deliberately, in its own commit, saying why the numbers changed):

    .venv/bin/python tests/data/golden/regenerate.py            # goldens from the committed runs
    .venv/bin/python tests/data/golden/regenerate.py --rerun-md # also remake the run folders
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SYSTEM = "bulkCu_300K-demo_EMT"
RUN_FILES = ("run.json", "input.xml", "init.xyz", "simulation.out")
RUNS = {"emt_classical": ["--steps", "400"], "emt_pimd2": ["--steps", "200", "--beads", "2"]}
TRAJECTORY_DT_FS = 2.5
#: report outputs compared (figures and HTML are not numbers)
REPORT_GLOBS = ("tables/*.csv", "tables/*.json", "matbench/*")


def rerun_md(runs_dir: Path) -> None:
    """Remake the fixed run folders with the installed dynamat (i-PI + the EMT driver)."""
    exe = Path(sys.executable).with_name("dynamat")
    for name, extra in RUNS.items():
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run([str(exe), "run", "--model", "emt", "--system", SYSTEM, "--seed", "1",
                            "--out", tmp, *extra], check=True)
            src = Path(tmp) / "emt" / SYSTEM
            dst = runs_dir / name
            shutil.rmtree(dst, ignore_errors=True)
            dst.mkdir(parents=True)
            for f in sorted(src.iterdir()):
                # a PIMD run's per-bead velocities are read by nothing (the centroid's are vc)
                bead_velocities = "--beads" in extra and f.name.startswith("simulation.vel_")
                if f.name in RUN_FILES or (f.suffix == ".extxyz" and not bead_velocities):
                    shutil.copy2(f, dst / f.name)


def _jsonable(x):
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    return x


def compute(out: Path, runs_dir: Path = HERE / "runs") -> None:
    """Write every golden output under ``out`` from the run folders in ``runs_dir``."""
    from dynamat.pimd import quantum_classical_differences
    from dynamat.report import run_report, write_synthetic_results
    from dynamat.scoring.run import score_run, write_score

    scores = out / "scores"
    scores.mkdir(parents=True, exist_ok=True)
    cases = {
        "classical": dict(run_dir=runs_dir / "emt_classical"),
        "pimd2": dict(run_dir=runs_dir / "emt_pimd2"),
        "trajectory": dict(trajectory=runs_dir / "emt_classical" / "simulation.pos_0.extxyz",
                           dt_fs=TRAJECTORY_DT_FS),
    }
    for case, kw in cases.items():
        curves: dict = {}
        res = score_run(None, SYSTEM, curves=curves, **kw)
        write_score(res, scores / f"{case}.score.json", curves)
    diff = quantum_classical_differences(runs_dir / "emt_classical", runs_dir / "emt_pimd2")
    (out / "pimd_differences.json").write_text(json.dumps(_jsonable(diff), indent=1, sort_keys=True))

    with tempfile.TemporaryDirectory() as tmp:
        results = write_synthetic_results(Path(tmp) / "results")
        for case in cases:  # the real scores as three systems of model "emt"
            d = results / "emt" / f"{SYSTEM}-{case}"
            d.mkdir(parents=True)
            s = json.loads((scores / f"{case}.score.json").read_text())
            s["model"], s["system"] = "emt", d.name  # three systems: one model's runs of one system are refused
            (d / "score.json").write_text(json.dumps(s))
            shutil.copy2(scores / f"{case}.curves.npz", d / "curves.npz")
        rep = Path(tmp) / "report"
        run_report(results, rep, formats=("png",))
        for pattern in REPORT_GLOBS:
            for f in sorted(rep.glob(pattern)):
                dst = out / "report" / f.relative_to(rep)
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(f, dst)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rerun-md", action="store_true", help="remake runs/ with i-PI first")
    args = ap.parse_args()
    if args.rerun_md:
        rerun_md(HERE / "runs")
    for sub in ("scores", "report"):
        shutil.rmtree(HERE / sub, ignore_errors=True)
    compute(HERE)
    print(f"goldens written under {HERE}")


if __name__ == "__main__":
    main()
