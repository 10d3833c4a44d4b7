"""``dynamat report RESULTS --out DIR [--external CSV]``.

Exposes :data:`report_command` (a click.Command); the main ``dynamat`` group registers it.
"""

from __future__ import annotations

from pathlib import Path

import click

__all__ = ["report_command"]


@click.command("report")
@click.argument("results", metavar="RESULTS")
@click.option("--out", "out", required=True, metavar="DIR",
              help="Output directory (created) for tables/, figures/, matbench/ and report.html.")
@click.option("--external", "external", default=None, metavar="CSV",
              help="CSV with columns model,f1,kappa_srme,source,date "
                   "[default: the bundled Matbench-discovery values].")
@click.option("--title", default="dynamat report: Dyna-Mat-v1.0 finite-temperature benchmark",
              show_default=False, help="Title of the HTML page.")
@click.option("--no-pdf", is_flag=True, help="Write PNG figures only (faster).")
def report_command(results: str, out: str, external: str | None, title: str, no_pdf: bool) -> None:
    """Tables, figures (Fig. 2-7, S6a, S13-S16 analogues), a self-contained HTML page and a
    Matbench-discovery-style export from RESULTS/<model>/<system>/score.json."""
    from .external import ExternalError
    from .tables import ResultsError

    try:
        summary = run_report(results, out, external, title, formats=("png",) if no_pdf else ("png", "pdf"))
    except (ResultsError, ExternalError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(summary)


def run_report(results: str | Path, out: str | Path, external: str | Path | None = None,
               title: str = "dynamat report", formats=("png", "pdf")) -> str:
    """Do the work of ``dynamat report``; returns a one-paragraph summary."""
    from . import external as ext
    from .figures import FIGURE_SPECS, build_figures
    from .html import write_html
    from .matbench import write_matbench_export
    from .tables import build_tables, load_results, write_table

    res = load_results(results)
    ext_rows = ext.load_external(external)
    ext_map = ext.match_external(res.models, ext_rows)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    tables = build_tables(res, {m: r for m, r in ext_map.items()})
    for t in tables.values():
        write_table(t, out / "tables")
    model_rows = tables["per_model"].rows

    saved = build_figures(res, model_rows, out / "figures", formats)
    write_matbench_export(model_rows, out / "matbench")

    notes = list(res.notes)
    unmatched = [m for m in res.models if m not in ext_map]
    src = external or "bundled dynamat/data/external_metrics.csv"
    notes.append(f"External metrics (F1, κ_SRME) from {src}; "
                 + (f"no entry for: {', '.join(unmatched)}." if unmatched else "all models matched."))
    captions = dict(FIGURE_SPECS)
    pngs = [(stem, captions[stem], paths[0]) for stem, paths in saved.items()
            if paths and paths[0].suffix == ".png"]
    meta = (f"Results: {Path(results).resolve()} - {len(res.models)} models, "
            f"{len({r['system'] for r in res.rows})} systems, {len(res.rows)} runs "
            f"({len(res.failures)} failed/exploded).")
    page = write_html(out / "report.html", list(tables.values()), pngs, notes, title, meta)
    return (f"dynamat report: {len(res.models)} models, {len(res.rows)} runs "
            f"({len(res.failures)} failed/exploded, excluded from means); "
            f"{len(tables)} tables, {len(saved)} figures -> {out} (page: {page.name})")
