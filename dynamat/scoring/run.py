"""Score a run folder (or an MD trajectory made elsewhere) against its reference system.

:func:`score_run` is what ``dynamat score``, ``dynamat demo`` and every campaign task use: it reads
the reference and the MLIP trajectory, drops a relaxed-cell protocol's burn-in, matches durations
(inside :func:`dynamat.scoring.score_md`) and returns the flat score dict, plus the compared curves
that :func:`write_score` stores beside ``score.json`` as ``curves.npz`` for the report's panels.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path

import numpy as np

from dynamat.errors import DynamatError
from dynamat.io import read_extxyz, read_reference
from dynamat.io.reference_h5 import reference_replicas
from dynamat.io.results import write_json_atomic
from dynamat.io.run_folder import bead_files, input_info, read_bead_trajectory, read_run_trajectory
from dynamat.layout import SCORE_JSON, RunFolder, curves_beside
from dynamat.metrics.matbench import MATBENCH_KEYS, angle_visitor, matbench_md_metrics
from dynamat.reference import load_system, reference_pressure_said
from dynamat.scoring.core import score_md
from dynamat.scoring.replicas import reference_replica_floor
from dynamat.scoring.run_system import atoms_mismatch, reference_for_run, run_defaults, run_overrides
from dynamat.trajectory import MIN_MATCHED_FRAMES

SCORE_FILE = SCORE_JSON  # the names stay importable from here


def check_dt_fs(dt_fs, what: str = "--dt-fs") -> float:
    """A frame interval in fs: positive and finite, else a one-line error."""
    try:
        x = float(dt_fs)
    except (TypeError, ValueError):
        raise DynamatError(f"{what} must be a number of fs, got {dt_fs!r}") from None
    if not math.isfinite(x) or x <= 0:
        raise DynamatError(f"{what} must be a positive, finite time in fs, got {dt_fs!r}")
    return x


def min_scorable_steps(system) -> int:
    """The fewest MD steps of ``system``'s protocol (a :class:`dynamat.catalogue.System`) whose saved frames
    the scorer can compare: ``MIN_MATCHED_FRAMES`` frames on each side over the matched duration, the
    frames counted from the first one past the protocol's burn-in, the reference's side at its own frame
    interval (``system.reference_dt_fs``) when that is the longer one."""
    p = system.protocol
    stride, dt = int(p.stride), float(p.timestep_fs)
    frame_fs = stride * dt
    span_fs = (MIN_MATCHED_FRAMES - 1) * max(frame_fs, float(system.reference_dt_fs or 0.0))
    intervals = math.ceil(span_fs / frame_fs - 1e-9)
    first = math.ceil(float(p.burn_in_ps) * 1000.0 / dt / stride - 1e-9) * stride  # as _run_trajectory drops it
    return first + intervals * stride


def check_scorable_length(asked, time_ps: float | None = None) -> None:
    """Refuses, in one line naming the minimum, an MD length too short to score: ``asked`` holds
    (System, MD steps) pairs, the steps from ``--steps``, or from ``--time-ps`` (``time_ps`` given, the
    minimum is then named in ps). A command that runs and then scores (a campaign, the demo) asks
    before any MD; one length serves every system, so the minimum named is the largest of theirs."""
    asked = [(s, n) for s, n in asked if n is not None]
    if all(n >= min_scorable_steps(s) for s, n in asked):
        return

    def need_of(s) -> float:  # the minimum in the unit the length was given in
        return min_scorable_steps(s) * (1.0 if time_ps is None else float(s.protocol.timestep_fs) / 1000.0)

    s, n = max(asked, key=lambda sn: need_of(sn[0]))
    why = (f"the scorer compares at least {MIN_MATCHED_FRAMES} frames and {s.name}'s protocol saves one every "
           f"{s.protocol.stride} steps")
    if time_ps is None:
        raise DynamatError(f"--steps {n} is too short to score: {why}; give --steps {min_scorable_steps(s)} or more")
    raise DynamatError(f"--time-ps {time_ps:g} is {n} steps of {s.name}, too short to score: {why}; give "
                       f"--time-ps {need_of(s):.6g} or more")


def run_meta(run_dir: Path) -> dict:
    """run.json of a run folder, {} for a run by hand (none)."""
    rj = RunFolder(run_dir).run_json
    if not rj.exists():
        return {}
    try:
        meta = json.loads(rj.read_text())
    except ValueError:
        raise DynamatError(f"{rj} is not valid JSON") from None
    if not isinstance(meta, dict):
        raise DynamatError(f"{rj} is not a JSON object")
    return meta


def _run_trajectory(run_dir: Path, meta: dict):
    try:
        mlip = read_run_trajectory(run_dir)
    except (DynamatError, OSError, ValueError, IndexError, KeyError) as exc:
        status = meta.get("status", "unknown")
        why = f" ({status}: {meta['error']})" if meta.get("error") else f" (status {status})"
        raise DynamatError(f"the run in {run_dir} has no MD frames to score{why}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    beads = None
    if len(bead_files(run_dir)) > 1:  # path integrals: the quantum g(r) is over all beads
        beads = read_bead_trajectory(run_dir)
        keep = np.isin(beads.steps, mlip.steps)
        beads = beads[np.flatnonzero(keep)]
        mlip = mlip[np.flatnonzero(np.isin(mlip.steps, beads.steps))]
    proto = meta.get("protocol", {})
    burn_in_steps = proto.get("burn_in_ps", 0.0) * 1000.0 / proto.get("timestep_fs", 1.0)
    if burn_in_steps and mlip.steps is not None:  # relaxed-cell protocol: score after the burn-in
        mlip = mlip[np.flatnonzero(mlip.steps >= burn_in_steps)]
        if mlip.n_frames == 0:
            raise DynamatError(f"the run in {run_dir} ends before its {proto['burn_in_ps']:g} ps burn-in "
                               f"(step {burn_in_steps:.0f}): no frames after it to score; run it longer")
        if beads is not None:
            beads = beads[np.flatnonzero(beads.steps >= burn_in_steps)]
    return mlip, beads, meta


def matbench_object(ref, mlip, shared: dict | None = None) -> dict:
    """Matbench-discovery's six per-system keys (its own definitions, :mod:`dynamat.metrics.matbench`);
    None where it gives NaN (no stress on a side) or cannot compute (too few frames). ``shared``:
    score_md's RDF passes with Matbench's angle counters in them (:func:`score_with_matbench`)."""
    try:
        vals = matbench_md_metrics(ref, mlip, shared=shared)
    except ValueError as exc:
        return {**dict.fromkeys(MATBENCH_KEYS), "note": f"not computed: {exc}"}
    return {k: (None if v is None or not math.isfinite(v) else float(v)) for k, v in vals.items()}


def score_with_matbench(ref, mlip, **kwargs) -> dict:
    """:func:`score_md` with its ``matbench`` object, one neighbour pass per side for both: Matbench's
    bond-angle counters ride in score_md's RDF pass, whose counts its RDF reuses where they are the
    same pass (the same bits; :func:`dynamat.metrics.matbench.matbench_md_metrics`)."""
    visitors = {k: angle_visitor(t.numbers, t.cells, t.pbc) for k, t in (("ref", ref), ("mlip", mlip))}
    passes: dict = {}
    res = score_md(ref, mlip, pair_visitors=visitors, shared=passes, **kwargs)
    res["matbench"] = matbench_object(ref, mlip, {"ref": passes.get("ref"), "pred": passes.get("mlip")})
    return res


def _file_version(path) -> tuple[int, int]:
    st = Path(path).stat()
    return st.st_mtime_ns, st.st_size


@lru_cache(maxsize=16)
def _replica_floor(reference: str, version: tuple[int, int], system: str, others: tuple[str, ...],
                   duration_fs: float, dims: int, npt: bool) -> dict:
    """The reference-replica floor, computed once per reference file version, system and matched
    duration: every model of a campaign is scored against the same replicas, and each pair costs a
    score_md. The file's mtime and size in the key: a rewritten file is read again."""
    ref0 = read_reference(reference, system).check(f"{reference}:{system}")
    rest = [read_reference(reference, g).check(f"{reference}:{g}") for g in others]
    return reference_replica_floor(ref0, rest, duration_fs, dims=dims, npt=npt)


def is_npt(meta: dict, mlip) -> bool:
    """A variable-cell run: run.json says ``ensemble npt``, or (a trajectory made elsewhere) its cell changes."""
    if meta:
        return (meta.get("protocol") or {}).get("ensemble") == "npt"
    v = np.abs(np.linalg.det(mlip.cells))
    return float(np.ptp(v)) > 1e-6 * float(np.mean(v))


MODEL_FACTS = ("tier", "n_params", "model_label", "model_family", "training_set")


def model_facts(meta: dict) -> dict:
    """The model's registry facts from run.json: its own fields, else (a run.json written before
    it had them) the driver's timing file that it keeps in ``driver_timings``."""
    facts = {k: meta.get(k) for k in MODEL_FACTS}
    timings = meta.get("driver_timings")
    served = timings[0].get("model") if timings and isinstance(timings[0], dict) else None
    if isinstance(served, dict):
        from_driver = {"tier": served.get("tier"), "n_params": served.get("n_params"),
                       "model_label": served.get("human_name"), "model_family": served.get("family"),
                       "training_set": served.get("training_set")}
        facts = {k: from_driver[k] if v is None else v for k, v in facts.items()}
    dispersion = meta.get("dispersion") or (served.get("dispersion") if isinstance(served, dict) else None)
    if dispersion:  # only then: a score.json without a correction keeps its keys
        facts["dispersion"] = dispersion
    return facts


def scores_this_run(score: dict, rec: dict) -> bool:
    """Whether a score.json ``score`` is of the run run.json ``rec`` records now, not of the shorter run it
    was before a larger --steps extended it (by ``steps_done``; a score or record without it, from before
    scores recorded their step, is taken as of this run)."""
    scored, done = score.get("steps_done"), rec.get("steps_done")
    return scored is None or done is None or scored == done


def variant_keys(protocol: dict) -> dict:
    """score.json's keys that set a run apart from the model's classical NVT runs through i-PI, from run.json's
    ``protocol``: ``ensemble`` npt, ``nbeads`` P > 1, ``engine`` ase (a Nose-Hoover chain, not i-PI's SVR).
    A report never averages runs that differ in them (its entries ``<model>+NPT``, ``+PI<P>``, ``+ASE``)."""
    out: dict = {}
    if protocol.get("ensemble") == "npt":
        out["ensemble"] = "npt"
    if int(protocol.get("nbeads") or 1) > 1:
        out["nbeads"] = int(protocol["nbeads"])
    if protocol.get("engine", "ipi") != "ipi":
        out["engine"] = protocol["engine"]
    return out


def run_progress(run_dir: Path, meta: dict, mlip) -> dict:
    """How far a run by hand (no run.json: ``dynamat inputs``, then i-PI and a driver) got, from its input.xml
    and frames: ``steps_requested`` (total_steps) and ``steps_done`` (the last frame's step). Frames that end
    before the last step input.xml saves are a run stopped part-way: status ``incomplete`` and a note, so a
    report does not count it as a complete one. A ``dynamat run`` folder's run.json says all this already
    (its status stands); no input.xml: nothing."""
    if meta:
        return _unfinished_progress(meta, mlip)
    info = input_info(run_dir)
    total, stride = info.get("total_steps"), info.get("stride")
    if total is None or stride is None or mlip.steps is None or not len(mlip.steps):
        return {}
    done, last = int(np.max(mlip.steps)), (total // stride) * stride
    out = {"steps_requested": total, "steps_done": done}
    if done < last:
        out["status"] = "incomplete"
        out["notes"] = [f"incomplete: the frames end at step {done} of the {total} steps input.xml asks for (the "
                        f"run stopped part-way, or is still running); scored over the {mlip.n_frames} frames there"]
    return out


def unfinished_run(meta: dict) -> bool:
    """run.json of a run stopped part-way: killed, pre-empted or cancelled (still ``running``: no process
    wrote its end) or interrupted (Ctrl-C). A rerun of its command resumes it; it is no failure of the model."""
    status = meta.get("status")
    return status == "running" or (status == "failed" and str(meta.get("error") or "").startswith("interrupted"))


def _unfinished_progress(meta: dict, mlip) -> dict:
    """A ``dynamat run`` folder's progress: its run.json says it (its status stands), except for a run stopped
    part-way, whose run.json was written when it started: status ``incomplete``, ``last_frame_step`` from its
    frames (``steps_done`` stays run.json's: it names the run scored) and a note, as for a run by hand (a
    report leaves it out of the means without calling it a failure)."""
    if not unfinished_run(meta) or mlip.steps is None or not len(mlip.steps):
        return {}
    done, total = int(np.max(mlip.steps)), int(meta.get("steps_requested") or 0)
    return {"status": "incomplete", "last_frame_step": done,
            "notes": [f"incomplete: the frames end at step {done} of the {total} steps asked (the run was stopped "
                      f"part-way, or is still running; rerun its `dynamat run` command to resume); scored over "
                      f"the {mlip.n_frames} frames there"]}


#: the score keys a side without stress leaves None (E_P is one of Eq. 11-12's three errors)
PRESSURE_KEYS = ("pressure_mae_GPa", "pressure_hist_error_pct")
COMBINED_KEYS = ("E_RPV_pct", "L_RPV_pct")


def pressure_notes(ref, mlip, run_dir: Path | None) -> dict:
    """Why a score has no pressure errors (a side without stress): the scorecard's ``<key>_note`` after each
    n/a and a ``notes`` entry, so a None is not read as a scorer's failure or a missing file."""
    why = []
    if ref.stress is None:
        why.append("the reference holds no stress")
    if mlip.stress is None:
        why.append("the run saved no virial" if run_dir else "the trajectory holds no stress or virial")
    if not why:
        return {}
    text = " and ".join(why)
    out = {f"{k}_note": text for k in PRESSURE_KEYS}
    out.update((f"{k}_note", f"no E_P: {text}") for k in COMBINED_KEYS)
    out["notes"] = [f"pressure: {text}"]
    return out


def _other_pressure_note(meta: dict, start_cell: dict | None) -> str | None:
    """A run held at another pressure than its reference was (the file's barostat, or its frames' mean pressure
    beyond 3 standard errors): its volume, lattice and pressure errors then measure the two pressures' states."""
    run_p, said = (meta.get("protocol") or {}).get("pressure_GPa"), reference_pressure_said(start_cell)
    if run_p is None or said is None:
        return None
    se = start_cell.get("reference_pressure_se_GPa")
    if abs(float(run_p) - start_cell["reference_pressure_GPa"]) <= (3 * se if se is not None else 1e-9):
        return None
    return (f"pressure: the run was held at {float(run_p):g} GPa, the reference at {said[0]} GPa{said[1]}: its "
            "volume, lattice and pressure errors (Eqs. 7-9) compare two states, not only the model")


def _off_temperature_note(res: dict, mlip, from_run: bool) -> str:
    """What a failed equipartition check of the scored frames means: a run folder's frame interval is i-PI's own,
    so its run is off its temperature; a trajectory's interval is the --dt-fs given, which it then contradicts."""
    t_kin, target = res["kinetic_temperature_mlip_K"], mlip.temperature_K
    said = f"the frames' kinetic temperature is {t_kin:.4g} K against {target:g} K (equipartition)"
    if from_run:
        return (f"temperature: {said}, at the frame interval i-PI wrote: the run is off its temperature (an unstable "
                "model, heating its thermostat does not remove, or too short to settle); its errors compare "
                "another state")
    implied = mlip.dt_fs * (t_kin / target) ** 0.5
    return (f"temperature: {said} at --dt-fs {mlip.dt_fs:g}: the frames look about {implied:.2g} fs apart at "
            f"{target:g} K; check --dt-fs (the VDOS, Eq. 10, scales with it), or the run is off its temperature")


def score_run(reference: Path | None, system: str | None, run_dir: Path | None = None, trajectory: Path | None = None,
              dt_fs: float | None = None, model: str | None = None, curves: dict | None = None) -> dict:
    """Paper Eq. 3-12 errors of a run folder or an extxyz trajectory against ``system``'s reference.

    ``system``/``reference`` None: the run's own (:func:`~dynamat.scoring.run_system.run_defaults`).
    ``curves``: a dict that receives the compared g(r), VDOS and pressure samples."""
    meta = run_meta(Path(run_dir)) if run_dir else {}
    system, reference = run_defaults(run_dir, system, reference, meta)  # the run's own where not given
    try:
        reference, sys_entry, _ = load_system(reference, system, **run_overrides(meta, system))
    except DynamatError:
        if run_dir:  # where the file lacks --system, the line names the run's own system (its run.json)
            reference_for_run(reference, system, Path(run_dir), meta)
        raise
    beads = None
    if run_dir:
        mlip, beads, meta = _run_trajectory(Path(run_dir), meta)
    elif trajectory:
        if dt_fs is None:
            raise DynamatError("--trajectory needs --dt-fs, the time between its frames in fs")
        mlip, meta = read_extxyz(trajectory, check_dt_fs(dt_fs)), {}
        mlip.check(str(trajectory))
    else:
        raise DynamatError("give --run DIR or --trajectory FILE --dt-fs X")
    ref = read_reference(reference, system).check(f"{reference}:{system}")
    if mlip.n_atoms != ref.n_atoms or (mlip.numbers != ref.numbers).any():
        raise DynamatError(atoms_mismatch(reference, system, run_dir, meta))
    if (mlip.pbc != ref.pbc).any():
        raise DynamatError(f"the trajectory is periodic along {mlip.pbc.tolist()} but the reference along "
                           f"{ref.pbc.tolist()} (an extxyz without a Lattice= line has no cell)")
    if mlip.dt_fs is None:
        raise DynamatError("the trajectory has no frame interval; pass --dt-fs")
    if mlip.temperature_K is None:
        mlip.temperature_K = sys_entry.temperature_K  # the target: lets the frame-interval check speak
    replicas = reference_replicas(reference, system)
    npt = is_npt(meta, mlip)
    try:
        res = score_with_matbench(ref, mlip, dims=sys_entry.dims, curves=curves, mlip_beads=beads, npt=npt)
        if len(replicas) > 1:  # the floor from independent reference trajectories, not from halves
            res.update(_replica_floor(str(Path(reference).resolve()), _file_version(reference), system,
                                      tuple(replicas[1:]), res["matched_duration_fs"], sys_entry.dims,
                                      npt))
            res.update(floor_source="reference_replicas", n_reference_replicas=len(replicas))
    except ValueError as exc:  # too short, mismatched intervals, ...: the user's input, said in one line
        raise DynamatError(f"cannot score this trajectory: {exc}") from None
    progress = run_progress(Path(run_dir), meta, mlip) if run_dir else {}
    res.update(
        model=model or meta.get("model") or "unknown",
        system=system,
        system_class=sys_entry.system_class,
        status=progress.pop("status", None) or meta.get("status", "completed"),
        seconds_per_step=meta.get("seconds_per_step_median"),
        model_seconds_per_eval=meta.get("model_seconds_per_eval_median"),
        **model_facts(meta),
    )
    res.update(variant_keys(meta.get("protocol") or {}))
    if npt:  # a trajectory made elsewhere whose cell moves, too
        res["ensemble"] = "npt"
    why_no_p = pressure_notes(ref, mlip, run_dir)
    notes = progress.pop("notes", []) + why_no_p.pop("notes", [])
    if not npt and sys_entry.start_cell is not None:  # a fixed cell against a reference whose cell moves
        notes.append("pressure: the reference's cell moves (NPT) and this run's does not: the mean pressure (Eq. 7) "
                     "compares the reference's mean cell, the distribution (Eq. 9) two ensembles; --ensemble npt "
                     "runs the reference's")
    other_pressure = _other_pressure_note(meta, sys_entry.start_cell) if npt else None
    if other_pressure:
        notes.append(other_pressure)
    if res.get("frame_interval_suspect_mlip"):  # equipartition fails on the MLIP side's frames
        notes.append(_off_temperature_note(res, mlip, from_run=bool(run_dir)))
    res.update(why_no_p)
    res.update(progress)
    if notes:  # only then: a score without notes keeps the keys it had
        res["notes"] = notes
    if meta.get("steps_done") is not None:  # which run was scored: a report tells a score older than its run
        res.update(steps_done=meta["steps_done"], steps_requested=meta.get("steps_requested"))
    if meta.get("replica") is not None:  # one run of a --replicas set; the report aggregates the set
        res["replica_index"] = int(meta["replica"])
    if mlip.notes:  # what the reader dropped (an incomplete last frame of a killed run), said in the result too
        res["reader_notes"] = list(mlip.notes)
    return res


def write_score(res: dict, path: Path, curves: dict | None = None) -> Path:
    """``score.json`` at ``path`` and, when given, the curves beside it (:func:`~dynamat.layout.curves_beside`:
    ``curves.npz`` in a run folder, ``X.curves.npz`` for ``X.json``)."""
    path = write_json_atomic(path, res)
    if curves:
        target = curves_beside(path)
        tmp = target.with_name(target.name + ".tmp.npz")
        np.savez(tmp, **{k: np.asarray(v, dtype=float) for k, v in curves.items()})
        tmp.replace(target)
    return path
