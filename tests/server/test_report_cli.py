"""`dynamat report` end to end through click's CliRunner."""

import json

import pytest
from click.testing import CliRunner

from dynamat.report import write_synthetic_results
from dynamat.cli import cli
from dynamat.report.figures import FIGURE_SPECS

TABLES = ("per_model_system", "per_model", "tier_medians", "per_class_model", "per_class_tier")


def test_report_end_to_end(tmp_path):
    results = write_synthetic_results(tmp_path / "results")
    out = tmp_path / "out"
    r = CliRunner().invoke(cli, ["report", str(results), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "6 models" in r.output and "1 failed/exploded" in r.output
    for name in TABLES:
        for ext in ("csv", "md", "json"):
            assert (out / "tables" / f"{name}.{ext}").stat().st_size > 0
    for stem, _ in FIGURE_SPECS:
        for ext in ("png", "pdf"):
            p = out / "figures" / f"{stem}.{ext}"
            assert p.stat().st_size > 5000, p
    assert (out / "figures" / "fig7_pareto_E_RPV.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "figures" / "fig7_pareto_E_RPV.pdf").read_bytes()[:5] == b"%PDF-"
    mb = json.loads((out / "matbench" / "md_metrics.json").read_text())
    assert set(mb) == {"CHGNet", "MACE-MP-0", "orb-v2", "GRACE-2L-OAM", "PET-OAM-XL", "UMA-S-P1"}
    assert mb["UMA-S-P1"]["metrics"]["md"]["n_systems"] == 2
    assert (out / "matbench" / "CHGNet.yml").read_text().count("\n    ") == 9  # 8 Matbench keys + n_systems
    page = (out / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == len(FIGURE_SPECS)
    assert "http://" not in page and "https://" not in page  # nothing to fetch
    assert "<link" not in page and "<script src" not in page
    per_model = json.loads((out / "tables" / "per_model.json").read_text())
    uma = next(row for row in per_model["rows"] if row["model"] == "UMA-S-P1")
    assert uma["n_failed"] == 1 and uma["f1"] is None
    assert next(row for row in per_model["rows"] if row["model"] == "CHGNet")["f1"] == 0.613


def test_report_with_user_external_csv(tmp_path):
    results = write_synthetic_results(tmp_path / "results", curves=False)
    csv = tmp_path / "ext.csv"
    csv.write_text("model,f1,kappa_srme,source,date\nUMA-S-P1,0.95,0.1,my notes,2026-01-01\n")
    out = tmp_path / "out"
    r = CliRunner().invoke(cli, ["report", str(results), "--out", str(out), "--external", str(csv),
                                            "--no-pdf"])
    assert r.exit_code == 0, r.output
    rows = json.loads((out / "tables" / "per_model.json").read_text())["rows"]
    f1 = {row["model"]: row["f1"] for row in rows}
    assert f1["UMA-S-P1"] == 0.95 and f1["CHGNet"] is None
    assert not list((out / "figures").glob("*.pdf"))
    assert not (out / "figures" / "fig3_rdf_curves.png").exists()  # no curves.npz


@pytest.mark.parametrize("kind", ["missing", "empty", "file"])
def test_bad_results_dir_is_one_line_error(tmp_path, kind):
    target = tmp_path / "results"
    if kind == "empty":
        target.mkdir()
    elif kind == "file":
        target.write_text("not a dir")
    r = CliRunner().invoke(cli, ["report", str(target), "--out", str(tmp_path / "out")])
    assert r.exit_code != 0
    lines = r.output.strip().splitlines()
    assert len(lines) == 1, r.output
    assert lines[0].startswith("dynamat: error:") and "results" in lines[0] and r.exit_code == 2  # one style for all commands
    assert r.exception is None or isinstance(r.exception, SystemExit)  # no traceback


def test_bad_external_csv_is_one_line_error(tmp_path):
    results = write_synthetic_results(tmp_path / "results", curves=False)
    r = CliRunner().invoke(cli, ["report", str(results), "--out", str(tmp_path / "o"),
                                            "--external", str(tmp_path / "none.csv")])
    assert r.exit_code != 0 and len(r.output.strip().splitlines()) == 1


def test_unreadable_score_files_are_named_on_the_console(tmp_path):
    """One stderr line per unreadable score file, the report still made from the rest (exit 0); an
    error only when no file at all is readable."""
    results = write_synthetic_results(tmp_path / "results", curves=False)
    bad = {results / "broken" / "sysA" / "score.json": "{not json",
           results / "broken" / "sysB" / "score.json": "[1, 2]"}
    for path, text in bad.items():
        path.parent.mkdir(parents=True)
        path.write_text(text)
    r = CliRunner().invoke(cli, ["report", str(results), "--out", str(tmp_path / "out"), "--no-pdf"])
    assert r.exit_code == 0, r.output
    warnings = r.stderr.strip().splitlines()
    assert len(warnings) == 2, r.stderr
    for line, path in zip(warnings, sorted(bad)):
        assert line.startswith(f"dynamat: warning: skipped unreadable score file {path}: "), line
    assert "not a JSON object" in warnings[1]
    assert "6 models" in r.stdout
    only_bad = [str(p) for p in bad]
    r = CliRunner().invoke(cli, ["report", *only_bad, "--out", str(tmp_path / "out2")])
    assert r.exit_code == 2
    assert r.stderr.strip().splitlines() == [r.stderr.strip()]
    assert r.stderr.startswith("dynamat: error: no readable score.json") and "2 unreadable" in r.stderr
