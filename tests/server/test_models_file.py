"""``--models-file``: a user's models by name, one TOML table each. ASE's Lennard-Jones with its
options runs in a local campaign beside EMT; its name, label, tier, size and training set reach run.json,
score.json, the report tables (the training set: the per-model one) and the Pareto figure; the options reach the calculator (the
potential energy i-PI logs at step 0 is ASE's LJ with them). A bad table is one line naming it.
The same campaign runs the raw specs ``ase.calculators.emt:EMT`` and ``ase.calculators.lj:LennardJones``
with ``--model-option MODEL=KEY=VALUE``: same seed, same potential, so the same trajectory and scores
as ``emt`` and the table ``my-lj``, under their own folders (``MODULE@CALLABLE``) and table rows."""

import json
import textwrap

import pytest
from ase.calculators.lj import LennardJones
from ase.io import read

from conftest import assert_one_line_error, dynamat_cmd
from dynamat.errors import DynamatError
from dynamat.models_file import read_models_file

SYSTEM = "bulkCu_300K-demo_EMT"
LJ = dict(sigma=2.3, epsilon=0.4, rc=6.0)
EMT_SPEC, LJ_SPEC = "ase.calculators.emt:EMT", "ase.calculators.lj:LennardJones"
MODELS = textwrap.dedent("""\
    [my-lj]
    calculator = "ase.calculators.lj:LennardJones"
    options = {sigma = 2.3, epsilon = 0.4, rc = 6.0}
    label = "LJ (fitted)"
    tier = 5
    n_params = 2
    training_set = "none: a test"
""")


def test_table_becomes_the_drivers_spec_options_and_facts(tmp_path):
    (tmp_path / "m.toml").write_text(MODELS + '\n[ckpt]\ncalculator = "pkg.mod:make"\n'
                                     'options = {checkpoint = "path:w/best.pt", fast = true, n = 3}\n'
                                     'dispersion = "d3-bj(r2scan)"\ndriver_cmd = "/envs/x/bin/dynamat-driver"\n')
    entries = read_models_file(tmp_path / "m.toml")
    assert entries["my-lj"].calculator == "ase.calculators.lj:LennardJones"
    assert entries["my-lj"].driver_args() == ("--option=sigma=2.3", "--option=epsilon=0.4", "--option=rc=6.0",
                                              "--label=LJ (fitted)", "--tier=5", "--n-params=2",
                                              "--training-set=none: a test")
    # a path option is the models file's folder's, not the run folder's the driver works in
    assert entries["ckpt"].driver_args() == (f"--option=checkpoint=path:{tmp_path / 'w' / 'best.pt'}",
                                             "--option=fast=true", "--option=n=3", "--label=ckpt",
                                             "--dispersion=d3-bj", "--dispersion-functional=r2scan")
    assert entries["ckpt"].driver_cmd == "/envs/x/bin/dynamat-driver"


@pytest.mark.parametrize("text, expected", [
    ('["../x"]\ncalculator = "a:b"\n', "cannot be used as a folder name"),
    ('[emt]\ncalculator = "a:b"\n', "name of a registered model"),
    ('[m]\ncalculator = "a:b"\nlabl = "x"\n', "unknown key(s) labl"),
    ('[m]\ncalculator = "os.system"\n', "calculator must be"),
    ('[m]\ncalculator = "a:b"\nn_params = -1\n', "n_params must be a non-negative integer"),
    ('[m]\ncalculator = "a:b"\ntier = [1]\n', "tier must be"),
    ('[m]\ncalculator = "a:b"\noptions = {x = [1, 2]}\n', "option x must be"),
    ('[m]\ncalculator = "a:b"\noptions = {x = nan}\n', "not a finite number"),
    ('[m]\ncalculator = "a:b"\ndispersion = "d4"\n', "dispersion must be"),
    ('[m]\ncalculator = "a:b"\nlabel = "two\\nlines"\n', "label must be one line"),
    ('m = 3\n', "must be a table"),
    ('[m\n', "not valid TOML"),
    ('', "names no model"),
])
def test_bad_table_is_one_line_naming_it(tmp_path, text, expected):
    (tmp_path / "m.toml").write_text(text)
    with pytest.raises(DynamatError, match=expected.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        read_models_file(tmp_path / "m.toml")


def test_cli_refuses_a_bad_models_file_in_one_line_writing_nothing(tmp_path):
    (tmp_path / "m.toml").write_text('[m]\ncalculator = "a:b"\noptions = 3\n')
    out = tmp_path / "out"
    res = dynamat_cmd("run", "--model", "m", "--models-file", str(tmp_path / "m.toml"), "--system", SYSTEM,
                      "--steps", "10", "--out", str(out))
    assert_one_line_error(res, "[m]: options must be a table")
    assert not out.exists()
    (tmp_path / "d.toml").write_text(MODELS + 'dispersion = "d3-bj"\n')
    res = dynamat_cmd("run", "--model", "my-lj", "--models-file", str(tmp_path / "d.toml"), "--dispersion", "d3-bj",
                      "--system", SYSTEM, "--steps", "10", "--out", str(out))
    assert_one_line_error(res, "drop --dispersion")
    assert not out.exists()


@pytest.fixture(scope="module")
def campaign_out(tmp_path_factory):
    root = tmp_path_factory.mktemp("models_file")
    (root / "models.toml").write_text(MODELS)
    out = root / "camp"
    spec_options = [a for k, v in LJ.items() for a in ("--model-option", f"{LJ_SPEC}={k}={v}")]
    res = dynamat_cmd("campaign", "--models", f"emt,my-lj,{EMT_SPEC},{LJ_SPEC}", "--models-file",
                      str(root / "models.toml"), *spec_options, "--systems", SYSTEM, "--executor", "local", "--jobs", "2", "--steps", "100", "--out", str(out),
                      timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return out


def test_models_file_model_runs_in_a_campaign_beside_emt(campaign_out):
    run_dir = campaign_out / "my-lj" / SYSTEM
    rec = json.loads((run_dir / "run.json").read_text())
    assert rec["status"] == "completed" and rec["model"] == "my-lj"
    assert (rec["model_label"], rec["tier"], rec["n_params"]) == ("LJ (fitted)", 5, 2)
    served = rec["driver_timings"][0]["model"]
    assert served["spec"] == "ase.calculators.lj:LennardJones" and served["options"] == LJ
    assert served["training_set"] == "none: a test"
    assert rec["model_seconds_per_eval_median"] > 0  # timed like the zoo
    assert rec["training_set"] == "none: a test"  # a run.json field of its own, beside the driver's record
    score = json.loads((run_dir / "score.json").read_text())
    assert (score["model_label"], score["tier"], score["n_params"]) == ("LJ (fitted)", 5, 2)
    assert score["training_set"] == "none: a test"
    # the options reached the calculator: i-PI's step-0 potential is ASE's LJ with them on init.xyz
    atoms = read(run_dir / "init.xyz")
    atoms.calc = LennardJones(**LJ)
    # what a SLURM array task reads: the job list names the driver's spec and passes options and facts
    from dynamat.campaign.jobs import read_job

    manifest = next((campaign_out / "_campaign").glob("jobs-*.tsv"))
    job = next(j for j in (read_job(manifest, i) for i in range(2)) if j.model == "my-lj")
    assert job.driver_model == "ase.calculators.lj:LennardJones" and "--label=LJ (fitted)" in job.driver_args
    e0 = {m: _step0_potential_eV(campaign_out / m / SYSTEM) for m in ("my-lj", "emt")}
    assert e0["my-lj"] == pytest.approx(atoms.get_potential_energy(), rel=1e-7)
    assert abs(e0["my-lj"] - e0["emt"]) > 1.0  # the same start, another potential


@pytest.mark.parametrize("name, spec", [("emt", EMT_SPEC), ("my-lj", LJ_SPEC)])
def test_raw_spec_in_a_campaign_is_the_same_model_as_its_name(campaign_out, name, spec):
    run_dir = campaign_out / spec.replace(":", "@") / SYSTEM
    rec = json.loads((run_dir / "run.json").read_text())
    assert rec["status"] == "completed" and rec["model"] == spec
    # same seed and potential: i-PI wrote the same trajectory, so every score is the same number
    assert (run_dir / "simulation.out").read_text() == (campaign_out / name / SYSTEM / "simulation.out").read_text()
    ours, theirs = (json.loads((d / "score.json").read_text()) for d in (run_dir, campaign_out / name / SYSTEM))
    for key in ("rdf_error_pct", "pressure_mae_GPa", "pressure_hist_error_pct", "vdos_error_pct", "E_RPV_pct",
                "L_RPV_pct", "matbench"):
        assert ours[key] == theirs[key], key
    rows = {r["model"]: r for r in json.loads((campaign_out / "report" / "tables" / "per_model.json").read_text())["rows"]}
    assert rows[spec]["E_RPV_pct"] == rows[name]["E_RPV_pct"]


def test_campaign_refuses_a_model_option_for_a_model_it_does_not_run(tmp_path):
    out = tmp_path / "camp"
    for args, expected in ((["--models", "emt", "--model-option", f"{LJ_SPEC}=sigma=2.3"], "which is not in --models"),
                           (["--models", LJ_SPEC, "--model-option", f"{LJ_SPEC}=2x=1"], "--model-option wants KEY=VALUE"),
                           (["--models", "emt,os:sys:tem"], "neither a model name nor MODULE:CALLABLE")):
        res = dynamat_cmd("campaign", *args, "--systems", SYSTEM, "--steps", "10", "--out", str(out))
        assert_one_line_error(res, expected)
        assert not out.exists()


def _step0_potential_eV(run_dir):
    """potential{electronvolt}, column 5 of i-PI's simulation.out, at step 0."""
    rows = [ln.split() for ln in (run_dir / "simulation.out").read_text().splitlines() if not ln.startswith("#")]
    return float(rows[0][4])


def test_report_tables_and_pareto_figure_name_and_label_it(campaign_out):
    from dynamat.report.figures import make_figures
    from dynamat.report.tables import build_tables, load_results

    tables_dir = campaign_out / "report" / "tables"
    for name in ("per_model", "per_model_system", "per_class_model"):
        rows = {r["model"]: r for r in json.loads((tables_dir / f"{name}.json").read_text())["rows"]}
        assert rows["my-lj"]["model_label"] == "LJ (fitted)" and rows["my-lj"]["tier"] == 5, name
        assert rows["emt"]["model_label"] == "ASE EMT" and rows["emt"]["tier"] == "test", name
    per_model = {r["model"]: r for r in json.loads((tables_dir / "per_model.json").read_text())["rows"]}
    assert per_model["my-lj"]["training_set"] == "none: a test" and per_model["emt"]["training_set"] is None
    assert "training_set" in (tables_dir / "per_model.csv").read_text().splitlines()[0].split(",")
    assert "LJ (fitted)" in (tables_dir / "per_model.md").read_text()
    results = load_results(campaign_out)
    model_rows = build_tables(results)["per_model"].rows
    fig = make_figures(results, model_rows)["fig7_pareto_E_RPV"]
    texts = {t.get_text() for ax in fig.axes for t in ax.texts}
    assert "my-lj: LJ (fitted)" in texts and "emt: ASE EMT" in texts
    legend = {t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()}
    assert "Tier 5" in legend and "test potential" in legend


def test_inputs_prints_the_tables_driver_command(tmp_path):
    import shlex

    (tmp_path / "m.toml").write_text(MODELS + 'driver_cmd = "/envs/lj/bin/dynamat-driver"\n')
    res = dynamat_cmd("inputs", "--system", SYSTEM, "--out", str(tmp_path / "in"), "--steps", "10",
                      "--model", "my-lj", "--models-file", str(tmp_path / "m.toml"))
    assert res.returncode == 0, res.stderr
    driver = shlex.split(res.stdout.strip().splitlines()[-1].rsplit(" & ", 1)[-1])
    assert driver[:9] == ["/envs/lj/bin/dynamat-driver", "--model", "ase.calculators.lj:LennardJones",
                          "-o", "sigma=2.3", "-o", "epsilon=0.4", "-o", "rc=6.0"]
    assert "--label=LJ (fitted)" in driver and "--tier=5" in driver and "--n-params=2" in driver


def test_singlepoint_by_table_name_equals_the_spec_with_its_options(tmp_path):
    (tmp_path / "m.toml").write_text(MODELS)
    out = {}
    for name, args in (("table", ["--model", "my-lj", "--models-file", str(tmp_path / "m.toml")]),
                       ("spec", ["--model", "ase.calculators.lj:LennardJones", "--model-option", "sigma=2.3",
                                 "--model-option", "epsilon=0.4", "--model-option", "rc=6.0"])):
        res = dynamat_cmd("singlepoint", *args, "--system", SYSTEM, "--max-frames", "3",
                          "--energy-reference", "fluctuation", "--json", str(tmp_path / f"{name}.json"))
        assert res.returncode == 0, res.stderr
        out[name] = json.loads((tmp_path / f"{name}.json").read_text())
    for key in ("energy_rmse_eV_per_atom", "force_rmse_eV_per_A"):
        assert out["table"][key] == out["spec"][key], key
    assert (out["table"]["model"], out["table"]["model_label"], out["table"]["tier"]) == ("my-lj", "LJ (fitted)", 5)


def test_one_model_campaign_takes_a_bare_model_option(tmp_path):
    """With one model in --models, --model-option KEY=VALUE is that model's, as `dynamat run` takes it;
    with two, an option must name its model."""
    from dynamat.campaign.spec import CampaignSpec

    named = CampaignSpec.from_options(LJ_SPEC, SYSTEM, model_options=(f"{LJ_SPEC}=sigma=2.3",), out=tmp_path)
    bare = CampaignSpec.from_options(LJ_SPEC, SYSTEM, model_options=("sigma=2.3",), out=tmp_path)
    assert bare == named and "sigma=2.3" in " ".join(bare.driver_args[LJ_SPEC])
    with pytest.raises(DynamatError, match="not in --models"):
        CampaignSpec.from_options(f"emt,{LJ_SPEC}", SYSTEM, model_options=("sigma=2.3",), out=tmp_path)
