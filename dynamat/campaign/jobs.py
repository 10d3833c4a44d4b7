"""The pieces of ``dynamat campaign`` both executors share: the job list, the per-pair state and
the task that runs and scores one (model, system) pair.

A campaign folder ``<out>/`` holds the usual run folders ``<out>/<model>/<system>/`` (run.json,
score.json, ...), the report in ``<out>/report/`` and its own bookkeeping in ``<out>/_campaign/``:

* ``jobs-<stamp>.tsv`` - the job list of one submission, one tab-separated line per pair; a task
  (local subprocess or SLURM array task) reads the line of its index;
* ``state/<model>/<system>.json`` - what the task is doing (phase, MD step, times), rewritten
  atomically; the live summary and the benchmark read it;
* ``locks/``, ``logs/``, the rendered sbatch scripts and ``submissions.json``.
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import signal
import socket
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from dynamat.errors import DynamatError
from dynamat.files import write_text_atomic
from dynamat.layout import CampaignTree, RunFolder
from dynamat.names import replica_name

FINAL_RUN_STATUSES = ("completed", "exploded")  # results: never re-run by a campaign
JOB_COLUMNS = ("index", "model", "system", "reference", "out", "steps", "seed", "max_retries",
               "socket", "driver_cmd", "driver_args", "driver_model", "task", "replica", "ensemble")
#: the columns of the first released job lists (0.x): ``driver_model`` came later, before ``task``
JOB_COLUMNS_RELEASED = ("index", "model", "system", "reference", "out", "steps", "seed", "max_retries",
                        "socket", "driver_cmd", "driver_args", "task")


@dataclass
class Job:
    """One (model, system) pair and everything its task needs; one line of the job list."""

    index: int
    model: str
    system: str
    reference: str
    out: str
    steps: int | None  # None: the protocol's full length
    seed: int = 12345
    max_retries: int = 2
    socket: str = "unix"  # unix | inet (driver over TCP through dynamat.campaign.bridge)
    driver_cmd: str | None = None
    driver_args: tuple[str, ...] = ()
    #: the driver's --model when it is not ``model``: a models file's MODULE:CALLABLE (dynamat.models_file)
    driver_model: str | None = None
    #: the task (array index) that runs this pair: its own index, or a pack's number when K pairs of
    #: one model share one task and one driver (``dynamat campaign --pack K``)
    task: int = -1
    #: the index in a ``--replicas`` set (folder ``<system>_r<k>`` for k >= 1); None: a single run
    replica: int | None = None
    #: the campaign's ensemble options (``ensemble``, ``pressure_GPa``, ``barostat``, ``tau_barostat_fs``) as
    #: get_system's keywords; empty: each system's own (fixed cell, or its reference's NPT)
    ensemble: dict = field(default_factory=dict)

    @property
    def folder(self) -> str:
        """The run folder's name under the model, which also names the pair's state, lock and log."""
        return replica_name(self.system, self.replica or 0)

    @property
    def run_dir(self) -> Path:
        return RunFolder.of(self.out, self.model, self.folder).path

    @property
    def label(self) -> str:
        return f"{self.model}/{self.folder}"


def campaign_dir(out: Path | str) -> Path:
    return CampaignTree(out).dir


# ---------------------------------------------------------------------------------- job list
def write_job_list(path: Path, jobs: list[Job]) -> Path:
    """Writes the tab-separated job list; line ``i`` (after the header) is the job of index ``i``."""
    lines = ["#" + "\t".join(JOB_COLUMNS)]
    for i, j in enumerate(jobs):
        if j.index != i:
            raise ValueError("job indices must be 0..n-1 in order")
        vals = [str(j.index), j.model, j.system, j.reference, j.out, "" if j.steps is None else str(j.steps),
                str(j.seed), str(j.max_retries), j.socket, j.driver_cmd or "", shlex.join(j.driver_args),
                j.driver_model or "", str(j.index if j.task < 0 else j.task), "" if j.replica is None else str(j.replica),
                json.dumps(j.ensemble, sort_keys=True) if j.ensemble else ""]
        for v in vals:
            if "\t" in v or "\n" in v:
                raise DynamatError(f"a tab or newline in {v!r} cannot go into the job list")
        lines.append("\t".join(vals))
    return write_text_atomic(path, "\n".join(lines) + "\n")


def read_job(path: Path, index: int) -> Job:
    """The job of ``index`` in a job list written by :func:`write_job_list`."""
    try:
        lines = [ln for ln in Path(path).read_text().splitlines() if ln and not ln.startswith("#")]
    except OSError as exc:
        raise DynamatError(f"cannot read the job list {path}: {exc.strerror or exc}") from None
    if not 0 <= index < len(lines):
        raise DynamatError(f"job list {path} has {len(lines)} jobs; no index {index}")
    vals = lines[index].split("\t")
    if len(vals) == len(JOB_COLUMNS_RELEASED):  # a campaign started by an earlier dynamat: read by name
        v = dict(zip(JOB_COLUMNS_RELEASED, vals))
        vals = [v.get(c, "") for c in JOB_COLUMNS]  # no driver_model, replica or ensemble: one NVT run of a zoo model
    if len(vals) != len(JOB_COLUMNS):
        raise DynamatError(f"job list {path}, index {index}: {len(vals)} columns, expected {len(JOB_COLUMNS)}")
    v = dict(zip(JOB_COLUMNS, vals))
    if int(v["index"]) != index:
        raise DynamatError(f"job list {path}: line {index} holds index {v['index']}")
    return Job(index=index, model=v["model"], system=v["system"], reference=v["reference"], out=v["out"],
               steps=int(v["steps"]) if v["steps"] else None, seed=int(v["seed"]),
               max_retries=int(v["max_retries"]), socket=v["socket"], driver_cmd=v["driver_cmd"] or None,
               driver_args=tuple(shlex.split(v["driver_args"])), driver_model=v["driver_model"] or None,
               task=int(v["task"]), replica=int(v["replica"]) if v["replica"] else None,
               ensemble=json.loads(v["ensemble"]) if v["ensemble"] else {})


def read_task(path: Path, task: int) -> list[Job]:
    """The jobs that task ``task`` runs: one pair, or the pairs of one pack."""
    try:
        n = len([ln for ln in Path(path).read_text().splitlines() if ln and not ln.startswith("#")])
    except OSError as exc:
        raise DynamatError(f"cannot read the job list {path}: {exc.strerror or exc}") from None
    jobs = [j for j in (read_job(path, i) for i in range(n)) if j.task == task]
    if not jobs:
        raise DynamatError(f"job list {path} has no task {task}")
    return jobs


def assign_tasks(jobs: list[Job], pack: int) -> int:
    """Numbers the tasks: one per job, or (``pack`` > 1) up to ``pack`` jobs of the same model and
    driver per task, in order. Returns the number of tasks."""
    if pack <= 1:
        for j in jobs:
            j.task = j.index
        return len(jobs)
    groups: dict[tuple, list[Job]] = {}
    for j in jobs:
        groups.setdefault((j.model, j.driver_cmd, j.driver_args, j.driver_model), []).append(j)
    n = 0
    for members in groups.values():
        for start in range(0, len(members), pack):
            for j in members[start : start + pack]:
                j.task = n
            n += 1
    return n


# ---------------------------------------------------------------------------------- per-pair state
def state_path(out: Path | str, model: str, system: str) -> Path:
    return CampaignTree(out).state_json(model, system)


def read_json(path: Path) -> dict | None:
    try:
        d = json.loads(Path(path).read_text())
        return d if isinstance(d, dict) else None
    except (OSError, ValueError):
        return None


def write_json(path: Path, data: dict) -> None:
    write_text_atomic(path, json.dumps(data, indent=1, default=_jsonable) + "\n")


from dynamat.io.results import jsonable as _jsonable  # noqa: E402


def pair_status(run_dir: Path, steps: int | None = None, ensemble: dict | None = None) -> tuple[str, str | None]:
    """(what a campaign must do with a pair, run.json status) - the action is one of

    ``skip`` (a final run.json - completed or exploded - and a score.json of that very run),
    ``score`` (a final run without an up-to-date score), ``run`` (nothing there yet),
    ``resume`` (an unfinished or failed run with a RESTART/checkpoint), ``overwrite``
    (an unfinished or failed run that cannot be resumed: started again from scratch),
    ``extend`` (a completed run of ``ensemble`` shorter than ``steps``, the MD steps now asked, with
    a restart point to go on from: as `dynamat run --steps` does; one of another ensemble, or another
    barostat or pressure, is never continued under the other). ``ensemble``: :func:`~dynamat.runner.ensemble_of`
    of the protocol asked; None is NVT.
    """
    from dynamat.runner import ensemble_of, restart_file
    from dynamat.scoring.run import scores_this_run

    rec = read_json(RunFolder(run_dir).run_json) or {}
    status = rec.get("status")
    if (status == "completed" and steps is not None and int(rec.get("steps_requested") or 0) < steps
            and ensemble_of(rec.get("protocol") or {}) == (ensemble or {"ensemble": "nvt"})
            and restart_file(run_dir) is not None):
        return "extend", status
    if status in FINAL_RUN_STATUSES:
        sc = read_json(RunFolder(run_dir).score_json) or {}
        # a score of this very run: one left by a shorter run that was extended since is stale
        fresh = sc.get("status") == status and scores_this_run(sc, rec)
        return ("skip" if fresh else "score"), status
    if not run_dir.is_dir() or not any(run_dir.iterdir()):
        return "run", status
    return ("resume" if restart_file(run_dir) is not None else "overwrite"), status


# ---------------------------------------------------------------------------------- scoring
def score_pair(job: Job) -> dict:
    """Writes ``<run_dir>/score.json`` as ``dynamat score --run`` would, or a failure record.

    A completed run is scored with the code of ``dynamat score``; a failed or exploded one gets a
    score.json with its status and error and no metrics (the report counts it as a failure).
    """
    from dynamat.scoring.run import score_run, write_score

    rec = read_json(RunFolder(job.run_dir).run_json) or {}
    status = rec.get("status") or "failed"
    curves: dict = {}
    if status == "completed":
        try:
            res = score_run(Path(job.reference), job.system, job.run_dir, model=job.model, curves=curves)
        except (DynamatError, ValueError, OSError) as exc:
            res = _failure_score(job, rec, "failed", f"scoring failed: {exc}")
            res["run_status"] = "completed"
    else:
        res = _failure_score(job, rec, status, rec.get("error") or f"run status {status!r}")
    res["steps_done"] = rec.get("steps_done")
    res["steps_requested"] = rec.get("steps_requested")
    if job.replica is not None:  # a failed replica too: the report counts it within its set
        res.setdefault("replica_index", job.replica)
    if curves and res.get("status") == "completed":
        write_score(res, RunFolder(job.run_dir).score_json, curves)
    else:
        write_json(RunFolder(job.run_dir).score_json, res)
    return res


def _failure_score(job: Job, rec: dict, status: str, error: str) -> dict:
    """The score of a run that did not complete: its status and error, and the keys that put it in its
    report entry (NPT, beads, engine, dispersion) with its model's facts, as a scored run has them."""
    from dynamat.catalogue import get_system
    from dynamat.scoring.run import model_facts, variant_keys

    try:
        system_class = get_system(job.system).system_class
    except DynamatError:
        system_class = None
    return dict(model=job.model, system=job.system, system_class=system_class, status=status, error=error,
                seconds_per_step=rec.get("seconds_per_step_median"),
                model_seconds_per_eval=rec.get("model_seconds_per_eval_median"),
                time_to_failure_fs=rec.get("time_to_failure_fs"), **model_facts(rec),
                **variant_keys(rec.get("protocol") or {}))


# ---------------------------------------------------------------------------------- the task
class Terminated(BaseException):
    """SIGTERM/SIGINT (scancel, Ctrl-C): unwinds run_md so i-PI writes its RESTART and nothing is left."""


_signalled: list[str] = []


def _on_signal(signum, frame):
    """Raises once; a second signal during the clean-up is ignored so i-PI and the driver are
    still stopped (SLURM follows with SIGKILL after its KillWait anyway)."""
    if _signalled:
        return
    _signalled.append(signal.Signals(signum).name)
    raise Terminated(_signalled[0])


@dataclass
class TaskState:
    model: str
    system: str
    phase: str = "starting"  # queued | starting | running | scoring | done | cancelled | busy
    action: str | None = None
    result: str | None = None  # final run status: completed | failed | exploded
    error: str | None = None
    step: int | None = None
    step0: int | None = None  # the MD step this task's first attempt started from (0, or a resume's restart step)
    total: int | None = None
    attempts: list = field(default_factory=list)
    host: str = ""
    pid: int = 0
    slurm_job: str | None = None
    times: dict = field(default_factory=dict)  # epoch seconds: submit, shell, task, md_start, first_step, md_end, score_start, score_end


class _StateWriter:
    def __init__(self, path: Path, state: TaskState, every_s: float = 1.0):
        self.path, self.state, self.every_s, self.last = path, state, every_s, 0.0

    def __call__(self, force: bool = True, **changes) -> None:
        for k, v in changes.items():
            setattr(self.state, k, v)
        now = time.monotonic()
        if force or now - self.last >= self.every_s:
            self.last = now
            write_json(self.path, asdict(self.state))


def _lock(out: str, job: Job):
    path = CampaignTree(out).pair_lock(job.model, job.folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(path, "a+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.close()
        return None
    return fh


def run_task(job: Job, log: Callable[[str], None] = print, pack=None) -> TaskState:
    """Brings one pair to a final, scored state: runs (fresh, resumed or from scratch), retries a
    failed run up to ``job.max_retries`` times, and writes score.json. Never raises DynamatError;
    raises :class:`Terminated` when signalled (the state then says ``cancelled``)."""
    state, save = _task_state(job)
    lock = _lock(job.out, job)
    if lock is None:
        log(f"{job.label}: another campaign task is working on this pair; leaving it alone")
        state.phase, state.error = "busy", "another task holds the pair's lock"
        return state
    try:
        from dynamat.reference import load_system as _load_system
        from dynamat.runner import ensemble_of

        # the ensemble the pair runs: the campaign's, or its reference's own (an NPT reference runs NPT)
        reference, sys_entry, _ = _load_system(Path(job.reference), job.system, **job.ensemble)
        action, _ = pair_status(job.run_dir, job.steps, ensemble_of(asdict(sys_entry.protocol)))
        state.action = action
        save(phase="starting")
        if action in ("run", "resume", "overwrite", "extend"):
            refused = _run_with_retries(job, action, state, save, log, pack, reference, sys_entry)
            if refused:  # nothing ran: the run folder is left as it was, without a score of this task's
                state.result, state.error = "failed", refused
                save(phase="done")
                return state
        _score(job, action, state, save)
        return state
    except (Terminated, KeyboardInterrupt) as exc:  # KeyboardInterrupt: a pack's runs told to stop
        state.error = f"terminated by {exc or 'the pack task'}"
        save(phase="cancelled")
        raise
    except Exception as exc:  # an unexpected error still leaves a readable state
        state.result, state.error = "failed", f"{type(exc).__name__}: {exc}"
        save(phase="done")
        raise
    finally:
        lock.close()


def _task_state(job: Job) -> tuple[TaskState, _StateWriter]:
    """A fresh state for this task, keeping the submit time the campaign wrote and the time the
    task's shell started (``$DYNAMAT_TASK_T0``), and its writer."""
    t_task = time.time()
    st_path = state_path(job.out, job.model, job.folder)
    old = read_json(st_path) or {}
    state = TaskState(model=job.model, system=job.system, host=socket.gethostname(), pid=os.getpid(),
                      slurm_job=_slurm_task_id() or old.get("slurm_job"))
    state.times = {k: v for k, v in (old.get("times") or {}).items() if k == "submit"}
    shell_t0 = os.environ.get("DYNAMAT_TASK_T0")
    if shell_t0:
        try:
            state.times["shell"] = float(shell_t0)
        except ValueError:
            pass
    state.times["task"] = t_task
    return state, _StateWriter(st_path, state)


def _run_with_retries(job: Job, action: str, state: TaskState, save: _StateWriter, log: Callable[[str], None],
                      pack, reference: Path, sys_entry) -> str | None:
    """Runs the pair's MD until its run is final (completed or exploded) or ``job.max_retries``
    retries have failed; each retry resumes from the restart point the last attempt left, if any.
    The runner's refusal to start a run (another seed, model or ensemble than the folder's run, a
    damaged restart file, ...) ends the retries, as asking again cannot help; returned when it came
    first (nothing ran), else None."""
    from dynamat.reference import start_atoms as _start_atoms
    from dynamat.runner import restart_file

    inputs = _RunInputs(sys_entry, _start_atoms(reference, sys_entry), str(reference),
                        bridge_command(job) if job.socket == "inet" else job.driver_cmd, pack)
    progress = _ProgressRecorder(state, save)
    for attempt in range(job.max_retries + 1):
        if attempt:
            action = "resume" if restart_file(job.run_dir) is not None else "overwrite"
        log(f"{job.label}: {action} (attempt {attempt + 1} of {job.max_retries + 1})")
        status, err = _attempt(job, action, inputs, state, save, progress)
        if status in FINAL_RUN_STATUSES:
            return None
        if status == "refused":  # after an attempt that ran, that run's failure is scored as usual
            log(f"{job.label}: not run: {err}")
            return None if attempt else err
        log(f"{job.label}: attempt {attempt + 1} failed: {err}")
    return None


@dataclass(frozen=True)
class _RunInputs:
    """What every attempt of one pair passes to run_md besides the job."""

    system: object  # the catalogue System (protocol, temperature, ...)
    initial: object  # ase.Atoms: the reference's starting frame
    reference: str  # the reference file, as run.json records it
    driver_cmd: str | None  # the job's, or the inet relay in front of it
    pack: object  # the pack's shared driver, or None


class _ProgressRecorder:
    """run_md's progress callback: the step the task's MD started from and the time of its first
    reported step, and the step in the state file (throttled by the writer, forced at the last step)."""

    def __init__(self, state: TaskState, save: _StateWriter):
        self.state, self.save = state, save
        #: the step the current attempt starts from (set by _attempt): 0, or the restart point's step.
        #: The callback's first report is a few steps later; counting from it lost those steps.
        self.start = 0

    def __call__(self, step: int, total: int) -> None:
        if self.state.step0 is None:
            self.state.step0 = min(self.start, step)
            self.state.times.setdefault("first_step", time.time())
        self.save(force=step >= total, step=step, total=total)


def _attempt(job: Job, action: str, inputs: _RunInputs, state: TaskState, save: _StateWriter,
             progress: _ProgressRecorder) -> tuple[str, str | None]:
    """One run_md call; records the attempt in the state. Returns (run status, error or None); the
    status is ``refused`` when the runner would not start the run (nothing changed in its folder)."""
    from dynamat.runner import RunOptions, RunRefused, restart_point, run_md

    # never --overwrite: the runner starts a folder with no restart point again in place, and refuses
    # (keeping every file) when a restart file is damaged
    opts = RunOptions(steps=job.steps, seed=job.seed, overwrite=False,
                      driver_cmd=inputs.driver_cmd, driver_args=job.driver_args, pack=inputs.pack,
                      driver_model=job.driver_model)
    t_md = time.time()
    state.attempts.append({"action": action, "start": t_md})
    state.times.setdefault("md_start", t_md)
    # as the runner decides: a resume or extension goes on from the newest complete restart point
    progress.start = (restart_point(job.run_dir)[1] or 0) if action in ("resume", "extend") else 0
    save(phase="running")
    try:
        rec = run_md(job.model, inputs.system, inputs.initial, inputs.reference, Path(job.out), opts, progress,
                     replica=job.replica)
        status, err = rec.status, None
    except RunRefused as exc:
        status, err = "refused", str(exc)
    except DynamatError as exc:
        status = (read_json(RunFolder(job.run_dir).run_json) or {}).get("status") or "failed"
        err = str(exc)
    state.attempts[-1].update(end=time.time(), status=status, error=err)
    state.times["md_end"] = time.time()
    return status, err


def _score(job: Job, action: str, state: TaskState, save: _StateWriter) -> None:
    """Writes score.json (unless the pair was already final and scored) and the final state."""
    if action == "skip":  # already final and scored: nothing to do
        res = read_json(RunFolder(job.run_dir).score_json) or {}
    else:
        state.times["score_start"] = time.time()
        save(phase="scoring")
        res = score_pair(job)
        state.times["score_end"] = time.time()
    rec = read_json(RunFolder(job.run_dir).run_json) or {}
    state.result = res.get("status") if res.get("status") != "completed" else rec.get("status")
    state.error = res.get("error")
    state.step = rec.get("steps_done", state.step)
    state.total = rec.get("steps_requested", state.total)
    save(phase="done")


def _slurm_task_id() -> str | None:
    job = os.environ.get("SLURM_ARRAY_JOB_ID")
    task = os.environ.get("SLURM_ARRAY_TASK_ID")
    if job and task:
        return f"{job}_{task}"
    return os.environ.get("SLURM_JOB_ID")


def bridge_command(job: Job) -> str:
    """The driver command that puts the real driver behind a TCP socket (see campaign_bridge)."""
    from dynamat.processes import driver_command

    real = shlex.join(driver_command(job.driver_cmd))
    return shlex.join([sys.executable, "-m", "dynamat.campaign.bridge", "--run-dir", str(job.run_dir), "--"]) + " " + real


def task_main(manifest: Path, index: int, log: Callable[[str], None]) -> int:
    """Entry of one task process (one pair, or a pack of pairs sharing one driver): exit status 0 =
    every pair has a final, scored state."""
    old = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    for s in old:
        signal.signal(s, _on_signal)
    try:
        jobs = read_task(manifest, index)
        if len(jobs) > 1:
            return _pack_main(jobs, log)
        job = jobs[0]
        try:
            st = run_task(job, log)
        except Terminated as exc:
            log(f"{job.label}: terminated ({exc}); rerun the campaign to resume")
            return 143
        log(f"{job.label}: {st.phase} {st.result or ''} {('- ' + st.error) if st.error else ''}".rstrip())
        if st.phase == "busy":
            return 3
        return 0 if st.result in FINAL_RUN_STATUSES else 1
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _pack_main(jobs: list[Job], log: Callable[[str], None]) -> int:
    """The pairs of one pack, one thread each, all served by one pack driver (dynamat.engines.pack)."""
    from dynamat.engines.pack import PackDriver, run_all

    first = jobs[0]
    if first.socket != "unix":
        raise DynamatError("packed campaign tasks use unix sockets (i-PI and the shared driver on one node)")
    log_path = CampaignTree(first.out).pack_log(first.model, first.task)
    pack = PackDriver(first.driver_model or first.model, log_path, driver_cmd=first.driver_cmd, driver_args=first.driver_args)
    log(f"pack of {len(jobs)} pairs, one {first.model} driver (log {log_path})")
    try:
        states = dict(zip([j.label for j in jobs], run_all(pack, jobs, lambda job: run_task(job, log, pack=pack))))
    except Terminated as exc:
        log(f"pack of {len(jobs)} pairs: terminated ({exc}); rerun the campaign to resume")
        return 143
    summary = pack.close()
    if summary and summary.get("model_calls") is not None:
        log(f"pack: {summary.get('structures_evaluated')} structures in {summary.get('model_calls')} model calls "
            f"({summary.get('structures_per_call_mean') or 0:.2f} per call)")
    code = 0
    for job in jobs:
        st = states.get(job.label)
        if isinstance(st, TaskState):
            log(f"{job.label}: {st.phase} {st.result or ''} {('- ' + st.error) if st.error else ''}".rstrip())
            if st.result not in FINAL_RUN_STATUSES:
                code = 1
        else:
            log(f"{job.label}: {type(st).__name__}: {st}")
            code = 1
    return code
