"""``dynamat campaign``: the (model x system) matrix as one job per pair, locally or as a SLURM array.

    dynamat campaign --models emt,lj --systems A,B --executor local --jobs 2 --steps 1000 --out camp
    dynamat campaign --models mace-mp-0,chgnet --systems ... --executor slurm --partition gpu \\
        --gpus-per-task 1 --driver-env mace-mp-0=/envs/mace/bin/dynamat-driver --time-ps 20

Each pair is brought to a final, scored state by one task (``dynamat.campaign.jobs.run_task``):
a pair whose run.json says completed (or exploded: a result, never retried) and whose score.json
agrees is skipped; an unfinished run is resumed from i-PI's RESTART/checkpoint; a failed run is
retried up to ``--max-retries`` times (resumed where it can be, else started again); after the
run, ``<out>/<model>/<system>/score.json`` is written with the code of ``dynamat score``. When
every pair is final, the report (``dynamat report``) is written to ``<out>/report/``. A run there that
another model (its recorded ``served`` identity) or seed made is never kept or continued as this one's:
the campaign is refused in one line, before anything runs, naming those runs.

``--executor local`` runs ``--jobs K`` task processes at a time on this machine.
``--pack K`` makes a task of up to K pairs of one model: their i-PI runs share one driver process
(one model load, their structures batched into shared model calls; :mod:`dynamat.engines.pack`),
each pair still its own run folder, state and score; on SLURM one array task per pack.
``--executor slurm`` renders ``dynamat/templates/campaign_array.sbatch.in`` (one array task per pair,
indexing a tab-separated job list with SLURM_ARRAY_TASK_ID), submits it with ``sbatch --parsable``
and, unless ``--no-wait``, polls ``squeue`` until every task has ended. Rerunning the same command
later adopts still-queued tasks instead of submitting them again, then reports. Both print a live
summary: pairs done/running/failed/pending and the aggregate MD throughput.

A task is ``python -m dynamat campaign-task --manifest JOBS.tsv --index I`` (:mod:`dynamat.cli.campaign`).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dynamat import processes
from dynamat.campaign.jobs import (
    FINAL_RUN_STATUSES,
    Job,
    assign_tasks,
    campaign_dir,
    pair_status,
    read_json,
    state_path,
    write_job_list,
    write_json,
)
from dynamat.campaign.spec import CampaignSpec
from dynamat.errors import DynamatError
from dynamat.io.results import write_json_atomic
from dynamat.layout import CURVES_NPZ, RUN_JSON, SCORE_JSON, CampaignTree, RunFolder

__all__ = ["CampaignResult", "CampaignSpec", "run_campaign"]

from dynamat.campaign.summary import (  # noqa: E402
    ACTIVE_PHASES,
    PairView,
    Summary,
    _finished_message,
    _state_result,
    pair_timings,
)


# ---------------------------------------------------------------------------------- campaign
@dataclass
class CampaignResult:
    out: Path
    pairs: list[PairView]
    report: Path | None = None
    report_s: float | None = None
    job_ids: list[str] = field(default_factory=list)
    submitted: int = 0
    waited: bool = True
    wall_s: float = 0.0


@dataclass
class _Plan:
    """What the campaign does with each pair: skip it (final and scored), run it (``todo``: a job
    each), or wait for the SLURM task of an earlier submission that still has it (``adopted``)."""

    pairs: list[PairView] = field(default_factory=list)
    todo: list[Job] = field(default_factory=list)
    adopted: list[PairView] = field(default_factory=list)
    action_of: dict[str, str] = field(default_factory=dict)  # pair label -> pair_status's action
    mismatched: list[str] = field(default_factory=list)  # completed runs of another length or ensemble than asked
    further: list[str] = field(default_factory=list)  # replica folders beyond --replicas, of an earlier larger set


def run_campaign(spec: CampaignSpec, stream=None) -> CampaignResult:
    """The work of ``dynamat campaign``; see the module docstring."""
    t_start = time.monotonic()
    stream = stream or sys.stderr
    ignored = spec.slurm_only_options()
    if ignored:
        print(f"campaign: {', '.join(ignored)} only apply to --executor slurm; ignored", file=stream)
    plan = _plan(spec, *_steps_per_system(spec))
    result = CampaignResult(out=spec.out, pairs=plan.pairs)
    cdir = campaign_dir(spec.out)
    cdir.mkdir(parents=True, exist_ok=True)
    _print_plan(spec, plan, stream)
    summary = Summary(spec.out, plan.pairs, stream)
    with _sigterm_as_interrupt():
        _execute(spec, plan, summary, result, stream)
    if not result.waited:
        result.wall_s = time.monotonic() - t_start
        return result
    summary.show(force=summary.tty)
    summary.close()

    if spec.report and any(RunFolder.of(spec.out, p.model, p.folder).score_json.exists() for p in plan.pairs):
        t_rep = time.monotonic()
        result.report = _report(spec.out, stream)
        result.report_s = time.monotonic() - t_rep
    result.wall_s = time.monotonic() - t_start
    _record(spec, result)
    return result


def _steps_per_system(spec: CampaignSpec) -> tuple[dict[str, int | None], dict[str, int], dict[str, dict]]:
    """({system: MD steps asked, None for the protocol's}, {system: the protocol's steps}, {system: the ensemble
    its runs take, the spec's or its reference's own, as :func:`~dynamat.runner.ensemble_of`}); an unknown
    system fails here, before any job."""
    from dynamat.reference import load_system as _load_system
    from dynamat.runner import ensemble_of, steps_for_time  # the one --time-ps conversion
    from dynamat.scoring.run import check_scorable_length

    asked, protocol, ensemble, entries = {}, {}, {}, []
    for s in spec.systems:
        _, entry, _ = _load_system(spec.reference, s, **spec.ensemble)  # a slab under NPT fails here
        protocol[s], ensemble[s] = entry.protocol.steps, ensemble_of(asdict(entry.protocol))
        asked[s] = steps_for_time(spec.time_ps, entry.protocol.timestep_fs) if spec.time_ps is not None else spec.steps
        entries.append((entry, asked[s]))
    check_scorable_length(entries, spec.time_ps)  # every pair is scored: not run them all to fail there
    return asked, protocol, ensemble


def _plan(spec: CampaignSpec, steps_of: dict[str, int | None], protocol_steps: dict[str, int],
          ensembles: dict[str, dict]) -> _Plan:
    """Sorts the pairs into skipped, to run and adopted, and numbers the jobs and their tasks."""
    from dynamat.runner import ensemble_flags, ensemble_of

    plan = _Plan()
    waiting: list[PairView] = []  # an earlier submission's SLURM task had them
    others: list[str] = []  # runs kept or continued that another model or seed than asked made
    replicas = [None] if spec.replicas == 1 else list(range(spec.replicas))
    for m, s, k in ((m, s, k) for m in spec.models for s in spec.systems for k in replicas):
        p = PairView(m, s, replica=k)
        plan.pairs.append(p)
        run_dir = RunFolder.of(spec.out, m, p.folder).path
        want, ensemble = steps_of[s] or protocol_steps[s], ensembles[s]
        # a shorter completed run is extended to the length asked, as `dynamat run --steps` does
        action, status = pair_status(run_dir, want, ensemble)
        plan.action_of[p.label] = action
        if action in ("skip", "score", "resume", "extend"):
            other = _made_otherwise(run_dir, spec.job(m, s, want, k))
            if other:
                others.append(f"{p.label} ({other})")
        if action in ("skip", "score") and status == "completed":
            rec = read_json(RunFolder(run_dir).run_json) or {}
            done_len, done_ens = rec.get("steps_requested"), ensemble_of(rec.get("protocol") or {})
            if done_ens != ensemble:
                plan.mismatched.append(f"{p.label} ({ensemble_flags(done_ens)})")
            elif done_len is not None and done_len != want:
                plan.mismatched.append(f"{p.label} ({done_len} steps)")
        if action == "skip":
            p.status, p.skipped = status, True
            continue
        st = read_json(state_path(spec.out, m, p.folder)) or {}
        if spec.executor == "slurm" and st.get("phase") in ACTIVE_PHASES and st.get("slurm_job"):
            p.slurm_job = st["slurm_job"]
            waiting.append(p)
            continue
        plan.todo.append(spec.job(m, s, _job_steps(action, steps_of[s], want), k))
    if others:
        raise DynamatError(
            f"{spec.out} holds {len(others)} run(s) of another model or seed than asked, which this campaign would "
            "keep or continue and report as its own: " + ", ".join(others[:5]) + (" ..." if len(others) > 5 else "")
            + "; nothing was run. Rerun with the arguments they were run with, give another --out, or move those "
            "run folders away (`dynamat run --overwrite` replaces one)")
    if waiting:  # tasks of an earlier submission still queued or running: wait for them, do not resubmit
        from dynamat.campaign import slurm as campaign_slurm

        alive = campaign_slurm.queue_states(sorted({p.slurm_job.split("_")[0] for p in waiting}))
        for p in waiting:
            if alive.get(p.slurm_job, ("", ""))[0] in campaign_slurm.PENDING_STATES | campaign_slurm.RUNNING_STATES:
                plan.adopted.append(p)
            else:
                p.slurm_job = None
                plan.todo.append(spec.job(p.model, p.system, _job_steps(plan.action_of[p.label], steps_of[p.system],
                                                                     steps_of[p.system] or protocol_steps[p.system]),
                                          p.replica))
    from dynamat.replicas import further_replicas

    for m, s in ((m, s) for m in spec.models for s in spec.systems):
        plan.further += [f"{m}/{d.name}" for d in further_replicas(spec.out, m, s, spec.replicas)]
    for i, j in enumerate(plan.todo):
        j.index = i
    assign_tasks(plan.todo, spec.pack)
    return plan


def _made_otherwise(run_dir: Path, job: Job) -> str | None:
    """What in the run recorded in ``run_dir`` differs from what ``job`` would run: the served model's
    identity (computed as the runner computes it: a models file's calculator, model options, dtype,
    dispersion) or the seed, e.g. ``model ase.calculators.emt:EMT``; None when it is the same."""
    from dynamat.runner import model_differences, model_identity

    rec = read_json(RunFolder(run_dir).run_json) or {}
    said = [was for was, _ in model_differences(rec, model_identity(job.driver_model or job.model, job.driver_args))]
    if isinstance(rec.get("seed"), int) and rec["seed"] != job.seed:
        said.append(f"--seed {rec['seed']}")
    return ("run with " + ", ".join(said)) if said else None


def _job_steps(action: str, asked: int | None, want: int) -> int | None:
    """The job's --steps: as asked (None: the protocol's), but explicit for an extension, as the
    runner extends a completed run only to an explicit --steps."""
    return want if action == "extend" else asked


def _print_plan(spec: CampaignSpec, plan: _Plan, stream) -> None:
    actions: dict[str, int] = {}
    for lab in [p.label for p in plan.pairs if p.skipped] + [j.label for j in plan.todo]:
        actions[plan.action_of[lab]] = actions.get(plan.action_of[lab], 0) + 1
    what = ", ".join(f"{n} {a}" for a, n in sorted(actions.items()))
    queued = f"{len(plan.adopted)} already in SLURM's queue" if plan.adopted else ""
    reps = f" x {spec.replicas} replicas" if spec.replicas > 1 else ""
    print(f"campaign: {len(spec.models)} models x {len(spec.systems)} systems{reps} = {len(plan.pairs)} {'runs' if reps else 'pairs'} ({what}"
          + (", " if actions and queued else "") + f"{queued}) -> {spec.out}", file=stream, flush=True)
    if plan.mismatched:
        print(f"campaign: kept {len(plan.mismatched)} completed run(s) of another length or ensemble than asked: "
              + ", ".join(plan.mismatched[:5]) + (" ..." if len(plan.mismatched) > 5 else "")
              + "; use another --out (or `dynamat run --overwrite`) to redo them", file=stream, flush=True)
    if plan.further:
        print(f"campaign: {len(plan.further)} replica run(s) beyond --replicas {spec.replicas} are left from an earlier "
              "set, and the report averages them with these: " + ", ".join(plan.further[:5])
              + (" ..." if len(plan.further) > 5 else ""), file=stream, flush=True)


def _record(spec: CampaignSpec, result: CampaignResult) -> None:
    """Writes ``last_campaign.json``; raises one DynamatError line if any pair is not final."""
    pairs = result.pairs
    write_json(CampaignTree(spec.out).last_campaign_json, {
        "wall_s": result.wall_s, "report_s": result.report_s, "executor": spec.executor, "job_ids": result.job_ids,
        "pairs": {p.label: {"status": p.status, "skipped": p.skipped, "error": p.error,
                            **({} if p.skipped else pair_timings(spec.out, p.model, p.folder))} for p in pairs},
    })
    bad = [p for p in pairs if p.status not in FINAL_RUN_STATUSES]
    if bad:
        raise DynamatError(f"{len(bad)} of {len(pairs)} pairs did not complete: "
                           + "; ".join(f"{p.label} ({p.error or p.status})" for p in bad[:5])
                           + (" ..." if len(bad) > 5 else "") + f"; logs in {CampaignTree(spec.out).logs}; "
                           "mend what an error names, then rerun to retry")


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM to the campaign acts like Ctrl-C: local tasks are stopped (keeping their RESTART),
    SLURM tasks are left running."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt()

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _execute(spec: CampaignSpec, plan: _Plan, summary: Summary, result: CampaignResult, stream) -> None:
    manifest = None
    if plan.todo:
        stamp = time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}"
        manifest = write_job_list(CampaignTree(spec.out).job_list(stamp), plan.todo)
    if spec.executor == "local":
        _run_local(plan.todo, manifest, plan.pairs, summary, spec.jobs or 1, spec.poll_s or 0.5)
        return
    if plan.todo:
        _submit_slurm(spec, plan, manifest, result, stream)
    result.job_ids += sorted({p.slurm_job.split("_")[0] for p in plan.adopted})
    if not spec.wait:
        result.waited = False
        if result.job_ids:
            print(f"campaign: not waiting; follow with `squeue -j {','.join(result.job_ids)}`, rerun this "
                  f"command to wait for the tasks and write the report", file=stream, flush=True)
        return
    _wait_slurm(spec.out, [p for p in plan.pairs if p.slurm_job and not p.skipped], plan.pairs, summary,
                result.job_ids, spec.poll_s or 2.0)


def _submit_slurm(spec: CampaignSpec, plan: _Plan, manifest: Path, result: CampaignResult, stream) -> None:
    """Renders the array script for the job list ``manifest``, submits it and records each pair as queued."""
    from dynamat.campaign import slurm as campaign_slurm

    todo = plan.todo
    n_tasks = len({j.task for j in todo})
    script = CampaignTree(spec.out).array_script(manifest.stem.removeprefix("jobs-"))
    values = campaign_slurm.script_values(
        n_jobs=n_tasks, jobs_at_once=spec.jobs, manifest=manifest, log_dir=CampaignTree(spec.out).logs, workdir=spec.out,
        job_name=f"dynamat-{spec.out.name}"[:64], cpus_per_task=spec.cpus_per_task, partition=spec.partition,
        gpus_per_task=spec.gpus_per_task, time_limit=spec.time_limit, sbatch_args=spec.sbatch_args,
        inet_nodes=spec.inet_nodes)
    tpl = campaign_slurm.template_path(spec.socket_mode, spec.template)
    script.write_text(campaign_slurm.render(tpl.read_text(), values))
    CampaignTree(spec.out).logs.mkdir(exist_ok=True)
    t_submit = time.time()
    job_id = campaign_slurm.submit(script)
    result.job_ids.append(job_id)
    result.submitted = len(todo)
    by_label = {p.label: p for p in plan.pairs}
    for j in todo:
        p = by_label[j.label]
        p.slurm_job = f"{job_id}_{j.task}"
        write_json(state_path(spec.out, j.model, j.folder),
                   {"model": j.model, "system": j.system, "phase": "queued", "slurm_job": p.slurm_job,
                    "times": {"submit": t_submit}})
    subs = read_json(CampaignTree(spec.out).submissions_json) or {"submissions": []}
    subs["submissions"].append({"job_id": job_id, "script": str(script), "manifest": str(manifest),
                                "time": t_submit, "pairs": [j.label for j in todo]})
    write_json(CampaignTree(spec.out).submissions_json, subs)
    print(f"campaign: submitted {n_tasks} array task(s) for {len(todo)} pair(s) as SLURM job {job_id} ({script})"
          f"{campaign_slurm.env_note()}", file=stream, flush=True)


def _run_local(todo: list[Job], manifest: Path | None, pairs: list[PairView], summary: Summary, k: int,
               poll_s: float) -> None:
    """Runs the tasks (a pair each, or a pack of pairs sharing one driver), ``k`` processes at a time."""
    by_label = {p.label: p for p in pairs}
    tasks: dict[int, list[Job]] = {}
    for j in todo:
        tasks.setdefault(j.task if j.task >= 0 else j.index, []).append(j)
    queue = deque(tasks.items())
    running: dict[int, tuple[list[Job], subprocess.Popen, Path]] = {}
    log_dir = CampaignTree(summary.out).logs
    log_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // k))
    summary.show(force=True)
    try:
        while queue or running:
            while queue and len(running) < k:
                task, jobs = queue.popleft()
                t0 = time.time()
                for job in jobs:
                    st_file = state_path(summary.out, job.model, job.folder)
                    old = read_json(st_file) or {}
                    write_json(st_file, {**{k_: v for k_, v in old.items() if k_ not in ("phase", "times")},
                                         "model": job.model, "system": job.system, "phase": "queued",
                                         "slurm_job": None, "times": {"submit": t0}})
                first = jobs[0]
                tree = CampaignTree(summary.out)
                log = (tree.pair_log(first.model, first.folder) if len(jobs) == 1 else
                       tree.pack_task_log(first.model, task))
                # processes.start: its own process group, and SIGTERM when the campaign dies however it dies
                # (a SIGKILLed campaign left its --pack task computing and holding the pairs' locks)
                proc = processes.start([sys.executable, "-m", "dynamat", "campaign-task", "--manifest", str(manifest),
                                        "--index", str(task)], Path.cwd(), log,
                                       env={**env, "DYNAMAT_TASK_T0": repr(t0)})
                running[task] = (jobs, proc, log)
                for job in jobs:
                    by_label[job.label].status = "running"
            for task, (jobs, proc, log) in list(running.items()):
                if proc.poll() is None:
                    continue
                del running[task]
                for job in jobs:
                    p = by_label[job.label]
                    status, err = _state_result(summary.out, p)
                    if status is None:
                        from dynamat.processes import last_line

                        status = "failed"
                        err = f"task exited with status {proc.returncode}: " + last_line(log, "no output")
                    p.status, p.error = status, err
                    summary.event(_finished_message(summary.out, p))
            summary.show()
            time.sleep(poll_s)
    except KeyboardInterrupt:
        summary.event(f"campaign: interrupted; stopping {len(running)} running task(s) (they keep their "
                      "RESTART: rerun to resume)")
        import signal

        for _, proc, _ in running.values():
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 60
        for _, proc, _ in running.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        raise


def _wait_slurm(out: Path, tracked: list[PairView], pairs: list[PairView], summary: Summary, job_ids: list[str],
                poll_s: float) -> None:
    from dynamat.campaign import slurm as campaign_slurm

    grace_s = 20.0  # a task that left the queue may need a moment before its state file says done
    left = {p.label: p for p in tracked}
    try:
        while left:
            q = campaign_slurm.queue_states(job_ids)
            _cancel_never_startable(out, q, left, summary)
            for label, p in list(left.items()):
                status, err = _state_result(out, p)
                if status is not None:
                    p.status, p.error = status, err
                    del left[label]
                    summary.event(_finished_message(out, p))
                    continue
                state, reason = q.get(p.slurm_job, ("", ""))
                if state in campaign_slurm.PENDING_STATES:
                    p.status, p.lost_since = "pending", None
                elif state in campaign_slurm.RUNNING_STATES:
                    p.status, p.lost_since = "running", None
                else:  # ended (or aged out of squeue) without a final state file
                    now = time.monotonic()
                    p.lost_since = p.lost_since or now
                    if now - p.lost_since > grace_s:
                        why = state or campaign_slurm.accounting_state(p.slurm_job) or "no longer in squeue"
                        p.status = "failed"
                        p.error = f"SLURM task {p.slurm_job} ended ({why}{', ' + reason if reason and reason != 'None' else ''}) before its pair was final"
                        del left[label]
                        summary.event(_finished_message(out, p))
            summary.show()
            if left:
                time.sleep(poll_s)
    except KeyboardInterrupt:
        summary.event(f"campaign: stopped waiting; SLURM job(s) {','.join(job_ids)} keep running. Rerun this command "
                      f"to wait for them and write the report; `scancel {' '.join(job_ids)}` stops them.")
        raise


def _cancel_never_startable(out: Path, queue: dict, left: dict, summary: Summary) -> None:
    """Fails and cancels the pairs whose task SLURM keeps pending for good: the job behind their ``--dependency``
    ended otherwise than it asks (the training job failed). Unless the cluster sets ``kill_invalid_depend``
    such a task stays in the queue forever, and the campaign would wait with it."""
    from dynamat.campaign import slurm as campaign_slurm

    dead = {label: p for label, p in left.items()
            if queue.get(p.slurm_job, ("", ""))[1] == campaign_slurm.NEVER_STARTS}
    if not dead:
        return
    campaign_slurm.cancel(sorted({p.slurm_job for p in dead.values()}))
    for label, p in dead.items():
        p.status = "failed"
        p.error = (f"SLURM task {p.slurm_job} can never start: a job its --dependency names did not end as asked "
                   f"({campaign_slurm.NEVER_STARTS}); cancelled it. Rerun behind a job that can still succeed")
        del left[label]
        summary.event(_finished_message(out, p))


#: beside the report: what it was made from (:func:`_report_inputs`)
REPORT_INPUTS = ".report-inputs.json"


def _report_inputs(out: Path) -> list:
    """What a campaign report is made from: every pair's run.json, score.json and curves (path, size,
    mtime in ns). A pair run, rescored, failed anew, added or removed changes it."""
    found = []
    for name in (RUN_JSON, SCORE_JSON, CURVES_NPZ):
        for p in out.glob(f"*/*/{name}"):
            st = p.stat()
            found.append([str(p.relative_to(out)), st.st_size, st.st_mtime_ns])
    return sorted(found)


def _report(out: Path, stream) -> Path | None:
    """Writes ``<out>/report/`` with ``dynamat report``'s code unless it was made from the files the
    pairs hold now (a failure row or a removed pair changes no score.json, yet the report)."""
    rep = CampaignTree(out).report
    page = rep / "report.html"
    made_from = rep / REPORT_INPUTS
    inputs = _report_inputs(out)
    try:
        same = page.exists() and json.loads(made_from.read_text()) == inputs
    except (OSError, ValueError):
        same = False
    if same:
        print(f"campaign: report up to date: {page}", file=stream, flush=True)
        return page
    from dynamat.report import run_report
    from dynamat.report.external import ExternalError
    from dynamat.report.tables import ResultsError

    try:
        text = run_report(out, rep, None, "dynamat campaign report", formats=("png",))
    except (ResultsError, ExternalError) as exc:
        print(f"campaign: no report: {exc}", file=stream, flush=True)
        return None
    write_json_atomic(made_from, inputs)
    print(text, file=stream, flush=True)
    return page
