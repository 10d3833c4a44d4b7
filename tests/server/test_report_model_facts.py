"""A model's registry facts (paper tier, parameter count, label, family) travel from the driver that
served the run to run.json, score.json and the report: real `dynamat run` folders, not synthetic score
files, give a report with tiers, per-tier medians and per-class-and-tier rows.

CHGNet 0.3.0 (tier 1, 412,525 parameters, weights in its wheel) runs a dozen Langevin steps of a
benzene molecule under the molecular-crystal protocol (one saved frame per step, so a few steps can
be scored); EMT (the registry's "test" potential) runs the bundled demo copper."""

import json
import shutil

import h5py
import numpy as np
import pytest
from ase.build import molecule
from published_layout import oscillating_frames, write_group

from conftest import dynamat_cmd

MOLECULAR = "anthracene_293K"  # the catalogue's molecular-crystal protocol: 0.5 fs, saved every step
METAL = "bulkCu_300K-demo_EMT"
CHGNET = {"tier": 1, "n_params": 412_525, "model_label": "CHGNet 0.3.0", "model_family": "chgnet"}
EMT = {"tier": "test", "n_params": 0, "model_label": "ASE EMT", "model_family": "ase_builtin"}


def _benzene_reference(path):
    """One benzene in a 9 Å box, 200 frames 0.5 fs apart, in the published layout."""
    atoms = molecule("C6H6")
    atoms.cell = np.eye(3) * 9.0
    atoms.center()
    atoms.pbc = True
    n = 200
    pos = oscillating_frames(atoms, 293.0, 0.5, n, (10.0, 90.0), seed=1)
    with h5py.File(path, "w") as f:
        g = f.create_group(MOLECULAR)
        write_group(g, atoms.numbers, atoms.pbc, pos, np.broadcast_to(atoms.cell.array, (n, 3, 3)).copy(),
                    stress=np.random.default_rng(0).normal(scale=2e-4, size=(n, 6)), md_step=np.arange(n))
        g.attrs["dt_fs"] = 0.5
        g.attrs["temperature_kelvin"] = 293.0
    return path


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("facts")
    ref = _benzene_reference(root / "benzene.h5")
    out = root / "results"
    for args in (["--model", "chgnet", "--system", MOLECULAR, "--reference", str(ref), "--steps", "12"],
                 ["--model", "emt", "--system", METAL, "--steps", "150"]):
        res = dynamat_cmd("run", *args, "--out", str(out))
        assert res.returncode == 0, res.stderr
    for model, system, refargs in (("chgnet", MOLECULAR, ["--reference", str(ref)]), ("emt", METAL, [])):
        res = dynamat_cmd("score", "--system", system, *refargs, "--run", str(out / model / system))
        assert res.returncode == 0, res.stderr
    return root, ref, out


@pytest.mark.parametrize("model, system, facts", [("chgnet", MOLECULAR, CHGNET), ("emt", METAL, EMT)])
def test_run_and_score_carry_the_registry_facts(results, model, system, facts):
    _, _, out = results
    run_dir = out / model / system
    timing = json.loads((run_dir / "driver_timing.json").read_text())["model"]
    assert (timing["tier"], timing["n_params"]) == (facts["tier"], facts["n_params"])
    for name in ("run.json", "score.json"):
        rec = json.loads((run_dir / name).read_text())
        assert {k: rec.get(k) for k in facts} == facts, name


def test_report_of_real_runs_shows_the_tiers(results):
    root, _, out = results
    rep = root / "report"
    res = dynamat_cmd("report", str(out), "--out", str(rep), "--no-pdf")
    assert res.returncode == 0, res.stderr
    tables = {name: json.loads((rep / "tables" / f"{name}.json").read_text())["rows"]
              for name in ("per_model", "per_model_system", "tier_medians", "per_class_tier")}
    per_model = {r["model"]: (r["tier"], r["n_params"]) for r in tables["per_model"]}
    assert per_model == {"chgnet": (1, 412_525), "emt": ("test", 0)}
    assert [r["model"] for r in tables["per_model"]] == ["chgnet", "emt"]  # paper tiers first
    assert {r["model"]: r["tier"] for r in tables["per_model_system"]} == {"chgnet": 1, "emt": "test"}
    assert [(r["tier"], r["models"]) for r in tables["tier_medians"]] == [(1, "chgnet"), ("test", "emt")]
    assert {(r["system_class"], r["tier"]) for r in tables["per_class_tier"]} == {
        ("molecular crystal", 1), ("pure metal", "test")}
    page = (rep / "report.html").read_text()
    assert "untiered" not in page


def test_a_run_json_from_before_the_facts_gets_them_from_its_driver_timing(results, tmp_path):
    """run.json files written before it had the fields keep the driver's timing file in
    ``driver_timings``: scoring them again gives score.json the facts."""
    _, _, out = results
    run_dir = tmp_path / "emt" / METAL
    shutil.copytree(out / "emt" / METAL, run_dir)
    rec = json.loads((run_dir / "run.json").read_text())
    for k in EMT:
        rec.pop(k, None)
    (run_dir / "run.json").write_text(json.dumps(rec))
    res = dynamat_cmd("score", "--system", METAL, "--run", str(run_dir))
    assert res.returncode == 0, res.stderr
    score = json.loads((run_dir / "score.json").read_text())
    assert {k: score.get(k) for k in EMT} == EMT
