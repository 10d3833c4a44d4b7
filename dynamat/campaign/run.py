"""``dynamat campaign``: the (model x system) matrix as one job per pair, locally or as a SLURM array.

    dynamat campaign --models emt,lj --systems A,B --executor local --jobs 2 --steps 1000 --out camp
    dynamat campaign --models mace-mp-0,chgnet --systems ... --executor slurm --partition gpu \\
        --gpus-per-task 1 --driver-env mace-mp-0=/envs/mace/bin/dynamat-driver --time-ps 20

Each pair is brought to a final, scored state by one task (``dynamat.campaign.jobs.run_task``):
a pair whose run.json says completed (or exploded: a result, never retried) and whose score.json
agrees is skipped; an unfinished run is resumed from i-PI's RESTART/checkpoint; a failed run is
retried up to ``--max-retries`` times (resumed where it can be, else started again); after the
run, ``<out>/<model>/<system>/score.json`` is written with the code of ``dynamat score``. When
every pair is final, the report (``dynamat report``) is written to ``<out>/report/``.

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
import os
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from dynamat.campaign.jobs import (
    FINAL_RUN_STATUSES,
    REPORT_DIR,
    Job,
    assign_tasks,
    campaign_dir,
    pair_status,
    read_json,
    state_path,
    write_job_list,
    write_json,
)
from dynamat.errors import DynamatError
from dynamat.names import check_name

__all__ = ["CampaignResult", "per_model", "run_campaign", "split_names"]

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


def split_names(csv: str, kind: str) -> list[str]:
    seen: list[str] = []
    for x in csv.split(","):
        x = x.strip()
        if x and x not in seen:
            seen.append(check_name(kind, x))
    if not seen:
        raise DynamatError(f"no {kind}s given")
    return seen


def per_model(items: tuple[str, ...], models: list[str], flag: str) -> dict[str, str]:
    out = {}
    for it in items:
        m, sep, val = it.partition("=")
        if not sep or not m.strip() or not val.strip():
            raise DynamatError(f"{flag} wants MODEL=VALUE, got {it!r}")
        if m.strip() not in models:
            raise DynamatError(f"{flag} names model {m.strip()!r}, which is not in --models")
        out[m.strip()] = val.strip()
    return out


def run_campaign(models: list[str], systems: list[str], out: Path, *, reference: Path | None = None,
                 executor: str = "local", jobs: int | None = None, steps: int | None = None,
                 time_ps: float | None = None, seed: int = 12345, max_retries: int = 2,
                 driver_env: dict[str, str] | None = None, driver_args: dict[str, str] | None = None,
                 socket_mode: str = "unix", partition: str | None = None, gpus_per_task: int | None = None,
                 cpus_per_task: int = 2, time_limit: str | None = None, sbatch_args: tuple[str, ...] = (),
                 template: Path | None = None, inet_nodes: int = 2, wait: bool = True, report: bool = True,
                 poll_s: float | None = None, stream=None, pack: int = 1) -> CampaignResult:
    """The work of ``dynamat campaign``; see the module docstring."""
    import shlex

    from dynamat.reference import default_reference, load_system as _load_system

    t_start = time.monotonic()
    if executor == "local":
        ignored = [name for name, v in (("--partition", partition), ("--gpus-per-task", gpus_per_task),
                                        ("--time-limit", time_limit), ("--sbatch-arg", sbatch_args),
                                        ("--template", template), ("--no-wait", not wait)) if v]
        if ignored:
            print(f"campaign: {', '.join(ignored)} only apply to --executor slurm; ignored", file=stream or sys.stderr)
    if steps is not None and time_ps is not None:
        raise DynamatError("give --steps or --time-ps, not both")
    if steps is not None and steps <= 0 or time_ps is not None and time_ps <= 0:
        raise DynamatError("--steps and --time-ps must be positive")
    if max_retries < 0:
        raise DynamatError("--max-retries must be >= 0")
    if jobs is not None and jobs < 1:
        raise DynamatError("--jobs must be >= 1")
    if pack < 1:
        raise DynamatError("--pack must be >= 1")
    if pack > 1 and socket_mode != "unix":
        raise DynamatError("--pack shares one driver between runs on one node: use it with --socket unix")
    driver_env, driver_args = driver_env or {}, driver_args or {}
    out = Path(out).resolve()
    reference = Path(reference or default_reference()).resolve()
    stream = stream or sys.stderr
    system_steps, protocol_steps = {}, {}
    mismatched: list[str] = []
    from dynamat.runner import steps_for_time  # the one --time-ps conversion

    for s in systems:
        _, entry, _ = _load_system(reference, s)  # an unknown system fails here, before any job
        protocol_steps[s] = entry.protocol.steps
        system_steps[s] = steps_for_time(time_ps, entry.protocol.timestep_fs) if time_ps is not None else steps

    pairs: list[PairView] = []
    todo: list[Job] = []
    adopted: list[PairView] = []
    action_of: dict[str, str] = {}
    old_jobs: dict[str, PairView] = {}
    for m in models:
        for s in systems:
            p = PairView(m, s)
            pairs.append(p)
            action, status = pair_status(out / m / s)
            action_of[p.label] = action
            if action == "skip":
                p.status, p.skipped = status, True
                asked = system_steps[s] or protocol_steps[s]
                done_len = (read_json(out / m / s / "run.json") or {}).get("steps_requested")
                if status == "completed" and done_len is not None and done_len != asked:
                    mismatched.append(f"{p.label} ({done_len} steps)")
                continue
            st = read_json(state_path(out, m, s)) or {}
            if executor == "slurm" and st.get("phase") in ACTIVE_PHASES and st.get("slurm_job"):
                p.slurm_job = st["slurm_job"]
                old_jobs[p.label] = p
                continue
            todo.append(Job(index=0, model=m, system=s, reference=str(reference), out=str(out),
                            steps=system_steps[s], seed=seed, max_retries=max_retries, socket=socket_mode,
                            driver_cmd=driver_env.get(m), driver_args=tuple(shlex.split(driver_args.get(m, "")))))
    if old_jobs:  # tasks of an earlier submission still queued or running: wait for them, do not resubmit
        from dynamat.campaign import slurm as campaign_slurm

        alive = campaign_slurm.queue_states(sorted({p.slurm_job.split("_")[0] for p in old_jobs.values()}))
        for label, p in old_jobs.items():
            state = alive.get(p.slurm_job, ("", ""))[0]
            if state in campaign_slurm.PENDING_STATES | campaign_slurm.RUNNING_STATES:
                adopted.append(p)
            else:
                p.slurm_job = None
                todo.append(Job(index=0, model=p.model, system=p.system, reference=str(reference), out=str(out),
                                steps=system_steps[p.system], seed=seed, max_retries=max_retries,
                                socket=socket_mode, driver_cmd=driver_env.get(p.model),
                                driver_args=tuple(shlex.split(driver_args.get(p.model, "")))))
    for i, j in enumerate(todo):
        j.index = i
    assign_tasks(todo, pack)
    result = CampaignResult(out=out, pairs=pairs)
    cdir = campaign_dir(out)
    cdir.mkdir(parents=True, exist_ok=True)
    actions: dict[str, int] = {}
    for lab in [p.label for p in pairs if p.skipped] + [j.label for j in todo]:
        actions[action_of[lab]] = actions.get(action_of[lab], 0) + 1
    plan = ", ".join(f"{n} {a}" for a, n in sorted(actions.items()))
    print(f"campaign: {len(models)} models x {len(systems)} systems = {len(pairs)} pairs ({plan}"
          + (", " if actions and adopted else "") + (f"{len(adopted)} already in SLURM's queue" if adopted else "") + f") -> {out}", file=stream, flush=True)

    if mismatched:
        print(f"campaign: kept {len(mismatched)} completed run(s) of another length than asked: "
              + ", ".join(mismatched[:5]) + (" ..." if len(mismatched) > 5 else "")
              + "; use another --out (or `dynamat run --overwrite`) to redo them", file=stream, flush=True)
    summary = Summary(out, pairs, stream)
    with _sigterm_as_interrupt():
        _execute(executor, todo, adopted, pairs, summary, result, out, cdir, stream, jobs=jobs, wait=wait,
                 poll_s=poll_s, socket_mode=socket_mode, partition=partition, gpus_per_task=gpus_per_task,
                 cpus_per_task=cpus_per_task, time_limit=time_limit, sbatch_args=sbatch_args, template=template,
                 inet_nodes=inet_nodes)
    if not result.waited:
        result.wall_s = time.monotonic() - t_start
        return result
    summary.show(force=summary.tty)
    summary.close()

    if report and any((out / p.model / p.system / "score.json").exists() for p in pairs):
        t_rep = time.monotonic()
        result.report = _report(out, stream)
        result.report_s = time.monotonic() - t_rep
    result.wall_s = time.monotonic() - t_start
    write_json(cdir / "last_campaign.json", {
        "wall_s": result.wall_s, "report_s": result.report_s, "executor": executor, "job_ids": result.job_ids,
        "pairs": {p.label: {"status": p.status, "skipped": p.skipped, "error": p.error,
                            **({} if p.skipped else pair_timings(out, p.model, p.system))} for p in pairs},
    })
    bad = [p for p in pairs if p.status not in FINAL_RUN_STATUSES]
    if bad:
        raise DynamatError(f"{len(bad)} of {len(pairs)} pairs did not complete: "
                           + "; ".join(f"{p.label} ({p.error or p.status})" for p in bad[:5])
                           + (" ..." if len(bad) > 5 else "") + f"; logs in {cdir / 'logs'}; rerun to retry")
    return result


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


def _execute(executor, todo, adopted, pairs, summary, result, out, cdir, stream, *, jobs, wait, poll_s, socket_mode,
             partition, gpus_per_task, cpus_per_task, time_limit, sbatch_args, template, inet_nodes) -> None:
    manifest = None
    if todo:
        stamp = time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}"
        manifest = write_job_list(cdir / f"jobs-{stamp}.tsv", todo)
    if executor == "local":
        _run_local(todo, manifest, pairs, summary, jobs or 1, poll_s or 0.5)
    elif executor == "slurm":
        from dynamat.campaign import slurm as campaign_slurm

        if todo:
            script = cdir / f"array-{manifest.stem.removeprefix('jobs-')}.sbatch"
            values = campaign_slurm.script_values(
                n_jobs=len({j.task for j in todo}), jobs_at_once=jobs, manifest=manifest, log_dir=cdir / "logs", workdir=out,
                job_name=f"dynamat-{out.name}"[:64], cpus_per_task=cpus_per_task, partition=partition,
                gpus_per_task=gpus_per_task, time_limit=time_limit, sbatch_args=sbatch_args, inet_nodes=inet_nodes)
            tpl = campaign_slurm.template_path(socket_mode, template)
            script.write_text(campaign_slurm.render(tpl.read_text(), values))
            (cdir / "logs").mkdir(exist_ok=True)
            t_submit = time.time()
            job_id = campaign_slurm.submit(script)
            result.job_ids.append(job_id)
            result.submitted = len(todo)
            by_label = {p.label: p for p in pairs}
            for j in todo:
                p = by_label[j.label]
                p.slurm_job = f"{job_id}_{j.task}"
                write_json(state_path(out, j.model, j.system),
                           {"model": j.model, "system": j.system, "phase": "queued", "slurm_job": p.slurm_job,
                            "times": {"submit": t_submit}})
            subs = read_json(cdir / "submissions.json") or {"submissions": []}
            subs["submissions"].append({"job_id": job_id, "script": str(script), "manifest": str(manifest),
                                        "time": t_submit, "pairs": [j.label for j in todo]})
            write_json(cdir / "submissions.json", subs)
            n_tasks = len({j.task for j in todo})
            print(f"campaign: submitted {n_tasks} array task(s) for {len(todo)} pair(s) as SLURM job {job_id} ({script})"
                  f"{campaign_slurm.env_note()}", file=stream, flush=True)
        result.job_ids += sorted({p.slurm_job.split("_")[0] for p in adopted})
        if not wait:
            result.waited = False
            if result.job_ids:
                print(f"campaign: not waiting; follow with `squeue -j {','.join(result.job_ids)}`, rerun this "
                      f"command to wait for the tasks and write the report", file=stream, flush=True)
            return
        _wait_slurm(out, [p for p in pairs if p.slurm_job and not p.skipped], pairs, summary, result.job_ids,
                    poll_s or 2.0)
    else:
        raise DynamatError(f"unknown executor {executor!r}")


def _run_local(todo: list[Job], manifest: Path | None, pairs: list[PairView], summary: Summary, k: int,
               poll_s: float) -> None:
    """Runs the tasks (a pair each, or a pack of pairs sharing one driver), ``k`` processes at a time."""
    by_label = {p.label: p for p in pairs}
    tasks: dict[int, list[Job]] = {}
    for j in todo:
        tasks.setdefault(j.task if j.task >= 0 else j.index, []).append(j)
    queue = deque(tasks.items())
    running: dict[int, tuple[list[Job], subprocess.Popen, Path]] = {}
    log_dir = campaign_dir(summary.out) / "logs"
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
                    st_file = state_path(summary.out, job.model, job.system)
                    old = read_json(st_file) or {}
                    write_json(st_file, {**{k_: v for k_, v in old.items() if k_ not in ("phase", "times")},
                                         "model": job.model, "system": job.system, "phase": "queued",
                                         "slurm_job": None, "times": {"submit": t0}})
                first = jobs[0]
                log = log_dir / (f"{first.model}__{first.system}.log" if len(jobs) == 1 else
                                 f"{first.model}__pack{task}.log")
                with open(log, "ab") as fh:
                    proc = subprocess.Popen(
                        [sys.executable, "-m", "dynamat", "campaign-task", "--manifest", str(manifest), "--index",
                         str(task)],
                        stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
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


def _report(out: Path, stream) -> Path | None:
    """Writes ``<out>/report/`` with ``dynamat report``'s code unless it is newer than every score.json."""
    rep = out / REPORT_DIR
    page = rep / "report.html"
    scores = list(out.glob("*/*/score.json"))
    if page.exists() and all(s.stat().st_mtime <= page.stat().st_mtime for s in scores):
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
    print(text, file=stream, flush=True)
    return page
