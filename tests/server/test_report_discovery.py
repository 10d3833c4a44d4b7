"""What `dynamat report RESULTS` reads: every run folder and score file below RESULTS, at any depth; a run
folder without a score is a failure row (exploded, failed) or named as not scored, never dropped; a JSON
file that is not a score is refused, not made a row.

The run folders are real: an exploded run made by `dynamat run` (Lennard-Jones on two atoms on one site
gives non-finite forces at once), and a completed one, the golden `dynamat run` output
(tests/data/golden/runs/emt_classical), scored with `dynamat score` where a test needs a score. The
report runs as the installed console script with this tree first on PYTHONPATH.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from ase.build import bulk

from dynamat.io import write_reference
from dynamat.pimd.convergence import BeadConvergence
from dynamat.report import write_synthetic_results
from dynamat.trajectory import Trajectory

from conftest import REPO, assert_one_line_error, dynamat_cmd

GOLDEN_RUN = REPO / "tests" / "data" / "golden" / "runs" / "emt_classical"
DEMO_SYSTEM = "bulkCu_300K-demo_EMT"


@pytest.fixture(autouse=True)
def _this_tree(monkeypatch):
    """The console script imports dynamat from this tree (the subprocess inherits the variable)."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))


def _exploded_run(root: Path, tmp_path: Path) -> Path:
    """`dynamat run` of Lennard-Jones with two atoms on one site: exploded at step 0, too few frames to score."""
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    atoms.positions[1] = atoms.positions[0]
    ref = tmp_path / "ref.h5"
    write_reference(ref, Trajectory(numbers=atoms.numbers, positions=atoms.positions[None], cells=atoms.cell.array,
                                    dt_fs=2.5, temperature_K=300.0, name="custom_300K"), {"system_class": "pure metal"})
    res = dynamat_cmd("run", "--model", "lj", "--system", "custom_300K", "--reference", str(ref), "--steps", "100",
                      "--out", str(root), "--driver-arg=-o", "--driver-arg=sigma=2.3")
    assert res.returncode != 0, res.stderr
    run_dir = root / "lj" / "custom_300K"
    rec = json.loads((run_dir / "run.json").read_text())
    assert rec["status"] == "exploded" and not (run_dir / "score.json").exists()
    score = dynamat_cmd("score", "--system", "custom_300K", "--reference", str(ref), "--run", str(run_dir))
    assert score.returncode != 0 and not (run_dir / "score.json").exists()  # it cannot be scored
    return run_dir


def _completed_run(root: Path, model: str, scored: bool) -> Path:
    """The golden `dynamat run --model emt` folder as ``root/<model>/<system>``, scored with `dynamat score` or not."""
    run_dir = root / model / DEMO_SYSTEM
    shutil.copytree(GOLDEN_RUN, run_dir)
    if model != "emt":
        rec = json.loads((run_dir / "run.json").read_text())
        (run_dir / "run.json").write_text(json.dumps({**rec, "model": model}, indent=2) + "\n")
    if scored:
        res = dynamat_cmd("score", "--system", DEMO_SYSTEM, "--run", str(run_dir))
        assert res.returncode == 0, res.stderr
    return run_dir


def _table(out: Path, name: str) -> dict:
    return json.loads((out / "tables" / f"{name}.json").read_text())


def test_exploded_and_unscored_runs_are_counted_not_dropped(tmp_path):
    """An exploded run without a score is a failure row (its status and error from run.json), counted and kept
    out of the means as a scored exploded run is; a completed run without a score is no row, neither a
    failure of its model nor averaged, and is named on the console and in the tables' notes."""
    results = tmp_path / "results"
    exploded = _exploded_run(results, tmp_path)
    _completed_run(results, "emt", scored=True)
    unscored = _completed_run(results, "emt-unscored", scored=False)
    out = tmp_path / "out"
    res = dynamat_cmd("report", str(results), "--out", str(out), "--no-pdf")
    assert res.returncode == 0, res.stderr
    assert "2 models, 2 runs (1 failed/exploded, excluded from means); 1 run(s) without a score left out" \
        in res.stdout, res.stdout
    assert [ln for ln in res.stderr.splitlines() if "warning" in ln] == [
        f"dynamat: warning: not in the report: the run in {unscored} (completed) has no score "
        "(`dynamat score --run DIR` first)"]
    rows = {(r["model"], r["system"]): r for r in _table(out, "per_model_system")["rows"]}
    assert set(rows) == {("emt", DEMO_SYSTEM), ("lj", "custom_300K")}
    assert rows[("lj", "custom_300K")]["status"] == "exploded"
    assert rows[("lj", "custom_300K")]["system_class"] == "pure metal"
    assert rows[("lj", "custom_300K")]["rdf_error_pct"] is None
    per_model = {r["model"]: r for r in _table(out, "per_model")["rows"]}
    assert per_model["lj"]["n_failed"] == 1 and per_model["lj"]["n_completed"] == 0
    assert per_model["lj"]["failed_runs"] == "custom_300K:exploded"
    assert per_model["emt"]["n_failed"] == 0 and per_model["emt"]["rdf_error_pct"] is not None
    notes = " ".join(_table(out, "per_model")["notes"])
    assert "lj/custom_300K (exploded)" in notes and f"{unscored} (completed)" in notes
    assert "emt-unscored" not in per_model
    md = json.loads((out / "matbench" / "md_metrics.json").read_text())
    assert md["lj"]["metrics"]["md"] == "not available"

    # the library gives the exploded row run.json's error
    from dynamat.report.tables import load_results

    row = next(r for r in load_results(results).rows if r["model"] == "lj")
    assert row["error"] == json.loads((exploded / "run.json").read_text())["error"] and "non-finite" in row["error"]


def test_a_run_folder_without_a_score_given_as_such(tmp_path):
    """An exploded run folder named on its own is reported (one failure row); a completed, unscored one is
    one line that says to score it, not 'no score.json files under'."""
    results = tmp_path / "results"
    exploded = _exploded_run(results, tmp_path)
    unscored = _completed_run(results, "emt", scored=False)
    out = tmp_path / "out"
    res = dynamat_cmd("report", str(exploded), "--out", str(out), "--no-pdf")
    assert res.returncode == 0, res.stderr
    assert "1 models, 1 runs (1 failed/exploded" in res.stdout
    assert [r["status"] for r in _table(out, "per_model_system")["rows"]] == ["exploded"]
    assert (out / "report.html").is_file()

    res = dynamat_cmd("report", str(unscored), "--out", str(tmp_path / "out2"))
    line = assert_one_line_error(res, str(unscored), "not scored", "dynamat score --run")
    assert "no score.json files under" not in line
    assert not (tmp_path / "out2").exists()


def test_score_files_at_every_depth_are_found(tmp_path):
    """``runs/<model>/<system>`` and ``runs/demo/<model>/<system>`` together; a linked folder is not entered."""
    runs = tmp_path / "runs"
    write_synthetic_results(runs, models=(("CHGNet", 1, 412_525, 1.0),), curves=False)
    write_synthetic_results(runs / "demo", models=(("orb-v2", 2, 25_161_727, 0.6),), curves=False)
    elsewhere = write_synthetic_results(tmp_path / "elsewhere", models=(("MACE-MP-0", 1, 4_688_656, 0.8),),
                                        curves=False)
    (runs / "linked").symlink_to(elsewhere, target_is_directory=True)
    (runs / "demo" / "loop").symlink_to(runs, target_is_directory=True)
    out = tmp_path / "out"
    res = dynamat_cmd("report", str(runs), "--out", str(out), "--no-pdf")
    assert res.returncode == 0, res.stderr
    models = {r["model"] for r in _table(out, "per_model")["rows"]}
    assert models == {"CHGNet", "orb-v2"}
    assert len(_table(out, "per_model_system")["rows"]) == 6


def test_runs_inside_a_run_folder_are_not_the_benchmarks(tmp_path):
    """`beads-convergence` writes its PILE-L runs into the classical run's folder (beads_<P>/): a P = 1 one
    scored duplicated the classical row (refusing the report), unscored ones were named as runs to score."""
    from dynamat.report.tables import load_results

    runs = tmp_path / "runs"
    write_synthetic_results(runs, models=(("CHGNet", 1, 412_525, 1.0),), curves=False)
    host = next(runs.glob("CHGNet/*/score.json")).parent
    for p in (1, 2):
        inner = host / f"beads_{p}"
        inner.mkdir()
        (inner / "run.json").write_text(json.dumps({"model": "CHGNet", "system": host.name, "status": "completed"}))
        (inner / "score.json").write_text((host / "score.json").read_text())
    res = load_results(runs)
    assert len(res.rows) == 3 and not any("beads_" in n for n in res.notes)


def test_a_json_that_is_not_a_score_is_refused(tmp_path):
    """run.json, a bead-convergence summary and a `dynamat singlepoint --json` file named as scores: one line
    naming the file and what it is, no report; found in a folder walk, such a score.json is skipped with a
    warning and the report made from the rest."""
    results = tmp_path / "results"
    run_dir = _completed_run(results, "emt", scored=True)
    conv = BeadConvergence(model="emt", system=DEMO_SYSTEM, temperature_K=300.0, z=2.0, rows=[
        {"nbeads": 1, "kinetic_cv_eV_per_atom": 0.0388, "kinetic_cv_se_eV_per_atom": 0.0004, "n_samples": 40,
         "steps": 400, "seconds_per_step": 0.005, "run_dir": str(run_dir), "species": {},
         "agrees_with_previous": None, "difference_sigma": None}])
    beads = tmp_path / "bead_convergence.json"
    beads.write_text(json.dumps(conv.as_dict(), indent=2) + "\n")
    sp = tmp_path / "sp.json"
    res = dynamat_cmd("singlepoint", "--model", "emt", "--system", DEMO_SYSTEM, "--max-frames", "2", "--json", str(sp))
    assert res.returncode == 0, res.stderr
    cases = {run_dir / "run.json": ("run.json", "not a score", "give its run folder"),
             beads: ("not a score file", "status"),
             sp: ("singlepoint", "not the score of an MD run")}
    for path, needles in cases.items():
        out = tmp_path / f"out-{path.stem}"
        res = dynamat_cmd("report", str(run_dir / "score.json"), str(path), "--out", str(out))
        assert_one_line_error(res, str(path), *needles)
        assert not out.exists()

    (results / "emt" / "sp").mkdir()
    shutil.copy(sp, results / "emt" / "sp" / "score.json")
    res = dynamat_cmd("report", str(results), "--out", str(tmp_path / "out"), "--no-pdf")
    assert res.returncode == 0, res.stderr
    assert f"skipped unreadable score file {results / 'emt' / 'sp' / 'score.json'}: a `dynamat singlepoint`" \
        in res.stderr
    assert [r["system"] for r in _table(tmp_path / "out", "per_model_system")["rows"]] == [DEMO_SYSTEM]
