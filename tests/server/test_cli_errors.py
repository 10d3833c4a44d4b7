"""Bad input: one clear line on stderr, a non-zero exit, no traceback, earlier results untouched."""

import json

import pytest

from conftest import BIN, DEMO, assert_one_line_error, dynamat_cmd


def test_unknown_system(tmp_path):
    assert_one_line_error(dynamat_cmd("inputs", "--system", "bulkXx_1K", "--out", str(tmp_path)), "bulkXx_1K")


def test_missing_reference(tmp_path):
    res = dynamat_cmd("run", "--model", "emt", "--system", "bulkCu_300K-demo_EMT",
                      "--reference", str(tmp_path / "missing.h5"), "--out", str(tmp_path))
    assert_one_line_error(res, "not found")


def test_malformed_hdf5(tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"\x89HDF\r\n garbage" * 50)
    res = dynamat_cmd("score", "--system", "bulkCu_300K-demo_EMT", "--reference", str(bad),
                      "--trajectory", str(bad), "--dt-fs", "1")
    assert_one_line_error(res, "HDF5")


def test_score_needs_a_trajectory():
    assert_one_line_error(dynamat_cmd("score", "--system", "bulkCu_300K-demo_EMT"), "--run")


def test_score_against_a_reference_without_the_runs_system(tmp_path):
    """The line names the run's system (its run.json) and what the reference holds; the score already
    in the folder stays as it was."""
    import h5py

    system, other = "bulkCu_300K-demo_EMT", "bulkCu3Au_500K-demo_EMT"
    res = dynamat_cmd("run", "--model", "emt", "--system", system, "--steps", "100", "--seed", "1",
                      "--out", str(tmp_path / "runs"))
    assert res.returncode == 0, res.stderr
    run = tmp_path / "runs" / "emt" / system
    assert dynamat_cmd("score", "--system", system, "--run", str(run)).returncode == 0
    scored = (run / "score.json").read_bytes()
    only_other = tmp_path / "other.h5"
    with h5py.File(DEMO) as src, h5py.File(only_other, "w") as dst:
        src.copy(other, dst)
    res = dynamat_cmd("score", "--system", system, "--run", str(run), "--reference", str(only_other))
    assert_one_line_error(res, f"the run in {run} is of system {system!r} (its run.json)", "other.h5 does not hold",
                          f"(it holds: {other}); the run was made from ", "demo_reference.h5")
    # another --system: its atoms are not the run's (Cu3Au against Cu); it used to say no more than that
    res = dynamat_cmd("score", "--system", other, "--run", str(run), "--reference", str(only_other))
    assert_one_line_error(res, f"is of system {system!r} (its run.json), whose atoms do not match system {other!r}",
                          f"does not hold {system!r} (it holds: {other})")
    res = dynamat_cmd("score", "--system", other, "--run", str(run))
    assert_one_line_error(res, f"score it with --system {system}")
    assert (run / "score.json").read_bytes() == scored


@pytest.mark.parametrize("cmd", [["inputs", "--out", "x"], ["run", "--model", "emt"]])
def test_missing_required_option(cmd):
    res = dynamat_cmd(*cmd)
    assert res.returncode == 2 and "Traceback" not in res.stderr and "--system" in res.stderr


def test_inputs_written(tmp_path):
    res = dynamat_cmd("inputs", "--system", "bulkCu3Au_500K-demo_EMT", "--reference", str(DEMO),
                      "--out", str(tmp_path), "--steps", "50")
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "input.xml").exists() and (tmp_path / "init.xyz").exists()
    assert "i-pi input.xml & dynamat-driver --model MODEL" in res.stdout


def test_too_short_trajectory(tmp_path):
    from ase.build import bulk
    from ase.io import write

    atoms = bulk("Cu", "fcc", a=3.5898, cubic=True).repeat(2)
    write(tmp_path / "t.extxyz", [atoms] * 3)
    res = dynamat_cmd("score", "--system", "bulkCu_300K-demo_EMT", "--trajectory", str(tmp_path / "t.extxyz"), "--dt-fs", "2.5")
    assert_one_line_error(res, "cannot score")


def test_inputs_take_the_protocol_overrides_of_run(tmp_path):
    """`dynamat inputs` writes what `dynamat run` would run: time step, thermostat and its time
    constant, length in ps at that time step, and the start frame, each as asked."""
    import xml.etree.ElementTree as ET

    import ase.io
    import numpy as np

    from dynamat.io import read_reference

    system = "bulkCu3Au_500K-demo_EMT"
    res = dynamat_cmd("inputs", "--system", system, "--reference", str(DEMO), "--out", str(tmp_path),
                      "--time-ps", "0.1", "--timestep-fs", "2.0", "--tau-fs", "40", "--thermostat", "langevin",
                      "--start-frame", "3")
    assert res.returncode == 0, res.stderr
    root = ET.parse(tmp_path / "input.xml").getroot()
    assert int(root.find("total_steps").text) == 50  # 0.1 ps at 2 fs
    dyn = root.find("system/motion/dynamics")
    assert float(dyn.find("timestep").text) == 2.0 and dyn.find("timestep").get("units") == "femtosecond"
    thermo = dyn.find("thermostat")
    assert thermo.get("mode") == "langevin" and float(thermo.find("tau").text) == 40.0
    start = ase.io.read(tmp_path / "init.xyz")
    ref = read_reference(DEMO, system, frames=slice(3, 4))
    np.testing.assert_allclose(start.positions, ref.positions[0], atol=1e-8)
    assert "dt 2.0 fs, tau 40.0 fs" in res.stdout

    refused = dynamat_cmd("inputs", "--system", system, "--reference", str(DEMO), "--out", str(tmp_path / "r"),
                          "--protocol", "relaxed_nhc")
    assert_one_line_error(refused, "relaxes the cell with the model")
    assert not (tmp_path / "r").exists()
    both = dynamat_cmd("inputs", "--system", system, "--reference", str(DEMO), "--out", str(tmp_path / "b"),
                       "--steps", "10", "--time-ps", "1")
    assert_one_line_error(both, "not both")


def test_misspelt_model_is_refused_before_any_folder(tmp_path):
    """A name the driver cannot resolve is one line naming the near match and `dynamat models`, from
    every command that would otherwise make a run folder (and a campaign its _campaign folder) first."""
    system = "bulkCu_300K-demo_EMT"
    models = tmp_path / "models.toml"
    models.write_text('[my-lj]\ncalculator = "ase.calculators.lj:LennardJones"\n')
    out = tmp_path / "out"
    run = dynamat_cmd("run", "--model", "emtt", "--system", system, "--steps", "20", "--out", str(out))
    assert_one_line_error(run, "unknown model 'emtt'", "did you mean emt?", "`dynamat models`")
    plugin = dynamat_cmd("run", "--model", "exmple-lj", "--system", system, "--steps", "20", "--out", str(out))
    assert_one_line_error(plugin, "did you mean example-lj?")  # the installed plugin family's name
    mine = dynamat_cmd("run", "--model", "my-ljj", "--models-file", str(models), "--system", system,
                       "--steps", "20", "--out", str(out))
    assert_one_line_error(mine, "did you mean my-lj?", "the --models-file names my-lj")
    camp = dynamat_cmd("campaign", "--models", "emt,emtt", "--systems", system, "--steps", "20", "--out", str(out))
    assert_one_line_error(camp, "unknown model 'emtt'")
    # a driver of another environment is asked what it serves (here: this one's, by its path)
    other = dynamat_cmd("run", "--model", "emtt", "--driver-cmd", str(BIN / "dynamat-driver"), "--system", system,
                        "--steps", "20", "--out", str(out))
    assert_one_line_error(other, "did you mean emt?", f"`dynamat models --driver-cmd {BIN / 'dynamat-driver'}`")
    demo = dynamat_cmd("demo", "--model", "emtt", "--out", str(out))
    assert_one_line_error(demo, "unknown model 'emtt'")
    assert not out.exists()
    # `inputs` prints the driver command, maybe for another environment (a plugin installed only there): it
    # writes the input and warns, with the near match, instead of refusing
    inputs = dynamat_cmd("inputs", "--model", "emtt", "--system", system, "--out", str(tmp_path / "inp"))
    assert inputs.returncode == 0, inputs.stderr
    assert "warning: unknown model 'emtt' (did you mean emt?)" in inputs.stderr
    assert "dynamat-driver --model emtt" in inputs.stdout and (tmp_path / "inp" / "input.xml").is_file()


@pytest.mark.parametrize("model", ["EMT", "example-lj", "ase.calculators.lj:LennardJones", "my-lj"])
def test_model_names_the_driver_resolves_are_not_refused(model, tmp_path):
    """Registry names in any case, a plugin family's names, MODULE:CALLABLE and a models file's tables
    pass the up-front check (`dynamat inputs` checks the model as `run` does, and runs nothing)."""
    models = tmp_path / "models.toml"
    models.write_text('[my-lj]\ncalculator = "ase.calculators.lj:LennardJones"\n')
    res = dynamat_cmd("inputs", "--system", "bulkCu_300K-demo_EMT", "--reference", str(DEMO), "--out",
                      str(tmp_path / "in"), "--steps", "20", "--model", model, "--models-file", str(models))
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "in" / "input.xml").exists()


@pytest.mark.parametrize("cmd", [
    ["campaign", "--models", "emt", "--systems", "bulkCu_300K-demo_EMT", "--steps", "400"],
    ["demo", "--model", "emt", "--steps", "400", "--singlepoint-frames", "2"],
    ["beads-convergence", "--model", "emt", "--system", "bulkCu_300K-demo_EMT", "--beads", "1", "--steps", "20"],
])
@pytest.mark.parametrize("under", [False, True])
def test_out_that_is_a_file_is_refused_up_front(cmd, under, tmp_path):
    """--out naming a file (or a folder under one) is one line before any work: the campaign ended with a
    bare NotADirectoryError, the demo refused only after its single points."""
    taken = tmp_path / "results.txt"
    taken.write_text("earlier results\n")
    out = taken / "x" if under else taken
    res = dynamat_cmd(*cmd, "--out", str(out))
    assert_one_line_error(res, f"--out {out}", "not a folder")  # and no progress line: nothing ran
    assert taken.read_text() == "earlier results\n" and sorted(p.name for p in tmp_path.iterdir()) == ["results.txt"]


def test_models_refuses_a_tier_no_model_has():
    """--tier 5 printed an empty table with exit 0, as if the tier existed and had no models; a tier some
    model has still filters (any case), even where --installed then leaves none."""
    res = dynamat_cmd("models", "--tier", "5", "--tier", "test")
    assert_one_line_error(res, "no model has tier 5", "1, 2, 3, 4", "none", "test")
    assert res.stdout == ""
    ok = dynamat_cmd("models", "--tier", "TEST")
    assert ok.returncode == 0, ok.stderr
    names = [ln.split()[0] for ln in ok.stdout.splitlines()[1:]]
    assert "emt" in names and "chgnet" not in names
    assert dynamat_cmd("models", "--tier", "4", "--installed").returncode == 0


def test_score_of_a_run_takes_its_system_and_reference_from_run_json(tmp_path):
    """``score --run DIR`` alone scores the run against the system and the reference file it was made from
    (a user's own file here, whose system the default reference lacks); the same score as when both are given."""
    import json

    import h5py

    mine = tmp_path / "mine.h5"
    with h5py.File(DEMO) as src, h5py.File(mine, "w") as dst:
        src.copy("bulkCu_300K-demo_EMT", dst, name="myCu_300K")
    res = dynamat_cmd("run", "--model", "emt", "--system", "myCu_300K", "--reference", str(mine), "--steps", "200",
                      "--seed", "2", "--out", str(tmp_path / "runs"))
    assert res.returncode == 0, res.stderr
    run = tmp_path / "runs" / "emt" / "myCu_300K"
    res = dynamat_cmd("score", "--run", str(run))
    assert res.returncode == 0, res.stderr
    implicit = json.loads((run / "score.json").read_text())
    res = dynamat_cmd("score", "--run", str(run), "--system", "myCu_300K", "--reference", str(mine),
                      "--json", str(tmp_path / "given" / "s.json"))
    assert res.returncode == 0, res.stderr
    given = json.loads((tmp_path / "given" / "s.json").read_text())
    assert implicit["system"] == "myCu_300K" and implicit["E_RPV_pct"] == given["E_RPV_pct"]
    # a --json that cannot be written is refused before the scoring, the run's score untouched
    scored = (run / "score.json").read_bytes()
    (tmp_path / "afile").write_text("")
    assert_one_line_error(dynamat_cmd("score", "--run", str(run), "--json", str(tmp_path / "afile" / "s.json")),
                          "its folder", "is a file")
    assert_one_line_error(dynamat_cmd("score", "--run", str(run), "--json", str(tmp_path / "given")), "is a folder")
    # the file it was made from is gone: the default reference is asked, and the line names the run's system
    mine.unlink()
    assert_one_line_error(dynamat_cmd("score", "--run", str(run)), "myCu_300K")
    assert (run / "score.json").read_bytes() == scored
    assert_one_line_error(dynamat_cmd("score", "--trajectory", str(tmp_path / "afile"), "--dt-fs", "1"),
                          "give --system")
    # a results folder given as --run: no run.json there, and a run folder below it is named
    assert_one_line_error(dynamat_cmd("score", "--run", str(tmp_path / "runs")), "give --system NAME",
                          "holds no run.json", f"e.g. --run {run}")


@pytest.mark.parametrize("cmd", [
    ["beads-convergence", "--model", "emt", "--system", "bulkCu_300K-demo_EMT", "--steps", "10", "--json", "{f}/x.json",
     "--out", "{tmp}/runs"],
    ["singlepoint", "--model", "emt", "--system", "bulkCu_300K-demo_EMT", "--json", "{f}/x.json"],
    ["reference", "import", str(DEMO), "--out", "{f}/r.h5"],
])
def test_a_result_file_under_a_file_is_refused_before_the_work(tmp_path, cmd):
    """The summary, score or reference a command writes at its end: a path it cannot take is said before the
    MD runs, the single points or the import, not after them."""
    (tmp_path / "afile").write_text("kept")
    cmd = [c.format(f=tmp_path / "afile", tmp=tmp_path) for c in cmd]
    assert_one_line_error(dynamat_cmd(*cmd), "its folder", "afile is a file")
    assert not (tmp_path / "runs").exists() and (tmp_path / "afile").read_text() == "kept"


def test_an_option_a_registered_model_does_not_take_is_refused_before_any_folder(tmp_path):
    """`-o KEY=VALUE` is checked against the registry's options (the loader's own list) by every command that
    would otherwise make a run folder, queue a campaign or print a driver command first; however the option
    reaches the driver (--model-option, --driver-arg, a campaign's per-model options)."""
    system, out = "bulkCu_300K-demo_EMT", tmp_path / "out"
    cases = [
        (("run", "--model", "lj", "--model-option", "sigmaa=2.3", "--system", system, "--steps", "20", "--out",
          str(out)), ("model 'lj' has no option(s) sigmaa", "known: epsilon, sigma, rc")),
        (("run", "--model", "harmonic", "--driver-arg=-okk=2", "--system", system, "--steps", "20", "--out",
          str(out)), ("model 'harmonic' has no option(s) kk", "known: k")),
        (("campaign", "--models", "emt,lj", "--systems", system, "--model-option", "lj=rc=5",
          "--driver-args", "emt=--option sigma=2", "--steps", "20", "--out", str(out)),
         ("model 'emt' has no option(s) sigma", "known: none")),
        (("singlepoint", "--model", "EMT", "--model-option", "head=x", "--system", system, "--max-frames", "2"),
         ("model 'emt' has no option(s) head",)),
        (("inputs", "--model", "lj", "--model-option", "eps=1", "--system", system, "--out", str(out)),
         ("no option(s) eps",)),
        (("beads-convergence", "--model", "harmonic", "--driver-arg", "-o", "--driver-arg", "spring=1", "--system",
          system, "--beads", "1", "--steps", "20", "--out", str(out)), ("no option(s) spring",)),
        (("run", "--model", "lj", "--driver-arg=-o", "--system", system, "--steps", "20", "--out", str(out)),
         ("driver option '-o' wants KEY=VALUE, got ''",)),
        (("reference", "generate", "--engine", "driver", "--model", "emt", "--model-option", "k=1", "--structure",
          str(DEMO), "--name", "x", "--temperature", "300", "--time-ps", "0.01", "--out", str(out / "r.h5")),
         ("no option(s) k",)),
    ]
    for args, needles in cases:
        assert_one_line_error(dynamat_cmd(*args), *needles)
    assert not out.exists()


@pytest.mark.parametrize("model, option", [("lj", "rc=5"), ("harmonic", "k=2"), ("example-lj", "sigma=2.3"),
                                           ("ase.calculators.lj:LennardJones", "sigma=2.3")])
def test_options_a_model_takes_pass_the_check(model, option, tmp_path):
    """A registered model's own options, a plugin family's and a MODULE:CALLABLE's (whose driver checks
    them) are not refused by the server."""
    res = dynamat_cmd("inputs", "--model", model, "--model-option", option, "--system", "bulkCu_300K-demo_EMT",
                      "--reference", str(DEMO), "--out", str(tmp_path / "in"), "--steps", "20")
    assert res.returncode == 0, res.stderr
    assert f"-o {option}" in res.stdout


def test_models_json_lists_each_registered_models_options():
    """What the refusal checks is what `dynamat models --json` shows (a plugin's: unknown, null)."""
    import json

    rows = {r["name"]: r for r in json.loads(dynamat_cmd("models", "--json").stdout)}
    assert rows["lj"]["options"] == ["epsilon", "sigma", "rc"] and rows["emt"]["options"] == []
    assert rows["example-lj"]["options"] is None


def test_a_driver_of_another_environment_is_asked_as_it_resolves_names(tmp_path):
    """Through --driver-cmd, a registered name matches in any case (the driver's registry lookup does) and a
    plugin family's only exactly (its lookup is exact): `EXAMPLE-LJ` is refused before any folder."""
    from dynamat.known_models import check_model_known

    driver = str(BIN / "dynamat-driver")
    out = tmp_path / "out"
    res = dynamat_cmd("run", "--model", "EXAMPLE-LJ", "--driver-cmd", driver, "--system", "bulkCu_300K-demo_EMT",
                      "--steps", "20", "--out", str(out))
    assert_one_line_error(res, "unknown model 'EXAMPLE-LJ' (did you mean example-lj?)")
    assert not out.exists()
    for name in ("example-lj", "Chgnet-0.3.0", "EMT"):
        check_model_known(name, (), driver)


def test_a_reader_that_leaves_the_pipe_early_is_not_an_error():
    """`dynamat systems | head -1`, the reader gone before the listing is written: the closed pipe ends the
    command quietly with the status a shell gives such a command (128 + SIGPIPE), not with a 'dynamat: error:
    BrokenPipeError' line."""
    import signal
    import subprocess

    proc = subprocess.Popen([str(BIN / "dynamat"), "systems"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the only reader: every write of the command now meets a closed pipe
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 128 + signal.SIGPIPE and err == "", err


@pytest.mark.parametrize("args, option", [
    (("run", "--model", "emt", "--system", "bulkCu_300K-demo_EMT", "--steps", "10", "--out", ""), "--out"),
    (("report", "{tmp}", "--out", ""), "--out"),
    (("score", "--run", "{tmp}", "--model", " "), "--model"),
    (("run", "--model", "", "--system", "bulkCu_300K-demo_EMT", "--out", "{tmp}"), "--model"),
    (("reference", "import", "{tmp}", "--out", "{tmp}/r.h5", "--name", ""), "--name"),
])
def test_an_empty_path_or_name_is_refused_not_taken_for_the_current_folder(args, option, tmp_path, monkeypatch):
    """`--out ''` ran in (and a report wrote into) the current folder, `--name ''` named the group after the file,
    `--model ''` was the run's own: one line each, nothing written where the command was started."""
    monkeypatch.chdir(tmp_path)
    res = dynamat_cmd(*(a.replace("{tmp}", str(tmp_path)) for a in args))
    assert_one_line_error(res, f"Invalid value for '{option}': is empty")
    assert not any(tmp_path.iterdir())


def test_score_json_replaces_an_earlier_score_never_another_file(tmp_path):
    """`dynamat score --json FILE` wrote over whatever FILE was: a file that is not a score is refused up front,
    left as it was; an earlier score there is replaced."""
    res = dynamat_cmd("run", "--model", "emt", "--system", "bulkCu_300K-demo_EMT", "--steps", "100", "--seed", "1",
                      "--out", str(tmp_path / "runs"))
    assert res.returncode == 0, res.stderr
    run = tmp_path / "runs" / "emt" / "bulkCu_300K-demo_EMT"
    for text in ("my notes\n", '{"model": "m"}\n'):
        mine = tmp_path / "mine.json"
        mine.write_text(text)
        res = dynamat_cmd("score", "--run", str(run), "--json", str(mine))
        assert_one_line_error(res, f"--json {mine} exists and is not a file this command writes")
        assert mine.read_text() == text and not (tmp_path / "mine.curves.npz").exists()
    earlier = tmp_path / "earlier.json"
    for _ in range(2):
        res = dynamat_cmd("score", "--run", str(run), "--json", str(earlier))
        assert res.returncode == 0, res.stderr
    assert json.loads(earlier.read_text())["system"] == "bulkCu_300K-demo_EMT"


def test_a_folder_or_a_cut_short_file_as_hdf5_says_which_in_one_line(tmp_path):
    """h5py's reasons run over lines ("(file read failed: time = ..." cut at the first): a folder given as the
    reference, or a reference or import --out cut short, is said in a few words naming the file."""
    (tmp_path / "refdir").mkdir()
    res = dynamat_cmd("run", "--model", "emt", "--system", "bulkCu_300K-demo_EMT", "--reference",
                      str(tmp_path / "refdir"), "--out", str(tmp_path / "runs"))
    assert_one_line_error(res, f"{tmp_path / 'refdir'} is a folder, not an HDF5 reference file")
    cut = tmp_path / "cut.h5"
    cut.write_bytes(DEMO.read_bytes()[: DEMO.stat().st_size // 2])
    res = dynamat_cmd("run", "--model", "emt", "--system", "bulkCu_300K-demo_EMT", "--reference", str(cut),
                      "--out", str(tmp_path / "runs"))
    assert_one_line_error(res, f"{cut} is not a readable HDF5 file (cut short)")
    xyz = tmp_path / "a.extxyz"
    ase_io_write_frames(xyz)
    before = cut.read_bytes()
    res = dynamat_cmd("reference", "import", str(xyz), "--out", str(cut), "--dt-fs", "1", "--temperature", "300")
    assert_one_line_error(res, f"--out {cut} exists and is not a readable HDF5 file (cut short); not touching it")
    assert cut.read_bytes() == before and not (tmp_path / "runs").exists()


def ase_io_write_frames(path, n: int = 12):
    """``n`` frames of a 32-atom Cu cell with energies and forces, as ASE's extxyz writer lays them out."""
    import numpy as np
    from ase.build import bulk
    from ase.calculators.emt import EMT
    from ase.io import write

    rng = np.random.default_rng(0)
    frames = []
    for _ in range(n):
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
        atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
        atoms.calc = EMT()
        atoms.get_forces()
        frames.append(atoms)
    write(path, frames, format="extxyz")
