"""Aggregation of score.json files into tables, external metrics, Matbench export."""

import json
import re

import pytest

from dynamat.report.external import ExternalError, load_external, match_external
from dynamat.report.matbench import md_block, md_yaml
from dynamat.report.tables import (ResultsError, build_tables, load_results, model_table,
                                   tier_median_table, to_csv, to_markdown)


def _score(root, model, system, tier, status="completed", system_class="pure metal", **metrics):
    d = root / model / system
    d.mkdir(parents=True, exist_ok=True)
    s = {"model": model, "system": system, "system_class": system_class, "tier": tier,
         "n_params": 1000 * (tier or 9), "status": status, **metrics}
    (d / "score.json").write_text(json.dumps(s))


def test_nvt_npt_and_path_integral_runs_of_one_model_are_never_averaged(tmp_path):
    """The same model and system run classically (NVT), under a barostat, with 4 beads and with ASE's thermostat
    engine: four entries, each its own mean, as a dispersion-corrected model is (they were one model with a
    4-run mean over one system)."""
    from dynamat.layout import RunFolder

    for folder, extra, err in (("nvt", {}, 2.0), ("npt", {"ensemble": "npt"}, 4.0), ("pi", {"nbeads": 4}, 9.0),
                               ("ase", {"engine": "ase"}, 3.0)):
        d = RunFolder.of(tmp_path / folder, "emt", "Cu").path
        d.mkdir(parents=True)
        RunFolder(d).score_json.write_text(json.dumps({"model": "emt", "system": "Cu", "status": "completed",
                                                       "rdf_error_pct": err, **extra}))
    res = load_results([tmp_path / f for f in ("nvt", "npt", "pi", "ase")])
    rows = {r["model"]: r for r in model_table(res).rows}
    assert {m: (r["n_completed"], r["rdf_error_pct"]) for m, r in rows.items()} == {
        "emt": (1, 2.0), "emt+NPT": (1, 4.0), "emt+PI4": (1, 9.0), "emt+ASE": (1, 3.0)}
    assert not any("duplicate" in n for n in res.notes)
    # an NPT run that exploded before it could be scored fails in the NPT entry, not in the NVT one
    d = RunFolder.of(tmp_path / "npt", "emt", "Cu2").path
    d.mkdir(parents=True)
    RunFolder(d).run_json.write_text(json.dumps({"model": "emt", "system": "Cu2", "status": "exploded",
                                                 "error": "MD exploded", "protocol": {"ensemble": "npt"},
                                                 "started": "", "steps_requested": 10}))
    res = load_results([tmp_path / f for f in ("nvt", "npt", "pi")])
    assert [(r["model"], r["status"]) for r in res.failures] == [("emt+NPT", "exploded")]


def test_a_campaigns_failure_score_lands_in_its_runs_entry(tmp_path):
    """A campaign writes a score for a run that exploded: it carries the run's ensemble, beads and dispersion
    (it had none, so an NPT explosion counted against the model's NVT entry)."""
    from dynamat.campaign.jobs import Job, _failure_score
    from dynamat.layout import RunFolder

    job = Job(0, "emt", "Cu", "ref.h5", str(tmp_path), 100)
    rec = {"status": "exploded", "protocol": {"ensemble": "npt", "nbeads": 1, "engine": "ipi"},
           "dispersion": "d3-bj(pbe)", "tier": "test"}
    d = RunFolder.of(tmp_path, "emt", "Cu").path
    d.mkdir(parents=True)
    RunFolder(d).score_json.write_text(json.dumps(_failure_score(job, rec, "exploded", "MD exploded")))
    assert [(r["model"], r["status"], r["tier"]) for r in load_results(tmp_path).failures] == [
        ("emt+D3+NPT", "exploded", "test")]


def test_two_runs_of_one_model_on_one_system_are_refused_naming_both(tmp_path):
    """Two run folders of emt on Cu (another --out, another seed, not a replica set): both rows were kept and
    the model's mean counted Cu twice (a note said so). Refused in one line naming both; replicas pass."""
    from dynamat.layout import RunFolder

    for folder, err in (("a", 3.66), ("b", 8.54)):
        d = RunFolder.of(tmp_path / folder, "emt", "Cu").path
        d.mkdir(parents=True)
        RunFolder(d).score_json.write_text(json.dumps({"model": "emt", "system": "Cu", "status": "completed",
                                                       "rdf_error_pct": err}))
    with pytest.raises(ResultsError) as err:
        load_results([tmp_path / "a", tmp_path / "b"])
    assert str(err.value).startswith(f"two results for emt/Cu: {tmp_path / 'a' / 'emt' / 'Cu' / 'score.json'} and "
                                     f"{tmp_path / 'b' / 'emt' / 'Cu' / 'score.json'}; a report counts")
    assert model_table(load_results(tmp_path / "a")).rows[0]["rdf_error_pct"] == 3.66


def test_the_scorers_notes_are_said_once_each_with_the_runs_they_are_said_of(tmp_path):
    """A score's notes (score.json ``notes``) are the report's: one line per note naming its runs (the model's
    entry, a replica's index), the ``incomplete:`` ones left to the unfinished-runs line; runs without notes
    are named in none."""
    hot = "temperature: the frames' kinetic temperature is 450 K against 300 K (equipartition)"
    _score(tmp_path, "m1", "Cu", 1, rdf_error_pct=1.0, notes=[hot, "pressure: the reference holds no stress"])
    _score(tmp_path, "m2", "Cu", 1, rdf_error_pct=1.0, ensemble="npt", notes=["pressure:  the reference holds\nno stress"])
    _score(tmp_path, "m3", "Cu", 1, rdf_error_pct=1.0, status="incomplete", notes=["incomplete: the frames end at step 40 of 80"])
    _score(tmp_path, "m4", "Cu", 1, rdf_error_pct=1.0, notes=[])
    _score(tmp_path, "m4", "Cu3Au", 1, rdf_error_pct=1.0)
    res = load_results(tmp_path)
    said = [n for n in res.notes if "temperature:" in n or "pressure:" in n or "incomplete:" in n]
    assert said == [f"m1/Cu: {hot}", "m1/Cu, m2+NPT/Cu: pressure: the reference holds no stress"]
    assert res.noted == ["m1/Cu", "m2+NPT/Cu"]


def test_notes_that_differ_only_in_their_numbers_are_one_line_with_each_runs_numbers(tmp_path):
    """At scale (15 models x 17 systems) each unstable run's temperature note differs in its numbers: one line per
    kind, the numbers that differ after each run's name and as … in the text, the ones all share kept in it."""
    def hot(t_kin, target=300):
        return (f"temperature: the frames' kinetic temperature is {t_kin} K against {target} K (equipartition), at "
                "the frame interval i-PI wrote: its errors (Eqs. 7-9) compare another state")
    held = "pressure: the run was held at {} GPa, the reference at 0 GPa: its volume errors compare two states"
    _score(tmp_path, "m1", "Cu", 1, rdf_error_pct=1.0, notes=[hot(450), held.format(-0.5)])
    _score(tmp_path, "m2", "Cu", 1, rdf_error_pct=1.0, notes=[hot("1.234e+04")])
    _score(tmp_path, "m2", "Pt", 1, rdf_error_pct=1.0, notes=[hot(450), held.format(-0.5)])
    _score(tmp_path, "m3", "Cu", 1, rdf_error_pct=1.0, notes=[hot(250, target=200)])
    said = [n for n in load_results(tmp_path).notes if "temperature:" in n or "pressure:" in n]
    assert said == [
        "m1/Cu (450 K, 300 K), m2/Cu (1.234e+04 K, 300 K), m2/Pt (450 K, 300 K), m3/Cu (250 K, 200 K): "
        + hot("…", "…").replace("… K", "…"),
        "m1/Cu, m2/Pt: " + held.format(-0.5),
    ]
    # numbers all runs share stay in the text
    _score(tmp_path, "m3", "Cu", 1, rdf_error_pct=1.0, notes=[hot(460)])
    said = [n for n in load_results(tmp_path).notes if "temperature:" in n]
    assert said == ["m1/Cu (450 K), m2/Cu (1.234e+04 K), m2/Pt (450 K), m3/Cu (460 K): "
                    + hot("…").replace("… K", "…")]


def test_means_skip_null_pressure_and_exclude_exploded_runs(tmp_path):
    _score(tmp_path, "m", "Cu", 1, force_rmse_eV_per_A=0.10, pressure_mae_GPa=2.0,
           rdf_error_pct=10.0, rdf_error_pct_unc=3.0)
    _score(tmp_path, "m", "naph", 1, system_class="molecular crystal", force_rmse_eV_per_A=0.30,
           pressure_mae_GPa=None, pressure_hist_error_pct=None, rdf_error_pct=20.0,
           rdf_error_pct_unc=4.0)
    _score(tmp_path, "m", "Pt3Co", 1, status="exploded", system_class="alloy",
           force_rmse_eV_per_A=1e6, pressure_mae_GPa=1000.0, rdf_error_pct=100.0)
    res = load_results(tmp_path)
    row = model_table(res).rows[0]
    assert row["pressure_mae_GPa"] == pytest.approx(2.0)      # null skipped, not zero
    assert row["pressure_mae_GPa_n"] == 1
    assert row["force_rmse_eV_per_A"] == pytest.approx(0.2)   # exploded run excluded
    assert row["n_failed"] == 1 and row["n_completed"] == 2
    assert "Pt3Co:exploded" in row["failed_runs"]
    # sqrt(3^2 + 4^2) / 2
    assert row["rdf_error_pct"] == pytest.approx(15.0)
    assert row["rdf_error_pct_unc"] == pytest.approx(2.5)
    # pressure-histogram error never given -> composite undefined, not computed from zeros
    assert row["pressure_hist_error_pct"] is None and row["E_RPV_pct"] is None
    assert any("exploded" in n for n in res.notes)
    assert "excluded" in to_markdown(model_table(res))


def test_uncertainty_dropped_when_some_systems_lack_it(tmp_path):
    _score(tmp_path, "m", "a", 1, vdos_error_pct=10.0, vdos_error_pct_unc=1.0, vdos_error_pct_floor=2.0)
    _score(tmp_path, "m", "b", 1, vdos_error_pct=30.0, vdos_error_pct_floor=4.0)
    row = model_table(load_results(tmp_path)).rows[0]
    assert row["vdos_error_pct"] == pytest.approx(20.0)
    assert row["vdos_error_pct_unc"] is None
    assert row["vdos_error_pct_floor"] == pytest.approx(3.0)


def test_model_composites_are_eq11_12_of_the_observable_means(tmp_path):
    """Moved from the deleted scoring.core.aggregate: model-level E_RPV/L_RPV combine each observable's
    mean over the systems where it exists; the per-system composites' mean is kept beside them."""
    _score(tmp_path, "m", "a", 1, rdf_error_pct=2.0, pressure_hist_error_pct=60.0, vdos_error_pct=20.0,
           pressure_mae_GPa=1.0, rdf_error_pct_unc=0.3, pressure_hist_error_pct_unc=1.0,
           vdos_error_pct_unc=2.0, E_RPV_pct=94 / 3, velocity_source="stored")
    _score(tmp_path, "m", "b", 1, rdf_error_pct=4.0, pressure_hist_error_pct=None, vdos_error_pct=30.0,
           pressure_mae_GPa=None, rdf_error_pct_unc=0.4, vdos_error_pct_unc=4.0, E_RPV_pct=None)
    row = model_table(load_results(tmp_path)).rows[0]
    assert row["rdf_error_pct"] == 3.0 and row["rdf_error_pct_n"] == 2
    assert row["pressure_mae_GPa"] == 1.0 and row["pressure_mae_GPa_n"] == 1
    assert row["rdf_error_pct_unc"] == pytest.approx(0.25)  # sqrt(0.09 + 0.16) / 2
    assert row["E_RPV_pct"] == pytest.approx((3.0 + 60.0 + 25.0) / 3)
    assert row["L_RPV_pct"] == pytest.approx((9.0 + 3600.0 + 625.0) / 88.0)
    assert row["E_RPV_pct_unc"] == pytest.approx((0.25 ** 2 + 1.0 + 5.0) ** 0.5 / 3)
    assert row["E_RPV_pct_mean_over_systems"] == pytest.approx(94 / 3)
    assert row["E_RPV_pct_mean_over_systems_n"] == 1 and row["E_RPV_pct_n"] == 1


def test_tier_medians_against_hand_computation(tmp_path):
    # model means of force RMSE: a=0.2, b=0.4, c=0.9 (tier 1); d=0.5, e=0.7 (tier 2)
    for model, tier, vals in [("a", 1, [0.1, 0.3]), ("b", 1, [0.4, 0.4]), ("c", 1, [0.8, 1.0]),
                              ("d", 2, [0.5, 0.5]), ("e", 2, [0.6, 0.8])]:
        for i, v in enumerate(vals):
            _score(tmp_path, model, f"s{i}", tier, force_rmse_eV_per_A=v)
    _score(tmp_path, "f", "s0", 2, status="failed", force_rmse_eV_per_A=50.0)  # all-failed model
    med = tier_median_table(model_table(load_results(tmp_path)))
    by_tier = {r["tier"]: r for r in med.rows}
    assert by_tier[1]["force_rmse_eV_per_A"] == pytest.approx(0.4)
    assert by_tier[2]["force_rmse_eV_per_A"] == pytest.approx(0.6)  # f has no mean: not a 0
    assert by_tier[2]["force_rmse_eV_per_A_n"] == 2 and by_tier[2]["n_models"] == 3


def test_model_order_tier_then_params_and_class_tables(tmp_path):
    from dynamat.report import write_synthetic_results

    res = load_results(write_synthetic_results(tmp_path / "r", curves=False))
    tables = build_tables(res)
    assert [r["model"] for r in tables["per_model"].rows] == [
        "CHGNet", "MACE-MP-0", "orb-v2", "GRACE-2L-OAM", "PET-OAM-XL", "UMA-S-P1"]
    cls = {(r["system_class"], r["model"]): r for r in tables["per_class_model"].rows}
    assert cls[("molecular crystal", "CHGNet")]["pressure_mae_GPa"] is None
    assert cls[("alloy", "UMA-S-P1")]["n_failed"] == 1
    assert cls[("alloy", "UMA-S-P1")]["rdf_error_pct"] is None  # only run exploded
    csv_text = to_csv(tables["per_model_system"])
    assert csv_text.splitlines()[0].startswith("model,system,system_class")
    assert len(csv_text.splitlines()) == 1 + 18


def test_bad_results_dirs(tmp_path):
    with pytest.raises(ResultsError, match="not found"):
        load_results(tmp_path / "nope")
    with pytest.raises(ResultsError, match="score.json"):
        load_results(tmp_path)


def test_bundled_external_csv_is_cited():
    rows = load_external()
    assert len(rows) == 15
    for r in rows:
        if r["f1"] is not None or r["kappa_srme"] is not None:
            assert re.search(r"@[0-9a-f]{40}", r["source"]), r   # pinned commit
            assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", r["date"])
        else:
            assert r["source"].startswith("blank:")
    by = {r["model"]: r for r in rows}
    assert by["UMA-M-P1"]["f1"] is None and by["MACE-MH-1-OMAT"]["kappa_srme"] is None
    assert 0 < by["CHGNet"]["f1"] < by["PET-OAM-XL"]["f1"] <= 1
    m = match_external(["chgnet", "mace_mp_0", "orb-v3", "unknown-model"], rows)
    assert m["chgnet"]["model"] == "CHGNet" and m["mace_mp_0"]["model"] == "MACE-MP-0"
    assert m["orb-v3"]["model"] == "orb-v3-conservative-inf-mpa"
    assert "unknown-model" not in m


def test_external_csv_errors(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text("name,f1\nA,0.5\n")
    with pytest.raises(ExternalError, match="missing column"):
        load_external(p)
    p.write_text("model,f1,kappa_srme,source,date\nA,high,,me,\n")
    with pytest.raises(ExternalError, match="not a number"):
        load_external(p)
    with pytest.raises(ExternalError, match="not found"):
        load_external(tmp_path / "missing.csv")


def test_matbench_md_block_shape(tmp_path):
    """The export carries the values computed with Matbench-discovery's definitions (score.json
    ``matbench`` / ``matbench_singlepoint``), never dynamat's Eq. 1-12 numbers under their names."""
    _score(tmp_path, "m", "a", 1, energy_rmse_eV_per_atom=0.02, force_rmse_eV_per_A=0.1,
           rdf_error_pct=5.0, vdos_error_pct=20.0, pressure_mae_GPa=1.0, pressure_hist_error_pct=30.0,
           matbench={"rdf_error": 4.0, "adf_error": 2.0, "vdos_error": 10.0, "pressure_mae": 1.0,
                     "pressure_wasserstein": 0.5, "pressure_error": 40.0},
           matbench_singlepoint={"energy_rmse": 0.01, "force_rmse": 0.1 / 3**0.5})
    _score(tmp_path, "m", "b", 1, energy_rmse_eV_per_atom=None, force_rmse_eV_per_A=0.3,
           rdf_error_pct=7.0, vdos_error_pct=30.0, E_RPV_pct=12.0,
           matbench={"rdf_error": 6.0, "adf_error": 4.0, "vdos_error": 20.0, "pressure_mae": None,
                     "pressure_wasserstein": None, "pressure_error": None},
           matbench_singlepoint={"force_rmse": 0.3 / 3**0.5})
    _score(tmp_path, "z", "a", 2, status="exploded", rdf_error_pct=100.0)
    rows = {r["model"]: r for r in model_table(load_results(tmp_path)).rows}
    block = md_block(rows["m"])
    # energy RMSE missing for one system -> omitted, as matbench's calc_md_metrics does; the force
    # RMSE is the per-component one (Eq. 2 / sqrt 3), means skip systems without stress
    assert block == pytest.approx({"force_rmse": 1000 * 0.2 / 3**0.5, "rdf_error": 5.0, "adf_error": 3.0,
                                   "vdos_error": 15.0, "pressure_mae": 1.0, "pressure_wasserstein": 0.5,
                                   "pressure_error": 40.0, "n_systems": 2}, abs=1e-4)
    assert md_block(rows["z"]) == "not available"
    text = md_yaml(rows["m"])
    assert "metrics:\n  md:\n    force_rmse: 115.4701 # meV/Å (per component)\n" in text
    assert "E_RPV" not in text and "energy_rmse:" not in text
