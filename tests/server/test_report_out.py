"""What `dynamat report --out DIR` writes: a rerun replaces the previous report's files and only those (a
user's files in DIR stay), a run folder is refused as DIR, and every model's Matbench export has a file of
its own even where two names make the same file name."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from dynamat.cli import cli
from dynamat.report import run_report, write_synthetic_results

from conftest import assert_one_line_error

MODELS = (("CHGNet", 1, 412_525, 1.0), ("MACE-MP-0", 1, 4_688_656, 0.8), ("orb-v2", 2, 25_161_727, 0.6))


def _report(*args):
    return CliRunner().invoke(cli, ["report", *map(str, args)])


def _files(out):
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())


def test_a_rerun_replaces_the_reports_own_files_and_nothing_else(tmp_path):
    """Rerun with --no-pdf over fewer models: the PDFs and the dropped models' exports go; a user's files in
    --out (beside the report, and in its folders) stay; no working folder is left behind."""
    out = tmp_path / "out"
    r = _report(write_synthetic_results(tmp_path / "all", models=MODELS), "--out", out)
    assert r.exit_code == 0, r.output
    assert (out / "figures" / "fig7_pareto_E_RPV.pdf").is_file() and (out / "matbench" / "orb-v2.yml").is_file()
    user = {out / "notes.txt": "mine", out / "figures" / "sketch.png": "mine", out / "tables" / "extra.csv": "a,b\n",
            out / "matbench" / "custom.yml": "model_name: mine\n"}
    for path, text in user.items():
        path.write_text(text)

    fewer = write_synthetic_results(tmp_path / "fewer", models=MODELS[:1], exploded=(), curves=False)
    r = _report(fewer, "--out", out, "--no-pdf")
    assert r.exit_code == 0, r.output
    files = _files(out)
    assert not [f for f in files if f.endswith(".pdf")], files
    assert sorted(f for f in files if f.startswith("matbench/")) == [
        "matbench/CHGNet.yml", "matbench/custom.yml", "matbench/md_metrics.json"]
    assert set(json.loads((out / "matbench" / "md_metrics.json").read_text())) == {"CHGNet"}
    assert not (out / "figures" / "fig3_rdf_curves.png").exists()  # no curves this time: the old one went
    for path, text in user.items():
        assert path.read_text() == text
    assert sorted(p.name for p in out.iterdir()) == [".dynamat-report.json", "figures", "matbench", "notes.txt",
                                                     "report.html", "tables"]
    rows = json.loads((out / "tables" / "per_model.json").read_text())["rows"]
    assert [row["model"] for row in rows] == ["CHGNet"]


def test_a_report_that_fails_leaves_the_previous_one(tmp_path, monkeypatch):
    out = tmp_path / "out"
    results = write_synthetic_results(tmp_path / "r", models=MODELS, curves=False)
    run_report(results, out, formats=("png",))
    before = {f: (out / f).read_bytes() for f in _files(out)}

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("dynamat.report.matbench.write_matbench_export", broken)
    with pytest.raises(OSError):
        run_report(write_synthetic_results(tmp_path / "r2", models=MODELS[:1], curves=False), out, formats=("png",))
    assert {f: (out / f).read_bytes() for f in _files(out)} == before
    assert sorted(p.name for p in out.iterdir()) == [".dynamat-report.json", "figures", "matbench", "report.html",
                                                     "tables"]


def test_an_out_that_is_a_run_folder_is_refused(tmp_path):
    results = write_synthetic_results(tmp_path / "r", models=MODELS[:1], curves=False)
    run_dir = results / "CHGNet" / "bulk_Cu_300K"
    before = sorted(p.name for p in run_dir.iterdir())
    r = _report(results, "--out", run_dir)
    assert_one_line_error(r, str(run_dir), "run folder", "score.json")
    assert sorted(p.name for p in run_dir.iterdir()) == before


@pytest.mark.parametrize("names", [("my:model", "my-model"), ("MyModel", "mymodel")])
def test_models_of_one_export_file_name_each_get_their_own(tmp_path, names):
    """``my:model`` and ``my-model`` both make ``my-model.yml`` (and on a case-blind file system ``MyModel.yml``
    is ``mymodel.yml``): each gets a stable hash suffix, its file holds its own block; a model whose name is
    no one else's keeps the plain name."""
    models = [(names[0], 1, 1000, 1.0), (names[1], 2, 2000, 0.5), ("CHGNet", 1, 412_525, 0.8)]
    results = write_synthetic_results(tmp_path / "r", models=models, exploded=(), curves=False)
    out = tmp_path / "out"
    r = _report(results, "--out", out, "--no-pdf")
    assert r.exit_code == 0, r.output
    ymls = sorted((out / "matbench").glob("*.yml"))
    assert len(ymls) == 3
    assert (out / "matbench" / "CHGNet.yml").is_file()
    held = {json.loads(p.read_text().split("model_name: ", 1)[1].splitlines()[0]): p.name for p in ymls}
    assert set(held) == {*names, "CHGNet"}
    assert len({n.lower() for n in held.values()}) == 3
    # the same name whatever the order of the models, and on a second run
    from dynamat.report.matbench import export_names

    assert export_names(list(reversed(held))) == held
    shutil.rmtree(out)
    assert _report(results, "--out", out, "--no-pdf").exit_code == 0
    assert sorted(p.name for p in (out / "matbench").glob("*.yml")) == sorted(held.values())


def test_a_killed_reports_work_folder_goes_with_the_next_report(tmp_path):
    """A report killed while it was made leaves its hidden work folder in --out: the next report removes it
    once it is 10 minutes old, and leaves a fresh one (a report being made into the same folder now)."""
    import os
    import time

    from dynamat.report.build import TMP_PREFIX

    out = tmp_path / "out"
    old, fresh = out / f"{TMP_PREFIX}old", out / f"{TMP_PREFIX}fresh"
    for d in (old, fresh):
        (d / "figures").mkdir(parents=True)
        (d / "figures" / "fig.png").write_bytes(b"x")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    run_report(write_synthetic_results(tmp_path / "r", models=MODELS[:1], curves=False), out, formats=("png",))
    assert not old.exists() and fresh.is_dir()


def test_files_of_the_reports_names_that_no_report_wrote_are_refused_not_replaced(tmp_path):
    """A user's report.html and tables/per_model.csv in --out were taken for the report's own and replaced. The
    report lists what it wrote (.dynamat-report.json); any other file of its names is refused in one line, left
    as it was. A folder of a report made before the list existed (its page says it is one) is still replaced."""
    results = write_synthetic_results(tmp_path / "all", models=MODELS[:1], curves=False)
    out = tmp_path / "mine"
    (out / "tables").mkdir(parents=True)
    user = {out / "report.html": "<p>my page</p>", out / "tables" / "per_model.csv": "a,b\n"}
    for path, text in user.items():
        path.write_text(text)
    r = _report(results, "--out", out, "--no-pdf")
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1, r.output
    assert "holds report.html, tables/per_model.csv, which no dynamat report there wrote" in r.output
    assert all(path.read_text() == text for path, text in user.items()) and _files(out) == ["report.html",
                                                                                          "tables/per_model.csv"]
    out = tmp_path / "old"
    assert _report(results, "--out", out, "--no-pdf").exit_code == 0
    (out / ".dynamat-report.json").unlink()  # as a report before the list left it
    (out / "tables" / "per_model.csv").write_text("stale\n")
    r = _report(results, "--out", out, "--no-pdf")
    assert r.exit_code == 0, r.output
    assert (out / "tables" / "per_model.csv").read_text() != "stale\n" and (out / ".dynamat-report.json").is_file()
