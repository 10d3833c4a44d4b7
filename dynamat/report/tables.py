"""Load per-(model, system) scores and aggregate them into report tables.

Input contract: ``<results>/<model>/<system>/score.json`` (flat JSON, keys in
:data:`METRIC_KEYS` plus ``model``, ``system``, ``system_class``, ``tier``, ``n_params``,
``status``, optional model facts (``model_label``, ``training_set``, from a models file) and optional
``<key>_unc`` / ``<key>_floor``), optionally with ``curves.npz``
beside it. Score files and run folders are found at any depth below a results folder
(:func:`find_results`); a run folder (``run.json``) without a score is a failure row when its run exploded
or failed, and is named in the notes, not averaged nor counted a failure, when it completed unscored. A JSON
file that is not a score (:func:`not_a_score`) is refused when named, skipped with a note when found.

Aggregation rules (all documented in the report notes as well):

* Only runs with ``status == "completed"`` enter means and medians. Failed, exploded or
  unknown-status runs are counted per model (``n_failed``, ``failed_runs``) and listed in
  :attr:`Results.notes`; they are never averaged silently. Unfinished runs (``incomplete``: stopped
  part-way, resumable) are in no mean either, and listed apart: no failure of the model.
* ``bead_convergence.json`` summaries found beside the scores are a table of their own
  (:mod:`dynamat.report.beads`), in no mean.
* A null (or non-finite) metric is skipped, never counted as zero: a model's mean of a
  metric is over the completed systems where that metric exists (``<key>_n`` says how
  many). Systems without reference pressure therefore drop out of the pressure means
  only.
* ``<key>_unc`` of a mean is ``sqrt(sum unc_i**2) / n`` (independent per-system
  statistical uncertainties); it is given only when every contributing system has an
  uncertainty, otherwise null: the standard error of a mean over n systems needs all n
  variances, and summing only the known ones (what a second, test-only aggregation once did)
  understates it. ``<key>_floor`` of a mean is the mean of the per-system floors, again only
  when all are present. This is the one aggregation over systems (:func:`mean_over_systems`).
* Model-level ``E_RPV_pct`` / ``L_RPV_pct`` are the paper's Eq. 11 / Eq. 12 applied to
  the model's *mean* E_RDF, E_P (pressure-histogram error) and E_VDOS, i.e. each
  observable averaged over the systems where it exists, as in Fig. 7 / S13. The mean of
  the per-system ``E_RPV_pct`` / ``L_RPV_pct`` values from score.json is kept beside them
  as ``E_RPV_pct_mean_over_systems`` / ``L_RPV_pct_mean_over_systems``.
* Replicas (``dynamat run --replicas R``: score files with ``replica_index``): the completed replicas
  of a (model, system) become one row (:func:`dynamat.scoring.replicas.aggregate_replicas`: mean
  error, ``<key>_replica_sd`` across replicas, ``<key>_replica_unc`` = sd/√R beside the bootstrap
  ``<key>_unc`` of the mean); a failed or exploded replica stays a failure row of its own. Tables get
  the replica columns only when some row has replicas, so single-run tables are unchanged.
* Tier medians are medians over the models of a tier of their model means (paper's
  dashed lines); per-class tables average over the systems of one class.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from dynamat.metrics.combined import combined_scores  # Eq. 11-12, the one implementation
from dynamat.metrics.matbench import MATBENCH_TABLE
from dynamat.report.external import EXTERNAL_METRICS
from dynamat.layout import BEAD_RUN_PREFIX, BEAD_SUMMARY, RUN_JSON, SCORE_JSON, WORK_SUFFIX, curves_beside
from dynamat.scoring.keys import (  # the one metric table
    COMPOSITE_KEYS, METRIC_BY_KEY, METRIC_KEYS, METRICS, NPT_METRIC_KEYS, OBSERVABLE_KEYS, Metric,
)

__all__ = [
    "METRICS",
    "METRIC_KEYS",
    "OBSERVABLE_KEYS",
    "Metric",
    "Results",
    "ResultsError",
    "Table",
    "build_tables",
    "by_class_table",
    "class_tier_table",
    "combined_scores",
    "find_results",
    "fmt",
    "load_results",
    "mean_over_systems",
    "model_order",
    "model_table",
    "not_a_score",
    "system_table",
    "tier_label",
    "tier_median_table",
    "write_table",
]

#: Matbench-discovery's per-system keys a score.json carries under ``matbench`` (MD) and
#: ``matbench_singlepoint`` (energy/force), computed with its definitions (the one table:
#: :data:`dynamat.metrics.matbench.MATBENCH_TABLE`)
MATBENCH_RUN_KEYS = tuple(MATBENCH_TABLE)

SYSTEM_CLASSES = ("pure metal", "alloy", "TMD", "perovskite", "molecular crystal")
STATUSES = ("completed", "failed", "exploded")
#: a run stopped part-way (killed, pre-empted, interrupted) or still going, as `dynamat score` says it: its
#: command resumes it, so it is no failure of the model; like a failure it is in no mean, but it is neither
#: counted in ``n_failed`` nor marked with a dagger, and the notes list it apart
UNFINISHED_STATUSES = ("incomplete", "running")


def is_failure(row: dict[str, Any]) -> bool:
    """A run that did not complete and will not by being resumed: failed, exploded or of unknown status."""
    return row["status"] != "completed" and row["status"] not in UNFINISHED_STATUSES


#: every table a report can hold (:func:`build_tables`), by file name: what a rerun replaces in tables/
TABLE_NAMES = ("per_model", "tier_medians", "per_class_tier", "per_class_model", "per_model_system", "npt_cell",
               "beads_convergence")
#: what the NPT table shows beside the cell errors
NPT_EXTRA_KEYS = ("volume_mean_ref_A3", "volume_mean_mlip_A3", "density_mean_ref_g_cm3", "density_mean_mlip_g_cm3")


class ResultsError(Exception):
    """The results directory is missing, empty or unreadable."""


# ----------------------------------------------------------------------------- loading
def _num(value: Any) -> float | None:
    """Float or None; null, non-numeric and non-finite values all become None."""
    if value is None or isinstance(value, bool):
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _int(value: Any) -> int | None:
    x = _num(value)
    return None if x is None else int(round(x))


@dataclass
class Results:
    """All score rows of one results directory, plus what could not be used."""

    root: Path
    rows: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # "<path>: <why>" of each unreadable score file
    unscored: list[str] = field(default_factory=list)  # "<run folder> (<status>)" of each run without a score
    beads: list[dict[str, Any]] = field(default_factory=list)  # bead-convergence studies (report.beads)
    noted: list[str] = field(default_factory=list)  # the runs whose score carries a note (in ``notes``)

    @property
    def completed(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["status"] == "completed"]

    @property
    def failures(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if is_failure(r)]

    @property
    def unfinished(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["status"] in UNFINISHED_STATUSES]

    @property
    def models(self) -> list[str]:
        return model_order(self.rows)


def load_results(root) -> Results:
    """Read the score files (and the unscored run folders) named by ``root``: a results folder, run
    folders or score JSON files, one or a list (:func:`find_results`).

    Every run folder counts: one with a score gives the score's row; an exploded or failed run without a
    score (too few frames to score, or never scored) gives a failure row from its run.json; a completed
    (or unfinished) run without a score is no row, never averaged nor counted a failure of the model,
    and is named in ``notes`` and ``unscored`` (`dynamat score --run DIR` first).
    Raises :class:`ResultsError` when nothing is found, or a file the user named is not a score file.
    Unreadable score files found in a folder are skipped and reported in ``notes``.
    """
    found = find_results(root)
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    skipped: list[str] = list(found.skipped)
    said: list[tuple[str, Any]] = []  # (run, its score's notes)
    for path in found.scores:
        try:
            raw = json.loads(path.read_text())
            if not isinstance(raw, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as exc:
            skipped.append(" ".join(f"{path}: {exc}".split()))
            continue
        why = not_a_score(raw, path)
        if why and path in found.named:  # a JSON file the user named as a score: refused, not skipped
            raise ResultsError(f"{path} is {why}")
        if why:
            skipped.append(f"{path}: {why}")
            continue
        rows.append(_normalise_row(raw, path))
        said.append((_run_label(rows[-1]), raw.get("notes")))
        stale = _stale_score(raw, path)
        if stale:
            notes.append(stale)
    unscored: list[str] = []
    for run_dir in found.runs:
        try:
            rec = json.loads((run_dir / RUN_JSON).read_text())
            if not isinstance(rec, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as exc:
            skipped.append(" ".join(f"{run_dir / RUN_JSON}: {exc}".split()))
            continue
        status = str(rec.get("status") or "unknown")
        if status in ("failed", "exploded"):
            rows.append(_run_failure_row(rec, run_dir))
        else:
            what = "completed" if status == "completed" else f"status {status}: unfinished"
            unscored.append(f"{run_dir} ({what})")
    from dynamat.report.beads import read_bead_studies

    beads = read_bead_studies(found.beads, skipped)
    notes += [f"skipped unreadable {s}" for s in skipped]
    if unscored:
        notes.append(f"{len(unscored)} run folder(s) hold no score and are not in the tables (score a completed run "
                     "with `dynamat score --run DIR`; resume an unfinished one with `dynamat run`): "
                     + ", ".join(unscored))
    if not rows:
        shown = found.root
        if beads:
            raise ResultsError(f"no score under {shown}, only {len(beads)} bead-convergence stud"
                               f"{'y' if len(beads) == 1 else 'ies'} (`dynamat beads-convergence` prints its "
                               "table): a report needs scored MD runs (`dynamat run`, `dynamat score --run DIR`)")
        if unscored:
            raise ResultsError(f"no score under {shown}: {len(unscored)} run(s) not scored, e.g. {unscored[0]}; "
                               "run `dynamat score --run DIR` first")
        unreadable = f" ({len(skipped)} unreadable, e.g. {skipped[0]})" if skipped else ""
        raise ResultsError(f"no readable score.json under {shown}{unreadable}")
    _refuse_duplicates(rows)
    lines, noted = score_notes(said)
    notes += lines
    rows = _aggregate_replicas(rows, notes)
    unfinished = [r for r in rows if r["status"] in UNFINISHED_STATUSES]
    if unfinished:
        notes.insert(0, f"{len(unfinished)} of {len(rows)} runs are unfinished (stopped part-way or still running: "
                        "rerun their `dynamat run` or campaign command to resume them) and are excluded from all "
                        "means, medians, correlations and Pareto fronts, but not counted as failures: "
                        + ", ".join(f"{r['model']}/{r['system']} ({_unfinished_at(r)})" for r in unfinished))
    n_fail = sum(is_failure(r) for r in rows)
    if n_fail:
        notes.insert(
            0,
            f"{n_fail} of {len(rows)} runs did not complete (failed/exploded) and are "
            "excluded from all means, medians, correlations and Pareto fronts: "
            + ", ".join(f"{r['model']}/{r['system']} ({r['status']})" for r in rows if is_failure(r)),
        )
    return Results(root=found.root, rows=rows, notes=notes, skipped=skipped, unscored=unscored, beads=beads,
                   noted=noted)


#: how far below a results folder run folders and score files are looked for: ``<results>/<model>/<system>``
#: is 2, a campaign kept as ``runs/<campaign>/<model>/<system>`` 3, bead-convergence runs one more
MAX_DEPTH = 8


@dataclass
class Found:
    """What :func:`find_results` found: score files, the run folders without one, and the files the user named."""

    scores: list[Path]
    runs: list[Path]
    named: set[Path]
    root: Path
    skipped: list[str] = field(default_factory=list)
    beads: list[Path] = field(default_factory=list)  # `dynamat beads-convergence` summaries


def find_results(sources) -> Found:
    """Every score file and run folder named by ``sources`` (one or a list): a score JSON file given
    explicitly, or a folder (a results folder, a run folder), searched to :data:`MAX_DEPTH` levels below it
    for ``score.json`` files and run folders (``run.json``) without one. Linked folders are not entered, a
    linked score or run file that points out of the folder is not read, hidden folders and a reference's
    ``X.work`` run folders (``dynamat reference generate``) are not searched."""
    if isinstance(sources, (str, Path)):
        sources = [sources]
    sources = [Path(s) for s in sources]
    if not sources:
        raise ResultsError("no results given")
    found = Found([], [], set(), sources[0] if len(sources) == 1 else Path("."))
    for src in sources:
        if src.is_file():
            found.scores.append(src)
            found.named.add(src)
        elif src.is_dir():
            n = len(found.scores) + len(found.runs) + len(found.skipped) + len(found.beads)
            _walk(src, found)
            if len(found.scores) + len(found.runs) + len(found.skipped) + len(found.beads) == n:
                raise ResultsError(f"no score.json files nor run folders under {src} "
                                   "(`dynamat run` writes run folders, `dynamat score --run DIR` their scores)")
        else:
            raise ResultsError(f"results not found: {src}")
    seen: set[Path] = set()
    found.scores = [p for p in found.scores if not (p.resolve() in seen or seen.add(p.resolve()))]
    found.runs = [p for p in found.runs if not (p.resolve() in seen or seen.add(p.resolve()))]
    found.beads = [p for p in found.beads if not (p.resolve() in seen or seen.add(p.resolve()))]
    return found


def _walk(root: Path, found: Found) -> None:
    top = root.resolve()
    for dirpath, dirnames, filenames in os.walk(root):  # followlinks=False: a linked folder is not entered
        here = Path(dirpath)
        depth = len(here.relative_to(root).parts)
        dirnames[:] = [] if depth >= MAX_DEPTH else sorted(
            d for d in dirnames if not d.startswith(".")
            and not (d.endswith(WORK_SUFFIX) and (here / d[:-len(WORK_SUFFIX)]).is_file()))
        names = set(filenames)
        summary = here / BEAD_SUMMARY
        if BEAD_SUMMARY in names and not summary.is_symlink():
            found.beads.append(summary)
            # its beads_<P>/ runs are the study's own, no benchmark runs without a score
            dirnames[:] = [d for d in dirnames if not d.startswith(BEAD_RUN_PREFIX)]
        for name in (SCORE_JSON, RUN_JSON):
            p = here / name
            if name in names and p.is_symlink() and not p.resolve().is_relative_to(top):
                found.skipped.append(f"{p}: a link out of {root}, not followed")
                names.discard(name)
        if SCORE_JSON in names:
            found.scores.append(here / SCORE_JSON)
        elif RUN_JSON in names:
            found.runs.append(here)
        if names & {SCORE_JSON, RUN_JSON}:
            # a run folder holds no runs of the benchmark: `beads-convergence` puts its PILE-L runs
            # (beads_<P>/) inside the classical run's folder, a study of their own
            dirnames[:] = []


def not_a_score(raw: dict[str, Any], path: Path) -> str | None:
    """Why ``raw`` (a JSON file's content) is not a score file as `dynamat score` (or a campaign, for a run
    that failed) writes it, or None: a score names its model, system and status and carries metric keys,
    or the error of a run that did not complete."""
    if path.name == RUN_JSON or {"protocol", "started", "steps_requested"} <= raw.keys():
        return (f"a run's record (run.json), not a score: give its run folder ({path.parent}), whose score.json "
                "the report reads (an exploded or failed run without one counts as a failure)")
    if "n_frames_singlepoint" in raw and "status" not in raw:
        return ("a `dynamat singlepoint` result: single-point energy and force errors on reference frames are not "
                "the score of an MD run (`dynamat score --run DIR` writes one)")
    missing = [k for k in ("model", "system", "status") if not (isinstance(raw.get(k), str) and raw[k].strip())]
    if missing:
        return f"not a score file: no {', '.join(missing)} (as `dynamat score` writes)"
    if not any(k in raw for k in (*METRIC_KEYS, *NPT_METRIC_KEYS)) and not (raw["status"] != "completed"
                                                                            and raw.get("error")):
        return "not a score file: no metric, nor the error of a run that did not complete (as `dynamat score` writes)"
    return None


def _stale_score(raw: dict[str, Any], path: Path) -> str | None:
    """A note when the run beside a score has gone on since it was scored (a larger --steps extended it):
    the row's numbers are those of the shorter run."""
    from dynamat.scoring.run import scores_this_run

    try:
        rec = json.loads((path.parent / RUN_JSON).read_text()) if path.name == SCORE_JSON else None
    except (OSError, ValueError):
        return None
    if not isinstance(rec, dict) or scores_this_run(raw, rec):
        return None
    scored = raw.get("last_frame_step", raw["steps_done"])  # a killed run's run.json still said step 0
    return (f"{path} scores the run up to step {scored}, and the run is now at step "
            f"{rec['steps_done']}: score it again (`dynamat score --run {path.parent}`)")


def _refuse_duplicates(rows: list[dict[str, Any]]) -> None:
    """Two completed runs of one entry (model and variant) on one system that are not replicas of a set: both
    rows were kept, so the model's means counted that system twice. Refused in one line naming both (a
    failed run beside a completed one is a failure row, in no mean)."""
    where: dict[tuple[str, str], list[str]] = {}
    for r in rows:
        if r.get("replica_index") is None and r["status"] == "completed":
            where.setdefault((r["model"], r["system"]), []).append(r["source"])
    for (model, system), paths in where.items():
        if len(paths) > 1:
            more = f" (and {len(paths) - 2} more)" if len(paths) > 2 else ""
            raise ResultsError(f"two results for {model}/{system}: {paths[0]} and {paths[1]}{more}; a report counts "
                               "each model on each system once: give one of them (independent runs of one model "
                               "and system are replicas: `dynamat run --replicas R`)")


def _run_failure_row(rec: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """The row of an exploded or failed run that has no score (too few frames to score, or not scored):
    its status and error from run.json, no metrics, as a campaign's failure score gives it."""
    from dynamat.scoring.run import model_facts, variant_keys

    raw = {"model": rec.get("model") or run_dir.parent.name, "system": rec.get("system") or run_dir.name,
           "system_class": (rec.get("system_info") or {}).get("class"), "status": rec.get("status"),
           "error": rec.get("error") or f"run status {rec.get('status')!r}", "replica_index": rec.get("replica"),
           **model_facts(rec)}
    raw.update(variant_keys(rec.get("protocol") or {}))  # the entry it fails in (_variant)
    row = _normalise_row(raw, run_dir / RUN_JSON)
    row["curves_path"] = None
    return row


def _variant(raw: dict[str, Any]) -> str:
    """What makes a run another entry than the model's classical NVT one through i-PI: a dispersion
    correction (+D3), the NPT ensemble (+NPT), path integrals (+PI<beads>), ASE's Nose-Hoover chain engine
    (+ASE). Rows of one entry are averaged; of two, never."""
    nbeads = _int(raw.get("nbeads")) or 1
    return (("+D3" if raw.get("dispersion") else "") + ("+NPT" if raw.get("ensemble") == "npt" else "")
            + (f"+PI{nbeads}" if nbeads > 1 else "") + ("+ASE" if raw.get("engine") == "ase" else ""))


def _normalise_row(raw: dict[str, Any], path: Path) -> dict[str, Any]:
    row: dict[str, Any] = {
        # a model with a driver-side dispersion correction (score.json "dispersion") is another model
        "model": str(raw.get("model") or path.parent.parent.name) + _variant(raw),
        "system": str(raw.get("system") or path.parent.name),
        "system_class": raw.get("system_class") or "unknown",
        "model_label": _label(raw.get("model_label")),
        "training_set": _label(raw.get("training_set"), 200),  # a models file allows 200 characters
        "tier": _tier(raw.get("tier")),
        "n_params": _int(raw.get("n_params")),
        "status": str(raw.get("status") or "unknown"),
        "source": str(path),  # the file the row was read from (named when two rows claim one run)
    }
    for key in METRIC_KEYS:
        row[key] = _num(raw.get(key))
        row[f"{key}_unc"] = _num(raw.get(f"{key}_unc"))
        row[f"{key}_floor"] = _num(raw.get(f"{key}_floor"))
    for key, (where, _, _) in MATBENCH_TABLE.items():  # each key from the object the table names
        obj = raw.get(where)
        row[f"mb_{key}"] = _num(obj.get(key)) if isinstance(obj, dict) else None
    for key in NPT_METRIC_KEYS:  # variable-cell runs only (None elsewhere)
        row[key] = _num(raw.get(key))
        row[f"{key}_unc"] = _num(raw.get(f"{key}_unc"))
        row[f"{key}_floor"] = _num(raw.get(f"{key}_floor"))
    for key in NPT_EXTRA_KEYS:
        row[key] = _num(raw.get(key))
    row["matched_duration_fs"] = _num(raw.get("matched_duration_fs"))  # replicas of one set compare alike
    row["pressure_hist_error_pct_half_bins"] = _num(raw.get("pressure_hist_error_pct_half_bins"))
    row["pressure_hist_error_pct_double_bins"] = _num(raw.get("pressure_hist_error_pct_double_bins"))
    curves = curves_beside(path)
    row["curves_path"] = str(curves) if curves.is_file() else None
    row["error"] = raw.get("error")
    row["replica_index"] = _int(raw.get("replica_index"))
    if row["status"] in UNFINISHED_STATUSES:  # how far it got (a run by hand's steps_done is its frames' end)
        row["last_frame_step"] = _int(raw.get("last_frame_step", raw.get("steps_done")))
        row["steps_requested"] = _int(raw.get("steps_requested"))
    return row


def _run_label(row: dict[str, Any]) -> str:
    replica = f" r{row['replica_index']}" if row.get("replica_index") is not None else ""
    return f"{row['model']}/{row['system']}{replica}"


#: a number in a note, with its unit where one follows: what differs between two runs' notes of one kind
_NOTE_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?:e[-+]?\d+)?(?: (?:K|GPa|fs|%))?")


def score_notes(said: Iterable[tuple[str, Any]]) -> tuple[list[str], list[str]]:
    """What the scorer said of each run (score.json ``notes``: a run off its temperature, held at another
    pressure than its reference, a side without stress), so that a number read from the tables is read with
    its caveat: one line per note, naming the runs it is said of. Notes that differ only in their numbers (each
    run's own temperature or pressure) are one line, the numbers that differ given after each run's name and
    shown as … in the text: a campaign of 255 runs reads a line per kind, not per run. ``incomplete:`` notes
    are left to the unfinished-runs line. Returns the lines and the runs they name."""
    kinds: dict[tuple[str, ...], list[tuple[str, list[str]]]] = {}
    for run, notes in said:
        for note in notes if isinstance(notes, list) else ():
            if isinstance(note, str) and note.strip() and not note.startswith("incomplete:"):
                text = " ".join(note.split())
                kinds.setdefault(tuple(_NOTE_NUMBER.split(text)), []).append((run, _NOTE_NUMBER.findall(text)))
    lines = []
    for parts, members in kinds.items():
        columns = list(zip(*(numbers for _, numbers in members)))
        varies = [len(set(c)) > 1 for c in columns]
        text = parts[0] + "".join(("…" if v else c[0]) + p for v, c, p in zip(varies, columns, parts[1:]))
        runs = [run + (f" ({', '.join(n for n, v in zip(numbers, varies) if v)})" if any(varies) else "")
                for run, numbers in members]
        lines.append(f"{', '.join(dict.fromkeys(runs))}: {text}")
    noted = list(dict.fromkeys(run for members in kinds.values() for run, _ in members))
    return lines, noted


REPLICA_SUFFIXES = ("_replica_sd", "_replica_unc")


def has_replicas(rows: Iterable[dict[str, Any]]) -> bool:
    """Whether any row aggregates replicas (then the tables carry the replica columns)."""
    return any(r.get("n_replicas") for r in rows)


def _aggregate_replicas(rows: list[dict[str, Any]], notes: list[str]) -> list[dict[str, Any]]:
    """Each (model, system) with replica scores becomes one row of its completed replicas; failed
    replicas stay rows of their own (counted and listed as failures). Rows without replicas pass."""
    from dynamat.scoring.replicas import aggregate_replicas

    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["system"]), []).append(r)
    out: list[dict[str, Any]] = []
    for (model, system), members in groups.items():
        if all(r.get("replica_index") is None for r in members):
            out += members
            continue
        done = sorted((r for r in members if r["status"] == "completed"), key=lambda r: r.get("replica_index") or 0)
        failed = [r for r in members if r["status"] != "completed"]
        if done:
            agg = aggregate_replicas(done)
            agg["curves_path"] = done[0].get("curves_path")
            out.append(agg)
        out += failed
        if failed and done:
            notes.append(f"{model}/{system}: {len(failed)} of {len(members)} replicas did not complete; the "
                         f"replica mean is over the other {len(done)}")
        spans = [r["matched_duration_fs"] for r in done if r.get("matched_duration_fs") is not None]
        if spans and max(spans) > 1.01 * min(spans):  # e.g. one replica extended with --steps, not the others
            notes.append(f"{model}/{system}: its replicas were scored over {min(spans):g} to {max(spans):g} fs; "
                         "errors of trajectories of different lengths are averaged as if alike: run every "
                         "replica to one length (`dynamat run --replicas R --steps N`)")
    return out


# ----------------------------------------------------------------------------- helpers
def _label(value: Any, max_chars: int = 120) -> str | None:
    """A model's label (registry or models file, e.g. "CHGNet 0.3.0") or other text fact, one line, or None."""
    return " ".join(value.split())[:max_chars] or None if isinstance(value, str) else None


def _tier(value: Any) -> int | str | None:
    """A paper tier 1-4; the registry's ``"test"`` for analytic test potentials (EMT, LJ); else None."""
    if isinstance(value, str) and value.strip().lower() == "test":
        return "test"
    return _int(value)


def tier_key(tier: int | str | None) -> tuple:
    """Sort key: paper tiers in order, then test potentials, then untiered models."""
    return (tier is None, isinstance(tier, str), tier if isinstance(tier, int) else 0)


def tier_label(tier: int | str | None) -> str:
    if tier is None:
        return "untiered"
    return "test potential" if tier == "test" else f"Tier {tier}"


def model_order(rows: Iterable[dict[str, Any]]) -> list[str]:
    """Models ordered by tier (untiered last), then parameter count (unknown last), then
    name: the x order of the paper's tier bar charts."""
    info: dict[str, tuple] = {}
    for r in rows:
        info.setdefault(r["model"], (r.get("tier"), r.get("n_params")))
    def key(m: str):
        tier, n = info[m]
        return (*tier_key(tier), n is None, n or 0, m.lower())
    return sorted(info, key=key)


def mean_over_systems(rows: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """``key``, ``<key>_unc``, ``<key>_floor`` and ``<key>_n`` of ``rows``' mean (rules: module docstring)."""
    vals = [r[key] for r in rows if r.get(key) is not None]
    out: dict[str, Any] = {key: None, f"{key}_unc": None, f"{key}_floor": None, f"{key}_n": len(vals)}
    if has_replicas(rows):  # the replica standard error of the mean propagates as the bootstrap one
        out[f"{key}_replica_unc"] = None
    if not vals:
        return out
    used = [r for r in rows if r.get(key) is not None]
    out[key] = float(np.mean(vals))
    for unc_key in (f"{key}_unc", f"{key}_replica_unc") if has_replicas(rows) else (f"{key}_unc",):
        uncs = [r.get(unc_key) for r in used]
        if all(u is not None for u in uncs):
            out[unc_key] = float(math.sqrt(sum(u * u for u in uncs)) / len(uncs))
    floors = [r.get(f"{key}_floor") for r in used]
    if all(f is not None for f in floors):
        out[f"{key}_floor"] = float(np.mean(floors))
    return out


def _failed_summary(rows: list[dict[str, Any]]) -> str:
    return "; ".join(f"{r['system']}:{r['status']}" for r in rows if is_failure(r))


def _unfinished_at(row: dict[str, Any]) -> str:
    at, of = row.get("last_frame_step"), row.get("steps_requested")
    return f"{row['status']}, frames to step {at} of {of}" if at is not None and of else row["status"]


# ----------------------------------------------------------------------------- tables
@dataclass
class Table:
    """A named table: ``columns`` fixes the order; ``rows`` are dicts."""

    name: str
    title: str
    columns: list[str]
    rows: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)
    #: columns shown in Markdown/HTML (values merged with ``<col>_unc`` as "x ± u")
    display: list[str] | None = None


def system_table(results: Results) -> Table:
    """One row per (model, system), in model order."""
    order = {m: i for i, m in enumerate(results.models)}
    rows = sorted(results.rows, key=lambda r: (order[r["model"]], r["system_class"], r["system"]))
    reps = has_replicas(rows)
    cols = ["model", "system", "system_class", "tier", "n_params", "status", "model_label"] + (["n_replicas"] if reps else [])
    for k in METRIC_KEYS:
        cols += [k, f"{k}_unc", f"{k}_floor"] + ([k + x for x in REPLICA_SUFFIXES] if reps else [])
    out = [{c: r.get(c) for c in cols} for r in rows]
    disp = ["model", "model_label", "system", "system_class", "tier", "status", *METRIC_KEYS]
    return Table("per_model_system", "Per model and system", cols, out,
                 notes=list(results.notes), display=disp)


def model_table(results: Results, external: dict[str, dict[str, Any]] | None = None) -> Table:
    """One row per model: means over its completed systems (see module docstring)."""
    rows_out = []
    for model in results.models:
        mrows = [r for r in results.rows if r["model"] == model]
        done = [r for r in mrows if r["status"] == "completed"]
        row: dict[str, Any] = {
            "model": model,
            "model_label": next((r["model_label"] for r in mrows if r.get("model_label")), None),
            "training_set": next((r["training_set"] for r in mrows if r.get("training_set")), None),
            "tier": mrows[0]["tier"],
            "n_params": mrows[0]["n_params"],
            "n_systems": len(mrows),
            "n_completed": len(done),
            "n_failed": sum(is_failure(r) for r in mrows),
            "failed_runs": _failed_summary(mrows),
        }
        for key in METRIC_KEYS:
            if key in COMPOSITE_KEYS:
                continue
            row.update(mean_over_systems(done, key))
        for key in MATBENCH_RUN_KEYS:
            vals = [r[f"mb_{key}"] for r in done if r.get(f"mb_{key}") is not None]
            row[f"mb_{key}"] = float(np.mean(vals)) if vals else None
            row[f"mb_{key}_n"] = len(vals)
        comp = combined_scores(*(row[k] for k in OBSERVABLE_KEYS),
                               *(row[f"{k}_unc"] for k in OBSERVABLE_KEYS))
        if has_replicas(done):  # Eq. 11-12's uncertainty propagated from the replica ones too
            comp_rep = combined_scores(*(row[k] for k in OBSERVABLE_KEYS),
                                       *(row.get(f"{k}_replica_unc") for k in OBSERVABLE_KEYS))
            for key in COMPOSITE_KEYS:
                row[f"{key}_replica_unc"] = comp_rep[f"{key}_unc"]
        for key in COMPOSITE_KEYS:
            row[key] = comp[key]
            row[f"{key}_unc"] = comp[f"{key}_unc"]
            row[f"{key}_floor"] = None
            row[f"{key}_n"] = min(row[f"{k}_n"] for k in OBSERVABLE_KEYS)
            sysmean = mean_over_systems(done, key)
            row[f"{key}_mean_over_systems"] = sysmean[key]
            row[f"{key}_mean_over_systems_n"] = sysmean[f"{key}_n"]
        if external is not None:
            ext = external.get(model) or {}
            row.update((k, ext.get(k)) for k in EXTERNAL_METRICS)
        rows_out.append(row)
    reps = has_replicas(results.rows)
    cols = ["model", "tier", "n_params", "n_systems", "n_completed", "n_failed", "failed_runs", "model_label",
            "training_set"]
    for k in METRIC_KEYS:
        cols += [k, f"{k}_unc", f"{k}_floor", f"{k}_n"] + ([f"{k}_replica_unc"] if reps else [])
        if k in COMPOSITE_KEYS:
            cols += [f"{k}_mean_over_systems", f"{k}_mean_over_systems_n"]
    for key in MATBENCH_RUN_KEYS:
        cols += [f"mb_{key}", f"mb_{key}_n"]
    if external is not None:
        cols += list(EXTERNAL_METRICS)
    disp = ["model", "model_label", "tier", "n_params", "n_completed", "n_failed", *METRIC_KEYS]
    if external is not None:
        disp += list(EXTERNAL_METRICS)
    notes = [
        "Means over completed systems only; null metrics are skipped (the *_n columns count "
        "the systems used). E_RPV/L_RPV: Eq. 11/12 applied to the model-mean E_RDF, E_P, "
        "E_VDOS.",
        *noise_notes(rows_out),
        *results.notes,
    ]
    return Table("per_model", "Per model (means over systems)", cols, rows_out, notes=notes,
                 display=disp)


def noise_notes(model_rows: list[dict[str, Any]], keys=("pressure_hist_error_pct", "rdf_error_pct",
                                                         "vdos_error_pct")) -> list[str]:
    """For each observable error: the models within the noise floor of the best one, which this
    benchmark cannot tell apart (the floor: the same error between the reference's two halves, or
    between its replicas). With replicas, a model also ties when its difference from the best is
    within the uncertainty of that difference, each side's the larger of the bootstrap and the
    replica uncertainty; the note says which one that was."""
    from dynamat.scoring.replicas import larger_uncertainty

    notes = []
    for key in dict.fromkeys(keys):
        rows = [r for r in model_rows if r.get(key) is not None]
        if len(rows) < 2:
            continue
        best = min(rows, key=lambda r: r[key])
        floors = [r.get(f"{key}_floor") for r in rows if r.get(f"{key}_floor") is not None]
        if not floors:
            continue
        floor = max(floors)
        m = METRIC_BY_KEY[key]
        if not any(r.get(f"{key}_replica_unc") is not None for r in rows):
            tied = [r["model"] for r in rows if r[key] - best[key] <= floor]
            if len(tied) > 1:
                notes.append(f"{m.short}: {', '.join(tied)} lie within the noise floor "
                             f"({floor:.3g} {m.unit}) of the best ({best['model']}); "
                             "their differences are not resolved.")
            continue
        u_best, _ = larger_uncertainty(best, key)
        tied, used = [], set()
        for r in rows:
            u, src = larger_uncertainty(r, key)
            if r[key] - best[key] <= max(floor, math.hypot(u or 0.0, u_best or 0.0)):
                tied.append(r["model"])
                used |= {src, larger_uncertainty(best, key)[1]} - {None}
        if len(tied) > 1:
            notes.append(f"{m.short}: {', '.join(tied)} lie within the noise floor ({floor:.3g} {m.unit}) or the "
                         f"uncertainty of their difference of the best ({best['model']}), the larger of bootstrap "
                         f"and replica spread ({' and '.join(sorted(used)) or 'none'}); their differences are "
                         "not resolved.")
    return notes


def tier_median_table(models: Table) -> Table:
    """Median over the models of each tier of their model means (paper's dashed lines)."""
    tiers = sorted({r["tier"] for r in models.rows}, key=tier_key)
    out = []
    for t in tiers:
        trows = [r for r in models.rows if r["tier"] == t]
        row: dict[str, Any] = {"tier": t, "n_models": len(trows),
                               "models": ", ".join(r["model"] for r in trows)}
        for key in METRIC_KEYS:
            vals = [r[key] for r in trows if r.get(key) is not None]
            row[key] = float(np.median(vals)) if vals else None
            row[f"{key}_n"] = len(vals)
        out.append(row)
    cols = ["tier", "n_models", "models"]
    for k in METRIC_KEYS:
        cols += [k, f"{k}_n"]
    return Table("tier_medians", "Tier medians (median over models of model means)", cols, out,
                 notes=["The *_n columns count the models of the tier that have the metric."],
                 display=["tier", "n_models", *METRIC_KEYS])


def by_class_table(results: Results) -> Table:
    """Model means restricted to each material class."""
    classes = _class_order(results.rows)
    out = []
    for cls in classes:
        for model in results.models:
            mrows = [r for r in results.rows if r["model"] == model and r["system_class"] == cls]
            if not mrows:
                continue
            done = [r for r in mrows if r["status"] == "completed"]
            row: dict[str, Any] = {"system_class": cls, "model": model, "model_label": mrows[0]["model_label"],
                                   "tier": mrows[0]["tier"], "n_params": mrows[0]["n_params"],
                                   "n_systems": len(mrows), "n_failed": sum(is_failure(r) for r in mrows)}
            for key in METRIC_KEYS:
                row.update(mean_over_systems(done, key))
            out.append(row)
    cols = ["system_class", "model", "tier", "n_systems", "n_failed", "model_label", "n_params"]
    for k in METRIC_KEYS:
        cols += [k, f"{k}_unc", f"{k}_floor", f"{k}_n"]
    return Table("per_class_model", "Per material class and model (means over the class's systems)",
                 cols, out, notes=["Per-system E_RPV/L_RPV values averaged within the class."],
                 display=["system_class", "model", "model_label", "tier", "n_failed", *METRIC_KEYS])


def class_tier_table(by_class: Table) -> Table:
    """Per class and tier: mean and median over models of the per-class model means
    (the paper quotes tier-wise class means in Sec. II)."""
    classes = list(dict.fromkeys(r["system_class"] for r in by_class.rows))
    out = []
    for cls in classes:
        crows = [r for r in by_class.rows if r["system_class"] == cls]
        tiers = sorted({r["tier"] for r in crows}, key=tier_key)
        for t in tiers:
            trows = [r for r in crows if r["tier"] == t]
            row: dict[str, Any] = {"system_class": cls, "tier": t, "n_models": len(trows)}
            for key in METRIC_KEYS:
                vals = [r[key] for r in trows if r.get(key) is not None]
                row[f"{key}_mean"] = float(np.mean(vals)) if vals else None
                row[f"{key}_median"] = float(np.median(vals)) if vals else None
            out.append(row)
    cols = ["system_class", "tier", "n_models"]
    for k in METRIC_KEYS:
        cols += [f"{k}_mean", f"{k}_median"]
    return Table("per_class_tier", "Per material class and tier (over models)", cols, out,
                 display=["system_class", "tier", "n_models", *(f"{k}_mean" for k in METRIC_KEYS)])


def _class_order(rows: Iterable[dict[str, Any]]) -> list[str]:
    present = list(dict.fromkeys(r["system_class"] for r in rows))
    known = [c for c in SYSTEM_CLASSES if c in present]
    return known + sorted(c for c in present if c not in SYSTEM_CLASSES)


def npt_table(results: Results) -> Table | None:
    """One row per variable-cell (NPT) run: its cell errors with uncertainty and floor, the mean volumes and
    densities; None when no score has them (a fixed-cell report keeps its tables)."""
    rows = [r for r in results.rows if any(r.get(k) is not None for k in NPT_METRIC_KEYS)]
    if not rows:
        return None
    order = {m: i for i, m in enumerate(results.models)}
    rows.sort(key=lambda r: (order[r["model"]], r["system"]))
    cols = ["model", "system", "status"]
    for k in NPT_METRIC_KEYS:
        cols += [k, f"{k}_unc", f"{k}_floor"]
    cols += list(NPT_EXTRA_KEYS)
    return Table("npt_cell", "Variable-cell (NPT) runs: volume, density and lattice", cols,
                 [{c: r.get(c) for c in cols} for r in rows],
                 notes=["NPT runs only (not the paper's fixed-cell protocol): mean-volume and lattice errors against "
                        "the reference's mean cell, Eq. 9 on the volume histogram; ± the block-bootstrap "
                        "uncertainty, *_floor the same error between the reference's two halves.",
                        *thermal_expansion_notes(rows)],
                 display=["model", "system", "status", *NPT_METRIC_KEYS, *NPT_EXTRA_KEYS[:2]])


def thermal_expansion_notes(rows: list[dict[str, Any]]) -> list[str]:
    """α_V = d ln⟨V⟩/dT (:func:`dynamat.metrics.volume.thermal_expansion_coefficient`) of each model and of its
    reference, for every system whose completed NPT runs span two or more temperatures; systems are the same
    material when their names differ only in the ``_<T>K`` part, which gives the temperature."""
    from dynamat.catalogue import temperature_from_name
    from dynamat.metrics.volume import thermal_expansion_coefficient

    groups: dict[tuple[str, str], list] = {}
    for r in rows:
        t = temperature_from_name(r["system"])
        if r["status"] == "completed" and t is not None and r.get("volume_mean_mlip_A3") and r.get("volume_mean_ref_A3"):
            material = re.sub(r"(^|[_-])\d+(?:\.\d+)?K(?=$|[_-])", r"\1", r["system"])
            groups.setdefault((r["model"], material), []).append((t, r["volume_mean_mlip_A3"], r["volume_mean_ref_A3"]))
    notes = []
    for (model, material), pts in groups.items():
        t, v_mlip, v_ref = (np.array(x, dtype=float) for x in zip(*pts))
        if len(np.unique(t)) < 2:
            continue
        a_m, a_r = thermal_expansion_coefficient(t, v_mlip), thermal_expansion_coefficient(t, v_ref)
        notes.append(f"thermal expansion of {material} ({model}, {t.min():g}-{t.max():g} K): alpha_V = {a_m:.3g} /K, "
                     f"reference {a_r:.3g} /K ({100 * abs(a_m - a_r) / abs(a_r) if a_r else float('nan'):.3g} % off)")
    return notes


def build_tables(results: Results, external: dict[str, dict[str, Any]] | None = None) -> dict[str, Table]:
    from dynamat.report.beads import beads_table

    models = model_table(results, external)
    by_class = by_class_table(results)
    tables = [models, tier_median_table(models), class_tier_table(by_class), by_class,
              system_table(results), npt_table(results), beads_table(results.beads)]
    out = {t.name: t for t in tables if t is not None}
    assert set(out) <= set(TABLE_NAMES), "a new table's name belongs in TABLE_NAMES (what a rerun replaces)"
    return out


# ----------------------------------------------------------------------------- writing
def fmt(value: Any, sig: int = 4) -> str:
    """Compact human format: ints as is, floats to ``sig`` significant digits."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value == 0:
            return "0"
        if abs(value) >= 1e5 or abs(value) < 1e-3:
            return f"{value:.{sig - 1}e}"
        return f"{value:.{sig}g}"
    return str(value)


def display_cell(row: dict[str, Any], col: str) -> str:
    text = fmt(row.get(col))
    unc = row.get(f"{col}_unc")
    if text and unc is not None:
        text += f" ± {fmt(unc, 2)}"
    rep = row.get(f"{col}_replica_unc")
    if text and rep is not None:  # replicas: the standard error from their spread, beside the bootstrap one
        text += f" (replicas ± {fmt(rep, 2)})"
    return text


EXTRA_HEADERS = {"model_label": "label", **{key: header for key, (_, header) in EXTERNAL_METRICS.items()}}


def header_label(col: str) -> str:
    if col in EXTRA_HEADERS:
        return EXTRA_HEADERS[col]
    base = col
    suffix = ""
    for s in ("_mean", "_median"):
        if col.endswith(s) and col[: -len(s)] in METRIC_BY_KEY:
            base, suffix = col[: -len(s)], f" ({s[1:]})"
    if base in METRIC_BY_KEY:
        m = METRIC_BY_KEY[base]
        return f"{m.short} [{m.unit}]{suffix}" if m.unit else f"{m.short}{suffix}"
    return col


_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(value: Any) -> Any:
    """A text cell a spreadsheet would run as a formula (``=HYPERLINK(...)``) gets a leading quote."""
    if isinstance(value, str) and value.startswith(_FORMULA_PREFIXES):
        return "'" + value
    return value


def markdown_safe(text: str) -> str:
    """Text for a Markdown table cell: HTML and Markdown control characters escaped, one line."""
    text = " ".join(str(text).splitlines())
    for ch in "\\`*_[]<>|#!":
        text = text.replace(ch, "\\" + ch)
    return text


def to_csv(table: Table) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([csv_safe(c) for c in table.columns])
    for r in table.rows:
        w.writerow(["" if r.get(c) is None else (repr(r[c]) if isinstance(r[c], float) else csv_safe(r[c]))
                    for c in table.columns])
    return buf.getvalue()


def to_markdown(table: Table) -> str:
    cols = table.display or table.columns
    lines = [f"### {table.title}", ""]
    lines += [f"> {markdown_safe(n)}" for n in table.notes]
    if table.notes:
        lines.append("")
    lines.append("| " + " | ".join(header_label(c) for c in cols) + " |")
    lines.append("|" + "|".join("---" for _ in cols) + "|")
    for r in table.rows:
        lines.append("| " + " | ".join(markdown_safe(display_cell(r, c)) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def to_json(table: Table) -> str:
    return json.dumps({"name": table.name, "title": table.title, "notes": table.notes,
                       "columns": table.columns,
                       "rows": [{c: r.get(c) for c in table.columns} for r in table.rows]},
                      indent=1, allow_nan=False)


def write_table(table: Table, outdir: str | Path) -> list[Path]:
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext, fn in (("csv", to_csv), ("md", to_markdown), ("json", to_json)):
        p = outdir / f"{table.name}.{ext}"
        p.write_text(fn(table))
        paths.append(p)
    return paths
