"""``run_report``: tables, figures, the HTML page and the Matbench-discovery export from score files."""

from __future__ import annotations

from pathlib import Path

from dynamat.io.results import ensure_writable_dir


def run_report(results, out: str | Path, external: str | Path | None = None,
               title: str = "dynamat report", formats=("png", "pdf"), warn=None) -> str:
    """Do the work of ``dynamat report``; returns a one-paragraph summary.

    ``results``: a results folder, run folders or score JSON files (one or a list).
    ``warn``: called with one line per score file that could not be read and per run folder without
    a score (the page and the tables say it too)."""
    from . import external as ext
    from .figures import FIGURE_SPECS, build_figures
    from .html import write_html
    from .matbench import write_matbench_export
    from .tables import build_tables, load_results, write_table

    res = load_results(results)
    for skipped in res.skipped:
        if warn:
            warn(f"skipped unreadable score file {skipped}")
    for run in res.unscored:
        if warn:
            warn(f"not in the report: the run in {run} has no score (`dynamat score --run DIR` first)")
    ext_rows = ext.load_external(external)
    ext_map = ext.match_external(res.models, ext_rows)
    out = ensure_writable_dir(out, "the report to")

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
    shown = results if isinstance(results, (str, Path)) else ", ".join(map(str, results))
    meta = (f"Results: {shown} - {len(res.models)} models, "
            f"{len({r['system'] for r in res.rows})} systems, {len(res.rows)} runs "
            f"({len(res.failures)} failed/exploded).")
    page = write_html(out / "report.html", list(tables.values()), pngs, notes, title, meta)
    unscored = f"; {len(res.unscored)} run(s) without a score left out" if res.unscored else ""
    return (f"dynamat report: {len(res.models)} models, {len(res.rows)} runs "
            f"({len(res.failures)} failed/exploded, excluded from means){unscored}; "
            f"{len(tables)} tables, {len(saved)} figures -> {out} (page: {page.name})")
