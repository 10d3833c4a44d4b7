"""``run_report``: tables, figures, the HTML page and the Matbench-discovery export from score files.

A report owns what it writes into ``--out`` and nothing else there (:func:`report_files`): it is made
whole in a hidden folder inside ``--out`` and then takes the place of the previous report's files, so a
rerun leaves none of them behind (a PDF after ``--no-pdf``, the export of a model no longer reported),
a failed one leaves the previous report as it was, and a user's own files stay.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from dynamat.errors import DynamatError
from dynamat.files import write_text_atomic
from dynamat.io.results import ensure_writable_dir
from dynamat.layout import RUN_JSON, SCORE_JSON

PAGE = "report.html"
#: the report's folders in ``--out``; each holds only files of the report's own names (:func:`report_files`)
TABLES_DIR, FIGURES_DIR, MATBENCH_DIR = "tables", "figures", "matbench"
TMP_PREFIX = ".dynamat-report-"
#: the files the last report wrote into ``--out``, relative: a file of a report's name that it does not list is
#: the user's, and refused rather than replaced (:func:`check_foreign`)
MANIFEST = ".dynamat-report.json"
#: what every report page says (its notes' external-metrics line): a page written before the manifest existed
LEGACY_PAGE_MARK = "External metrics (F1, κ_SRME) from"


def report_files(out: str | Path) -> list[Path]:
    """The files a report wrote into ``out``: report.html, ``tables/<table>.{csv,md,json}``,
    ``figures/<figure>.{png,pdf}`` and the Matbench export (``md_metrics.json`` and each ``<model>.yml``
    that begins with the export's header). Any other file, in those folders too, is not the report's."""
    from .figures import FIGURE_SPECS
    from .matbench import COMBINED_JSON, is_export
    from .tables import TABLE_NAMES

    out = Path(out)
    names = [PAGE]
    names += [f"{TABLES_DIR}/{t}.{ext}" for t in TABLE_NAMES for ext in ("csv", "md", "json")]
    names += [f"{FIGURES_DIR}/{stem}.{ext}" for stem, _ in FIGURE_SPECS for ext in ("png", "pdf")]
    names.append(f"{MATBENCH_DIR}/{COMBINED_JSON}")
    files = [out / n for n in names]
    files += [p for p in sorted((out / MATBENCH_DIR).glob("*.yml")) if is_export(p)]
    return [p for p in files if p.is_file() and not p.is_symlink()]


def check_out(out: Path) -> None:
    """An --out that is a run folder is refused: the report is not a run's file."""
    for name in (RUN_JSON, SCORE_JSON):
        if (out / name).is_file():
            raise DynamatError(f"--out {out} is a run folder (it holds {name}); give the report a folder of its own")


def check_foreign(out: Path) -> None:
    """Refuses an ``out`` holding files of the report's names (:func:`report_files`) that no report wrote there
    (its :data:`MANIFEST` does not list them; a folder without one holds a report when its page is one): a user's
    ``report.html`` or ``tables/per_model.csv`` would be replaced."""
    files = report_files(out)
    try:
        listed = set(json.loads((out / MANIFEST).read_text())["files"])
    except (OSError, ValueError, KeyError, TypeError):
        page = out / PAGE
        listed = {p.relative_to(out).as_posix() for p in files} if (
            page.is_file() and LEGACY_PAGE_MARK in page.read_text(errors="replace")) else set()
    foreign = [p.relative_to(out).as_posix() for p in files if p.relative_to(out).as_posix() not in listed]
    if foreign:
        more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        raise DynamatError(f"--out {out} holds {', '.join(foreign[:3])}{more}, which no dynamat report there wrote: "
                           "move them away, or give the report another --out")


def _swap_in(new: Path, out: Path) -> None:
    """The report made in ``new`` takes the place of the previous one in ``out``."""
    try:
        incoming = sorted(p for p in new.rglob("*") if p.is_file())
        kept = {out / src.relative_to(new) for src in incoming}
        _write_manifest(out, set(report_files(out)) | kept)  # first: a kill during the swap leaves all listed
        for src in incoming:  # each new file replaces its old one at once: a kill leaves a whole file there
            dst = out / src.relative_to(new)
            dst.parent.mkdir(exist_ok=True)
            os.replace(src, dst)
        for old in report_files(out):  # then the old report's files the new one has not
            if old not in kept:
                old.unlink()
        for sub in (TABLES_DIR, FIGURES_DIR, MATBENCH_DIR):  # a folder the new report leaves empty goes
            if (out / sub).is_dir() and not any((out / sub).iterdir()):
                (out / sub).rmdir()
        _write_manifest(out, report_files(out))
    except OSError as exc:
        raise DynamatError(f"cannot write the report to {out}: {exc.strerror or exc}") from None


def _write_manifest(out: Path, files) -> None:
    names = sorted(p.relative_to(out).as_posix() for p in files)
    write_text_atomic(out / MANIFEST, json.dumps({"files": names}, indent=1) + "\n")


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
    unfinished = f", {len(res.unfinished)} unfinished" if res.unfinished else ""  # said on the page and here
    for skipped in res.skipped:
        if warn:
            warn(f"skipped unreadable score file {skipped}")
    for run in res.unscored:
        if warn:
            warn(f"not in the report: the run in {run} has no score (`dynamat score --run DIR` first)")
    ext_rows = ext.load_external(external)
    ext_map = ext.match_external(res.models, ext_rows)
    out = Path(out)
    check_out(out)
    check_foreign(out)
    out = ensure_writable_dir(out, "the report to")

    for left in out.glob(TMP_PREFIX + "*"):  # a report killed while it was made left its work folder (one
        # untouched for 10 minutes: not that of a report being made now into the same folder)
        if left.is_dir() and not left.is_symlink() and time.time() - left.stat().st_mtime > 600:
            shutil.rmtree(left, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=out))
    try:
        tables = build_tables(res, {m: r for m, r in ext_map.items()})
        for t in tables.values():
            write_table(t, tmp / TABLES_DIR)
        model_rows = tables["per_model"].rows

        saved = build_figures(res, model_rows, tmp / FIGURES_DIR, formats)
        write_matbench_export(model_rows, tmp / MATBENCH_DIR)

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
                f"({len(res.failures)} failed/exploded{unfinished}).")
        page = write_html(tmp / PAGE, list(tables.values()), pngs, notes, title, meta)
        _swap_in(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    unscored = f"; {len(res.unscored)} run(s) without a score left out" if res.unscored else ""
    unscored += f"; the scorer noted {len(res.noted)} run(s) (the page's Notes say what)" if res.noted else ""
    return (f"dynamat report: {len(res.models)} models, {len(res.rows)} runs "
            f"({len(res.failures)} failed/exploded{unfinished}, excluded from means){unscored}; "
            f"{len(tables)} tables, {len(saved)} figures -> {out} (page: {page.name})")
