"""Replicas (issue 23 §1): R EMT trajectories of one system through `dynamat campaign --replicas` and
`dynamat run --replicas`, scored one by one and aggregated, and a reference with two trajectories giving a
replica-against-replica noise floor.

One packed campaign of 4 replicas x 800 steps (200 fs each), run and scored by its task, feeds every test."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import assert_one_line_error, dynamat_cmd
from test_campaign import campaign
from dynamat.errors import ReferenceFormatError
from dynamat.io.reference_h5 import list_systems, read_reference, reference_replicas, write_reference
from dynamat.io.run_folder import read_run_trajectory
from dynamat.layout import RunFolder
from dynamat.reference import default_reference
from dynamat.scoring.core import score_md
from dynamat.scoring.run import score_run

SYSTEM = "bulkCu_300K-demo_EMT"
R, STEPS, SEED = 4, 800, 11


@pytest.fixture(scope="module")
def replicas(tmp_path_factory):
    out = tmp_path_factory.mktemp("replicas") / "camp"
    res = campaign("--models", "emt", "--systems", SYSTEM, "--replicas", str(R), "--pack", str(R), "--steps",
                   str(STEPS), "--seed", str(SEED), "--out", str(out), "--no-report", timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"1 models x 1 systems x {R} replicas = {R} runs (4 run)" in res.stderr
    folders = [RunFolder.of(out, "emt", SYSTEM, k).path for k in range(R)]
    scores = [json.loads(RunFolder(d).score_json.read_text()) for d in folders]  # written by the campaign task
    return out, folders, scores


def test_replicas_are_ordinary_run_folders_with_distinct_recorded_seeds(replicas, tmp_path):
    out, folders, scores = replicas
    assert [d.name for d in folders] == [SYSTEM] + [f"{SYSTEM}_r{k}" for k in range(1, R)]
    recs = [json.loads(RunFolder(d).run_json.read_text()) for d in folders]
    assert [(r["replica"], r["seed"], r["status"]) for r in recs] == [(k, SEED + k, "completed") for k in range(R)]
    assert [(s["replica_index"], s["status"]) for s in scores] == [(k, "completed") for k in range(R)]
    assert all((out / "_campaign" / "state" / "emt" / f"{d.name}.json").is_file() for d in folders)
    pos = [read_run_trajectory(d).positions[-1] for d in folders]
    assert all(not np.allclose(pos[0], p) for p in pos[1:])  # other seeds, other trajectories
    again = campaign("--models", "emt", "--systems", SYSTEM, "--replicas", str(R), "--steps", str(STEPS),
                     "--seed", str(SEED), "--out", str(out), "--no-report", timeout=60)
    assert again.returncode == 0 and f"= {R} runs ({R} skip)" in again.stderr, again.stderr

    # `dynamat run --replicas` on a copy: without --seed each replica keeps its recorded seed; a larger
    # --steps continues every one from its restart point, as it would a single run; then all are kept
    copy = tmp_path / "copy"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("_campaign"))
    more = ("run", "--model", "emt", "--system", SYSTEM, "--steps", str(STEPS + 40), "--replicas", str(R),
            "--pack", str(R), "--pack-wait-ms", "0", "--out", str(copy))
    res = dynamat_cmd(*more)
    assert res.returncode == 0, res.stderr[-2000:]
    recs = [json.loads(RunFolder.of(copy, "emt", SYSTEM, k).run_json.read_text()) for k in range(R)]
    assert [(r["seed"], r["steps_done"]) for r in recs] == [(SEED + k, STEPS + 40) for k in range(R)]
    again = dynamat_cmd(*more)
    assert again.returncode == 0 and again.stderr.count("kept: ") == R, again.stderr
    assert f"{SYSTEM}_r3 is completed at the asked length (seed {SEED + 3})" in again.stderr


def test_replica_spread_of_E_RDF_agrees_with_the_bootstrap(replicas):
    """Both estimate the statistical error of one run's E_RDF, but each replica is scored against the same
    reference segment, whose own sampling noise the bootstrap includes (it resamples both sides, equally
    long here) and the spread does not: sd ≈ unc/√2. Measured (README): sd/unc = 0.45 (200 fs), 0.60 (250 fs)."""
    out, _, scores = replicas
    e = np.array([s["rdf_error_pct"] for s in scores])
    unc = np.mean([s["rdf_error_pct_unc"] for s in scores])
    sd = e.std(ddof=1)
    assert 0.5 <= math.sqrt(2) * sd / unc <= 2.0, (e, unc)
    # the report's row of the set: the mean, the spread and the bootstrap error of the mean
    from dynamat.report.tables import load_results

    rows = load_results(out).rows
    assert len(rows) == 1 and rows[0]["n_replicas"] == R and rows[0]["replicas"] == list(range(R))
    row = rows[0]
    assert row["rdf_error_pct"] == pytest.approx(e.mean(), rel=1e-12)
    assert row["rdf_error_pct_replica_sd"] == pytest.approx(sd, rel=1e-12)
    assert row["rdf_error_pct_replica_unc"] == pytest.approx(sd / math.sqrt(R), rel=1e-12)
    uncs = np.array([s["rdf_error_pct_unc"] for s in scores])
    assert row["rdf_error_pct_unc"] == pytest.approx(math.sqrt((uncs**2).sum()) / R, rel=1e-12)


def test_report_shows_the_replica_columns_and_error_bars(replicas, tmp_path):
    from dynamat.report.figures import fig_pareto, fig_tier_bars
    from dynamat.report.tables import build_tables, load_results, write_table

    out, _, _ = replicas
    tables = build_tables(load_results(out))
    write_table(tables["per_model_system"], tmp_path)
    with open(tmp_path / "per_model_system.csv") as fh:
        (row,) = list(csv.DictReader(fh))
    assert row["n_replicas"] == str(R) and float(row["rdf_error_pct_replica_sd"]) > 0
    (model,) = tables["per_model"].rows
    assert model["rdf_error_pct_replica_unc"] == pytest.approx(float(row["rdf_error_pct_replica_sd"]) / 2, rel=1e-9)
    bars = fig_tier_bars([model], ["rdf_error_pct"])
    assert any(a.get_gid() == "replica-errorbar" for ax in bars.axes for a in ax.get_children())
    from dynamat.scoring.replicas import larger_uncertainty

    u, which = larger_uncertainty(model, "rdf_error_pct")
    assert u == max(model["rdf_error_pct_unc"], model["rdf_error_pct_replica_unc"])
    assert f"{which}: emt" in fig_pareto([model], "rdf_error_pct")._supxlabel.get_text()


def test_a_system_named_like_a_replica_does_not_continue_that_replica(replicas, tmp_path):
    """A system that is really called ``<S>_r1`` (a reference group without replica attributes) has the
    folder of replica 1 of S: refused in one line, the replica untouched."""
    out, folders, _ = replicas
    lone = tmp_path / "lone.h5"
    t = read_run_trajectory(folders[1])
    t.name, t.temperature_K = f"{SYSTEM}_r1", 300.0
    write_reference(lone, t)
    assert list_systems(lone) == [f"{SYSTEM}_r1"] and reference_replicas(lone, f"{SYSTEM}_r1") == [f"{SYSTEM}_r1"]
    before = RunFolder(folders[1]).run_json.read_bytes()
    res = dynamat_cmd("run", "--model", "emt", "--system", f"{SYSTEM}_r1", "--reference", str(lone), "--steps",
                      str(STEPS + 40), "--out", str(out))
    assert_one_line_error(res, f"holds a run of '{SYSTEM}' (replica 1), not of '{SYSTEM}_r1'")
    assert RunFolder(folders[1]).run_json.read_bytes() == before


def test_two_reference_replicas_give_a_replica_against_replica_noise_floor(replicas, tmp_path, monkeypatch):
    """Replicas 0 and 1 become a two-trajectory reference (groups NAME and NAME_r1, as `reference generate
    --replicas` writes them); replica 2 scored against it has, as floor, score_md(reference 0, reference 1)."""
    _, folders, scores = replicas
    ref_file = tmp_path / "two.h5"
    base = read_reference(default_reference(), SYSTEM)
    for k in (0, 1):
        t = read_run_trajectory(folders[k])
        t.name, t.temperature_K = (SYSTEM if k == 0 else f"{SYSTEM}_r1"), base.temperature_K
        write_reference(ref_file, t, {"replica_of": SYSTEM, "replica_index": k, "seed": SEED + k})
    assert list_systems(ref_file) == [SYSTEM]
    assert reference_replicas(ref_file, SYSTEM) == [SYSTEM, f"{SYSTEM}_r1"]
    listed = dynamat_cmd("systems", "--reference", str(ref_file), "--json")
    assert [(d["name"], d["reference_replicas"]) for d in json.loads(listed.stdout)] == [(SYSTEM, 2)], listed.stderr

    s = score_run(ref_file, SYSTEM, folders[2])
    assert s["floor_source"] == "reference_replicas" and s["n_reference_replicas"] == 2
    r0, r1 = (read_reference(ref_file, g) for g in (SYSTEM, f"{SYSTEM}_r1"))
    d = s["matched_duration_fs"]
    direct = score_md(r0.truncated_to(d), r1.truncated_to(d), n_boot=0)
    for key in ("rdf_error_pct", "vdos_error_pct", "pressure_mae_GPa", "pressure_hist_error_pct"):
        assert s[f"{key}_floor"] == pytest.approx(direct[key], rel=1e-12), key
    # every model of a campaign meets the same replicas: the floor is computed once per file version
    from dynamat.scoring import run as scoring_run

    computed = []
    real = scoring_run.reference_replica_floor
    monkeypatch.setattr(scoring_run, "reference_replica_floor", lambda *a, **k: computed.append(1) or real(*a, **k))
    again = score_run(ref_file, SYSTEM, folders[2])
    assert computed == [] and all(again[k] == s[k] for k in s if k.endswith("_floor"))
    os.utime(ref_file, ns=(time.time_ns(), time.time_ns() + 10**9))  # the file rewritten: read again
    assert score_run(ref_file, SYSTEM, folders[2])["rdf_error_pct_floor"] == s["rdf_error_pct_floor"]
    assert computed == [1]
    halves = score_run(default_reference(), SYSTEM, folders[2])
    assert "floor_source" not in halves  # one trajectory: the floor stays half against half
    assert s["rdf_error_pct_floor"] != halves["rdf_error_pct_floor"] and s["rdf_error_pct_floor"] > 0

    with h5py.File(ref_file, "a") as f:  # a group claiming replica 1 under another name
        f.copy(f[f"{SYSTEM}_r1"], "stray")
    with pytest.raises(ReferenceFormatError, match="'stray' says it is a replica of"):
        reference_replicas(ref_file, SYSTEM)
    before = RunFolder(folders[2]).score_json.read_bytes()
    bad = dynamat_cmd("score", "--system", SYSTEM, "--reference", str(ref_file), "--run", str(folders[2]))
    assert_one_line_error(bad, "stray", "_r<k>")
    assert RunFolder(folders[2]).score_json.read_bytes() == before  # the earlier score is kept


def test_a_campaign_rerun_with_fewer_replicas_names_the_ones_left(replicas, tmp_path):
    """--replicas 2 over a set of 4: the first two are kept (final and scored), the other two stay and the
    report would average them in; the plan says so instead of silently reporting n_replicas 4."""
    out = tmp_path / "camp"
    shutil.copytree(replicas[0], out)
    res = campaign("--models", "emt", "--systems", SYSTEM, "--replicas", "2", "--steps", str(STEPS), "--seed",
                   str(SEED), "--out", str(out), "--no-report", timeout=120)
    assert res.returncode == 0, res.stderr
    assert "2 runs (2 skip)" in res.stderr
    assert (f"2 replica run(s) beyond --replicas 2 are left from an earlier set, and the report averages them "
            f"with these: emt/{SYSTEM}_r2, emt/{SYSTEM}_r3") in res.stderr


def test_campaign_replicas_are_jobs_with_seed_plus_k_and_their_own_folders(tmp_path):
    from dynamat.campaign.jobs import read_job, write_job_list
    from dynamat.campaign.spec import CampaignSpec
    from dynamat.errors import DynamatError

    spec = CampaignSpec(("emt",), (SYSTEM,), tmp_path, seed=5, replicas=3)
    jobs = [spec.job("emt", SYSTEM, 100, k) for k in range(3)]
    for i, j in enumerate(jobs):
        j.index = j.task = i
    assert [(j.seed, j.folder, j.run_dir) for j in jobs] == [
        (5 + k, f"{SYSTEM}_r{k}" if k else SYSTEM, RunFolder.of(tmp_path, "emt", SYSTEM, k).path) for k in range(3)]
    path = write_job_list(tmp_path / "jobs.tsv", jobs)
    assert [read_job(path, i) for i in range(3)] == jobs
    assert spec.job("emt", SYSTEM, 100).replica is None  # a single run stays one
    with pytest.raises(DynamatError, match="--replicas"):
        CampaignSpec(("emt",), (SYSTEM,), tmp_path, replicas=0)


def test_ties_with_replicas_use_the_larger_uncertainty_and_say_which():
    """Two models 1.0 apart with a floor of 0.5: apart on the floor alone; with replica standard errors of
    0.8 each (larger than the bootstrap's 0.1) the difference lies within √(0.8² + 0.8²) = 1.13: tied, and
    the note names the replicas. With replica errors of 0.6 (√0.72 = 0.85 < 1.0) they stay apart."""
    from dynamat.report.tables import display_cell, noise_notes

    def rows(rep):
        return [{"model": m, "rdf_error_pct": e, "rdf_error_pct_floor": 0.5, "rdf_error_pct_unc": 0.1,
                 "rdf_error_pct_replica_unc": rep} for m, e in (("a", 5.0), ("b", 6.0))]

    assert noise_notes([{k: v for k, v in r.items() if "replica" not in k} for r in rows(0.8)]) == []
    (note,) = noise_notes(rows(0.8))
    assert note.startswith("E_RDF: a, b lie within") and "(replicas)" in note
    assert noise_notes(rows(0.6)) == []
    assert display_cell(rows(0.8)[0], "rdf_error_pct") == "5 ± 0.1 (replicas ± 0.8)"


def test_an_exploded_replica_is_a_failure_row_and_the_rest_are_averaged(tmp_path):
    from dynamat.report.tables import build_tables, load_results

    vals = {0: 4.0, 1: 6.0, 2: None}
    for k, e in vals.items():
        d = RunFolder.of(tmp_path, "m", "S", k).path
        d.mkdir(parents=True)
        score = {"model": "m", "system": "S", "status": "completed" if e is not None else "exploded",
                 "replica_index": k, "rdf_error_pct": e, "rdf_error_pct_unc": 0.3 if e else None}
        RunFolder(d).score_json.write_text(json.dumps(score))
    res = load_results(tmp_path)
    done, failed = res.completed, res.failures
    assert len(done) == 1 and done[0]["rdf_error_pct"] == 5.0 and done[0]["n_replicas"] == 2
    assert done[0]["rdf_error_pct_replica_sd"] == pytest.approx(math.sqrt(2.0))  # sd of (4, 6)
    assert done[0]["rdf_error_pct_unc"] == pytest.approx(math.sqrt(2 * 0.3**2) / 2)
    assert [(r["status"], r["replica_index"]) for r in failed] == [("exploded", 2)]
    assert any("1 of 3 replicas did not complete" in n for n in res.notes)
    (model,) = build_tables(res)["per_model"].rows
    assert model["n_completed"] == 1 and model["n_failed"] == 1 and model["rdf_error_pct"] == 5.0


def test_replicas_scored_over_different_durations_are_named(tmp_path):
    """Replica 0 extended alone (`dynamat run --steps` on its folder): the report still averages the set,
    and says that the replicas were compared over different durations."""
    from dynamat.report.tables import load_results

    for k, span in enumerate((2000.0, 1000.0, 1000.0)):
        d = RunFolder.of(tmp_path, "m", "S", k).path
        d.mkdir(parents=True)
        RunFolder(d).score_json.write_text(json.dumps({"model": "m", "system": "S", "status": "completed",
                                                       "replica_index": k, "rdf_error_pct": 1.0 + k,
                                                       "matched_duration_fs": span}))
    res = load_results(tmp_path)
    assert res.completed[0]["n_replicas"] == 3
    assert any(n.startswith("m/S: its replicas were scored over 1000 to 2000 fs") for n in res.notes), res.notes
    RunFolder.of(tmp_path, "m", "S", 0).score_json.write_text(json.dumps(
        {"model": "m", "system": "S", "status": "completed", "replica_index": 0, "rdf_error_pct": 1.0,
         "matched_duration_fs": 1000.0}))
    assert not any("scored over" in n for n in load_results(tmp_path).notes)


def test_npt_cell_errors_are_averaged_over_replicas_too():
    """The NPT cell errors of replica scores are aggregated like the paper's keys (mean and spread), not
    replica 0's value passed on; fixed-cell scores gain no NPT key."""
    from dynamat.scoring.replicas import aggregate_replicas

    base = {"model": "emt", "system": "s", "status": "completed"}
    npt = [dict(base, replica_index=k, volume_error_pct=v, volume_error_pct_unc=0.3) for k, v in enumerate((1.0, 3.0))]
    agg = aggregate_replicas(npt)
    assert agg["volume_error_pct"] == 2.0
    assert abs(agg["volume_error_pct_replica_sd"] - 2.0 ** 0.5) < 1e-12
    assert abs(agg["volume_error_pct_unc"] - (2 * 0.09) ** 0.5 / 2) < 1e-12
    nvt = aggregate_replicas([dict(base, replica_index=k, rdf_error_pct=1.0 + k) for k in range(2)])
    assert "volume_error_pct" not in nvt and nvt["rdf_error_pct"] == 1.5


def test_a_replica_rows_combined_errors_are_eq_11_12_of_its_mean_errors():
    """Ē_RPV and L_RPV of a (model, system) with replicas are Eq. 11-12 of the mean E_RDF, E_P, E_VDOS
    (as a model row's are of its means), not the mean of per-replica values: the Lehmer mean is not
    linear, so the two differ (37.67 % against 39.67 % here). Floors the same way."""
    from dynamat.scoring.replicas import aggregate_replicas

    errs, floors = ((10.0, 60.0, 5.0), (20.0, 40.0, 15.0)), ((1.0, 8.0, 2.0), (3.0, 4.0, 2.0))
    keys = ("rdf_error_pct", "pressure_hist_error_pct", "vdos_error_pct")
    scores = []
    for k, (e, f) in enumerate(zip(errs, floors)):
        row = {"model": "m", "system": "s", "status": "completed", "replica_index": k}
        for key, v, fl in zip(keys, e, f):
            row.update({key: v, f"{key}_floor": fl})
        row.update(E_RPV_pct=sum(e) / 3, L_RPV_pct=sum(x * x for x in e) / sum(e),
                   E_RPV_pct_floor=sum(f) / 3, L_RPV_pct_floor=sum(x * x for x in f) / sum(f))
        scores.append(row)
    agg = aggregate_replicas(scores)
    mean, mean_floor = (15.0, 50.0, 10.0), (2.0, 6.0, 2.0)
    assert agg["E_RPV_pct"] == pytest.approx(25.0)
    assert agg["L_RPV_pct"] == pytest.approx((225 + 2500 + 100) / 75)  # 37.67; per-replica mean: 39.67
    assert agg["L_RPV_pct"] != pytest.approx((scores[0]["L_RPV_pct"] + scores[1]["L_RPV_pct"]) / 2)
    assert agg["E_RPV_pct_floor"] == pytest.approx(sum(mean_floor) / 3)
    assert agg["L_RPV_pct_floor"] == pytest.approx(sum(x * x for x in mean_floor) / sum(mean_floor))
    assert [agg[k] for k in keys] == list(mean)
    assert agg["L_RPV_pct_replica_sd"] == pytest.approx(abs(scores[0]["L_RPV_pct"] - scores[1]["L_RPV_pct"]) / 2 ** 0.5)


def test_a_kept_replica_must_be_the_run_asked_for(tmp_path):
    """A completed replica is kept only with the seed and ensemble it would get now: a rerun with another
    --seed made replica k+1 repeat replica k's seed (two identical 'independent' trajectories), and one with
    another ensemble averaged NVT and NPT replicas in one row. Both are one line, and nothing changes."""
    base = ("run", "--model", "emt", "--system", SYSTEM, "--steps", "20", "--out", str(tmp_path))
    assert dynamat_cmd(*base, "--replicas", "2", "--seed", "11").returncode == 0
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    res = dynamat_cmd(*base, "--replicas", "3", "--seed", "10")
    assert_one_line_error(res, "seed 11, not 10", "leave --seed out")
    res = dynamat_cmd(*base, "--replicas", "3", "--ensemble", "npt", "--pressure-GPa", "0")
    assert_one_line_error(res, "--ensemble nvt", "--ensemble npt --pressure-GPa 0")
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    assert dynamat_cmd(*base, "--replicas", "3").returncode == 0
    seeds = [json.loads((tmp_path / "emt" / name / "run.json").read_text())["seed"]
             for name in (SYSTEM, f"{SYSTEM}_r1", f"{SYSTEM}_r2")]
    assert seeds == [11, 12, 13]


def test_overwriting_a_smaller_set_refuses_to_leave_the_larger_sets_replicas(tmp_path):
    """`--overwrite --replicas 2` over a set of 3 (or a single `--overwrite` run over a set) would leave
    replica 2 of the old set beside the new runs, and the report would average it with them: refused in
    one line, nothing removed; `--replicas 3 --overwrite` redoes the whole set."""
    base = ("run", "--model", "emt", "--system", SYSTEM, "--steps", "20", "--out", str(tmp_path))
    assert dynamat_cmd(*base, "--replicas", "3", "--seed", "5").returncode == 0
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    res = dynamat_cmd(*base, "--replicas", "2", "--overwrite")
    assert_one_line_error(res, f"{SYSTEM}_r2 of an earlier set of 3 replicas", "--replicas 3")
    res = dynamat_cmd(*base, "--overwrite")
    assert_one_line_error(res, f"{SYSTEM}_r1, {SYSTEM}_r2 of an earlier set of 3 replicas", "move them away")
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    (tmp_path / "emt" / f"{SYSTEM}_r7").mkdir()  # not a run of this set: never counted
    res = dynamat_cmd(*base, "--replicas", "3", "--overwrite", "--seed", "8")
    assert res.returncode == 0, res.stderr
    assert [json.loads((tmp_path / "emt" / n / "run.json").read_text())["seed"]
            for n in (SYSTEM, f"{SYSTEM}_r1", f"{SYSTEM}_r2")] == [8, 9, 10]


def test_two_identical_replica_commands_at_once_share_the_set(tmp_path):
    """The same `--replicas 3` command started twice at once (two shells, a resubmitted job): each run folder
    is run by one of them, and the other, finding it completed at the asked length once free, keeps it, so
    both commands succeed with the set run once (it said 'holds a completed run' and exited 2)."""
    import subprocess

    from conftest import BIN

    cmd = [str(BIN / "dynamat"), "run", "--model", "emt", "--system", SYSTEM, "--steps", "300", "--replicas", "3",
           "--seed", "21", "--out", str(tmp_path)]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    out1, err1 = first.communicate(timeout=300)
    assert first.returncode == 0 and second.returncode == 0, err1 + second.stderr
    assert "kept:" in err1 + second.stderr  # at least one run was found done by the other command
    recs = [json.loads((tmp_path / "emt" / n / "run.json").read_text()) for n in (SYSTEM, f"{SYSTEM}_r1", f"{SYSTEM}_r2")]
    assert [r["seed"] for r in recs] == [21, 22, 23] and all(r["status"] == "completed" for r in recs)
    assert all(len(r["restarts"]) == 0 and r["steps_done"] == 300 for r in recs)
    for n in (SYSTEM, f"{SYSTEM}_r1", f"{SYSTEM}_r2"):  # each run once: one start line in all the output
        assert (err1 + second.stderr).count(f"-> {tmp_path / 'emt' / n}\n") >= 1
        assert sum(f"running: emt on {n}, " in e for e in (err1, second.stderr)) == 1, n


@pytest.mark.parametrize("how", [("--beads", "2"), ("--engine", "ase")])
def test_a_finished_path_integral_or_ase_engine_set_is_kept_on_rerun(tmp_path, how):
    """A kept replica is compared with what the set runs: its beads and PILE-L thermostat, or ASE's
    Nose-Hoover chain. Compared with a classical i-PI run instead, the rerun of a finished set was refused."""
    args = ("run", "--model", "emt", "--system", SYSTEM, "--steps", "20", "--replicas", "2", "--seed", "3",
            "--out", str(tmp_path), *how)
    assert dynamat_cmd(*args).returncode == 0
    res = dynamat_cmd(*args)
    assert res.returncode == 0, res.stderr
    assert res.stderr.count("kept:") == 2


def test_a_run_json_from_before_the_thermostat_was_recorded_as_run_still_resumes():
    """run.json written before it recorded what ran said svr for a path-integral (PILE-L) run and for the ASE
    engine's Nose-Hoover chain: such a folder still resumes with the same arguments."""
    from dynamat.catalogue import get_system
    from dynamat.errors import DynamatError
    from dynamat.runner import check_resume_settings, run_settings

    entry = get_system(SYSTEM)
    for engine, nbeads in (("ipi", 4), ("ase", 1)):
        settings = run_settings(entry, engine, nbeads, 100, 3)[1]
        old = {"protocol": {**{k: getattr(settings, k) for k in ("temperature_K", "timestep_fs", "tau_fs",
                                                                  "stride", "nbeads")},
                            "thermostat": "svr", "engine": engine}}
        check_resume_settings(Path("x"), old, settings, engine)  # no refusal
        with pytest.raises(DynamatError, match="--tau-fs"):
            check_resume_settings(Path("x"), {**old, "protocol": {**old["protocol"], "tau_fs": 1.0}}, settings, engine)


def test_a_finished_set_or_run_is_kept_only_for_the_model_that_made_it(tmp_path):
    """A rerun keeps a finished replica, or a completed single run of the asked length, as it is only where
    the same model is served: a float32 EMT asked of float64 EMT runs is refused in one line, as a resume
    of them is. It kept the old model's runs, and a report then scored them under the new options."""
    base = ("run", "--model", "emt", "--system", SYSTEM, "--steps", "20", "--seed", "5")
    assert dynamat_cmd(*base, "--replicas", "2", "--out", str(tmp_path / "set")).returncode == 0
    assert dynamat_cmd(*base, "--out", str(tmp_path / "one")).returncode == 0
    folders = [tmp_path / "set" / "emt" / SYSTEM, tmp_path / "set" / "emt" / f"{SYSTEM}_r1", tmp_path / "one" / "emt" / SYSTEM]
    before = [(d / "run.json").read_bytes() for d in folders]
    for out, more in (("set", ("--replicas", "2")), ("one", ())):
        res = dynamat_cmd(*base, *more, "--out", str(tmp_path / out), "--driver-arg=--dtype=float32")
        assert_one_line_error(res)
        assert "--dtype float32 would mix two models" in res.stderr, res.stderr
    assert [(d / "run.json").read_bytes() for d in folders] == before

    # the same command again has nothing to do: kept, exit 0, the run's files as they were
    sim = (folders[2] / "simulation.out").read_bytes()
    res = dynamat_cmd(*base, "--out", str(tmp_path / "one"))
    assert res.returncode == 0, res.stderr
    assert f"kept: {folders[2]} is completed at the asked length (seed 5)" in res.stderr
    assert "running:" not in res.stderr
    assert (folders[2] / "simulation.out").read_bytes() == sim and (folders[2] / "run.json").read_bytes() == before[2]
    res = dynamat_cmd(*base[:-2], "--seed", "6", "--out", str(tmp_path / "one"))  # another seed: refused, as before
    assert_one_line_error(res)
    assert "--seed 5" in res.stderr


def test_a_finished_run_or_set_is_kept_only_from_the_asked_start_frame(tmp_path):
    """A completed run (or finished replica) of the asked length is kept only where it started from the
    reference frame asked now: a rerun with another --start-frame printed 'kept:' and exit 0 for the run
    that started from frame 0, as if it were the one asked."""
    base = ("run", "--model", "emt", "--system", SYSTEM, "--steps", "20", "--seed", "5")
    assert dynamat_cmd(*base, "--out", str(tmp_path / "one")).returncode == 0
    assert dynamat_cmd(*base, "--replicas", "2", "--out", str(tmp_path / "set")).returncode == 0
    folders = [tmp_path / "one" / "emt" / SYSTEM, tmp_path / "set" / "emt" / SYSTEM, tmp_path / "set" / "emt" / f"{SYSTEM}_r1"]
    before = [(d / "run.json").read_bytes() for d in folders]
    for out, more in (("one", ()), ("set", ("--replicas", "2"))):
        res = dynamat_cmd(*base, *more, "--start-frame", "2", "--out", str(tmp_path / out))
        assert_one_line_error(res, "started from reference frame 0 (--start-frame 0), not 2", "--overwrite")
        assert "kept" not in res.stderr, res.stderr
    assert [(d / "run.json").read_bytes() for d in folders] == before
    res = dynamat_cmd(*base, "--start-frame", "0", "--out", str(tmp_path / "one"))  # the frame it started from: kept
    assert res.returncode == 0 and f"kept: {folders[0]}" in res.stderr, res.stderr
    # an extension goes on from the restart file: another --start-frame would be recorded, not run
    res = dynamat_cmd(*base[:-4], "--steps", "40", "--seed", "5", "--start-frame", "2", "--out", str(tmp_path / "one"))
    assert_one_line_error(res, "started from reference frame 0 (--start-frame 0), not 2")
    assert (folders[0] / "run.json").read_bytes() == before[0]
