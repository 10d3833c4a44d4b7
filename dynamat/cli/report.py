"""``dynamat report RESULTS... --out DIR [--external CSV]``."""

from __future__ import annotations

from pathlib import Path

import click

from dynamat.errors import DynamatError


@click.command("report")
@click.argument("results", metavar="RESULTS...", nargs=-1, required=True)
@click.option("--out", "out", required=True, metavar="DIR",
              help="Output directory (created) for tables/, figures/, matbench/ and report.html.")
@click.option("--external", "external", default=None, metavar="CSV",
              help="CSV with columns model,f1,kappa_srme,source,date "
                   "[default: the bundled Matbench-discovery values].")
@click.option("--title", default="dynamat report: Dyna-Mat-v1.0 finite-temperature benchmark",
              show_default=False, help="Title of the HTML page.")
@click.option("--no-pdf", is_flag=True, help="Write PNG figures only (faster).")
def report_command(results: tuple[str, ...], out: str, external: str | None, title: str, no_pdf: bool) -> None:
    """Tables, figures (Fig. 2-7, S6a, S13-S16 analogues), a self-contained HTML page and a
    Matbench-discovery export. RESULTS: a results folder (<model>/<system>/score.json, at any depth), run
    folders, or score JSON files; g(r), pressure and VDOS panels are drawn where curves.npz exists. An exploded
    or failed run without a score counts as a failure; a completed one without a score is named, not reported.
    A rerun into DIR replaces the files of the report there, and only those."""
    from dynamat.report.build import run_report
    from dynamat.report.external import ExternalError
    from dynamat.report.tables import ResultsError

    try:
        summary = run_report([Path(r) for r in results], out, external, title,
                             formats=("png",) if no_pdf else ("png", "pdf"),
                             warn=lambda line: click.echo(f"dynamat: warning: {line}", err=True))
    except (ResultsError, ExternalError) as exc:
        raise DynamatError(str(exc)) from None
    click.echo(summary)
