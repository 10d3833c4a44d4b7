"""The one supervisor: run folder, resume, retries, run.json — for every engine and bead count.

A run folder ``<out>/<model>/<system>/`` receives the i-PI input, the initial structure, i-PI's
outputs and RESTART, ``ipi.log``, ``driver.log``, ``driver_timing.json`` and ``run.json``.
A driver that dies mid-run, or an i-PI that dies or hangs, is recovered from i-PI's restart point
with fresh processes, up to ``RunOptions.max_restarts`` times; i-PI's outputs are first trimmed back
to the restart point, so no frame is lost or repeated. MD that blows up stops with status
``exploded`` and keeps its outputs. No process is left behind.

Engines (:data:`dynamat.engines.ENGINES`): ``ipi`` (any thermostat, any bead count; resumable) and
``ase`` (ASE's Nosé–Hoover chain as socket server; not resumable).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import platform
import secrets
import shlex
import shutil
import time
from dataclasses import asdict, dataclass, field, fields
from importlib import metadata
from pathlib import Path
from typing import Callable

import ase

from dynamat import processes
from dynamat.catalogue import System, with_beads
from dynamat.engines import ENGINES
from dynamat.engines.ipi import PREFIX, Exploded, Interrupted, last_step
from dynamat.engines.ipi_restart import checkpoint_step, is_damaged
from dynamat.engines.ipi_input import MDSettings, ipi_thermostat, write_inputs
from dynamat.engines.relax import relax_cell
from dynamat.errors import DynamatError
from dynamat.layout import LOCK, RunFolder
from dynamat.files import write_text_atomic
from dynamat.io.results import ensure_writable_dir
from dynamat.names import model_folder

MAX_STEPS = 100_000_000  # 25 ns at 0.25 fs: beyond any benchmark, and i-PI's int stays sane
MAX_SEED = 2**32 - 1  # i-PI's -1 would seed from the clock: every seed is a recorded non-negative integer


@dataclass
class RunOptions:
    steps: int | None = None  # None: the protocol's full length
    seed: int | None = None  # None: the seed the folder's run.json records, else one drawn and recorded
    driver_cmd: str | None = None  # another environment's dynamat-driver, for conflicting MLIPs
    driver_args: tuple[str, ...] = ()  # e.g. ("--device", "cuda", "--model-path", "x.pt")
    batch_size: int | None = None  # structures per i-PI request; None: the bead count
    nbeads: int = 1  # > 1: path-integral MD (PILE-L), see dynamat.pimd
    n_drivers: int = 1  # drivers i-PI may hand requests to (e.g. one per bead)
    driver_threads: int | None = None  # --threads for every driver
    extra_outputs: str = ""  # i-PI <output> elements appended to the template's (tests, benchmarks)
    socket_mode: str = "unix"  # "unix" (private 0700 folder) or "inet" (TCP, see host)
    host: str = "127.0.0.1"  # inet interface; localhost unless the user names another
    overwrite: bool = False
    stall_timeout_s: float = 600.0  # no new MD step for this long = hung
    start_timeout_s: float = 120.0
    max_restarts: int = 3  # recoveries from i-PI's restart point after a dead driver or server
    max_temperature_factor: float = 5.0  # kinetic temperature above this x target = exploded
    engine: str = "ipi"  # a key of dynamat.engines.ENGINES
    warmup_steps: int | None = None  # steps left out of the timing [default: max(stride, steps/10)]
    pack: object | None = None  # a dynamat.engines.pack.PackDriver: share its driver instead of starting one
    #: what the driver's --model gets when it is not the model's name: a models file's MODULE:CALLABLE
    #: (dynamat.models_file; its options and facts are in driver_args)
    driver_model: str | None = None
    client_timeout_s: float = 600.0  # i-PI re-queues a request unanswered this long; 0: never (slow DFT steps)
    safe_stride: int | None = None  # i-PI's restart points every this many steps [default: ~100 steps]
    client: object | None = None  # another code as force client instead of dynamat-driver (dynamat.refgen.Cp2kClient)
    #: every-step runs may let the driver record the frames (driver_records_frames); off where i-PI's own
    #: position trajectory is read (a generated reference reads it beside its forces)
    record_frames: bool = True
    #: a run of a --replicas set: found final at the asked length once its folder is free (another command
    #: of the same set ran it meanwhile), it is kept as the set's plan keeps one found so at the start
    keep_final: bool = False
    #: ``dynamat run``: a completed run of exactly the asked steps is kept (the rerun has nothing to do),
    #: where the folder's seed, protocol and model are the ones asked; a shorter one is extended
    keep_same: bool = False

    def served(self, model: str) -> str:
        """The driver's ``--model`` for the run of ``model``."""
        return self.driver_model or model


class RunRefused(DynamatError):
    """The run was refused before it started (another seed, model or ensemble than the folder's run, a damaged
    restart file, a missing driver, ...): nothing was run or recorded, and asking again the same way cannot help."""


@contextlib.contextmanager
def _refusals():
    """Raises the DynamatErrors of the checks before a run starts as :class:`RunRefused`."""
    try:
        yield
    except RunRefused:
        raise
    except DynamatError as exc:
        raise RunRefused(str(exc)) from None


@dataclass
class RunRecord:
    """What run.json holds."""

    model: str
    system: str
    reference: str
    status: str = "running"  # running | completed | failed | exploded
    # the model's registry facts, as the driver that served it reports them in its timing file
    tier: int | str | None = None  # paper tier 1-4, "test" for analytic potentials, None = not in the paper
    n_params: int | None = None
    model_label: str | None = None  # as in the paper, e.g. "CHGNet 0.3.0"
    model_family: str | None = None
    training_set: str | None = None  # what the model was trained on, as a models file says it (text)
    dispersion: str | None = None  # a correction the driver adds to the model, e.g. "d3-bj(pbe)" (--dispersion)
    served: dict | None = None  # what the driver was asked to serve (model_identity): a rerun must ask the same
    error: str | None = None
    steps_requested: int = 0
    steps_done: int = 0  # the last MD step with a saved frame
    last_saved_step: int = 0  # steps_requested rounded down to the save stride
    seed: int = 0
    replica: int | None = None  # index k in a --replicas set (folder <system>_r<k>; 0 is <system>); None: a single run
    protocol: dict = field(default_factory=dict)
    system_info: dict = field(default_factory=dict)  # class, dims, temperature and where each came from
    seconds_per_step_mean: float | None = None
    seconds_per_step_median: float | None = None
    model_seconds_per_eval_mean: float | None = None
    model_seconds_per_eval_median: float | None = None
    n_model_evals: int | None = None
    n_drivers: int = 1
    pack: dict | None = None  # packed run: the shared driver (its model, its log); its counters at the end
    batch_size: int | None = None
    device: str | None = None
    dtype: str | None = None
    versions: dict = field(default_factory=dict)
    wall_seconds: float | None = None
    time_to_failure_fs: float | None = None
    restarts: list = field(default_factory=list)
    relaxation: dict | None = None  # relaxed-cell protocol: steps, final fmax, volume change
    notes: list = field(default_factory=list)
    started: str = ""
    finished: str | None = None
    driver_timings: list = field(default_factory=list)  # every driver's timing file, parsed
    folder: str = ""  # the run folder, absolute

    @property
    def run_dir(self) -> Path:
        return Path(self.folder)


def _versions() -> dict:
    out = {"python": platform.python_version()}
    for pkg in ("dynamat", "ipi", "ase", "numpy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def _check_writable(run_dir: Path) -> None:
    ensure_writable_dir(run_dir)


def restart_point(run_dir: Path) -> tuple[Path | None, int | None]:
    """The newest complete i-PI restart point in ``run_dir`` and its step (a file cut short is none)."""
    best, best_step = None, None
    for cand in RunFolder(run_dir, PREFIX).restart_candidates():
        step = restart_step(cand)
        if step is not None and (best_step is None or step > best_step):
            best, best_step = cand, step
    return best, best_step


def restart_file(run_dir: Path) -> Path | None:
    """The newest complete i-PI restart point in ``run_dir``: RESTART (soft exit) or a checkpoint, by step."""
    return restart_point(run_dir)[0]


def restart_step(path: Path | None) -> int | None:
    """The step ``path`` resumes from; None unless it is a complete i-PI restart file."""
    return checkpoint_step(path)


def damaged_restarts(run_dir: Path) -> list[str]:
    """The names of restart files in ``run_dir`` that are not complete i-PI XML (cut short by a kill)."""
    return [p.name for p in RunFolder(run_dir, PREFIX).restart_candidates()[:3] if is_damaged(p)]


def drop_superseded_backups(run_dir: Path) -> list[str]:
    """Removes the copies i-PI keeps of a rewritten RESTART or checkpoint (``#RESTART#0#``) that a complete
    RESTART at a later step supersedes: each resume or extension left one more. They stay restart
    candidates while the run is unfinished; once it completes, RESTART is the newest point. A copy with no
    step (the checkpoint i-PI writes before its first step, or one cut short) is superseded too. Returns
    the names removed."""
    folder = RunFolder(run_dir, PREFIX)
    newest = restart_step(folder.restart)
    if newest is None:
        return []
    gone = []
    for p in folder.restart_candidates()[3:]:
        step = restart_step(p)
        if (step is None or step < newest) and not p.is_symlink():
            p.unlink()
            gone.append(p.name)
    return gone


def _clear_own_files(run_dir: Path) -> None:
    for p in RunFolder(run_dir, PREFIX).own_files():
        p.unlink()


def read_run_json(run_dir: Path) -> dict | None:
    try:
        return json.loads(RunFolder(run_dir).run_json.read_text())
    except (OSError, ValueError):
        return None


def _is_run_folder(run_dir: Path) -> bool:
    """Holds a dynamat run (run.json, or i-PI's input written by us): the only kind --overwrite removes."""
    rf = RunFolder(run_dir)
    return rf.run_json.is_file() or rf.input_xml.is_file() and rf.init_xyz.is_file()


def _no_restart_message(run_dir: Path, damaged: list[str]) -> str:
    files = " and ".join(damaged)
    return (f"{run_dir} cannot be resumed: {files} {'is' if len(damaged) == 1 else 'are'} damaged (not a complete "
            "i-PI restart file, e.g. cut short by a kill) and no other restart point is complete; nothing was changed. "
            f"Put a good copy back to resume, remove {'it' if len(damaged) == 1 else 'them'} to start again from "
            "step 0 in this folder, or pass --overwrite to replace the folder")


def prepare_run_dir(run_dir: Path, overwrite: bool, steps: int | None = None) -> tuple[str, Path | None]:
    """Decides between a fresh start and a resume and readies the folder for it: (what it does, as
    :func:`plan_run_dir` says it, the restart file to resume from, if any).

    - ``overwrite`` removes the folder only if it holds a dynamat run; anything else is refused.
    - A completed run is resumed to a larger ``steps``; the same or a smaller count is refused.
    - An interrupted run is resumed from its newest complete restart point (to the new ``steps`` if
      changed), unless it is already past the new count.
    - A run with no restart point is started again in place (only the files a run writes are
      replaced; a user's own files stay), unless a restart file is damaged: then nothing is
      touched and the error names the file. Nothing else is removed without ``overwrite``.
    """
    action, restart = plan_run_dir(run_dir, overwrite, steps)
    if action == "replace":
        shutil.rmtree(run_dir)
    _check_writable(run_dir)
    if action == "restart":
        _clear_own_files(run_dir)
    return action, restart


def plan_run_dir(run_dir: Path, overwrite: bool, steps: int | None = None) -> tuple[str, Path | None]:
    """What :func:`prepare_run_dir` would do, changing nothing (a caller with work before the run, such as
    ``dynamat demo``'s single points, refuses first): ("fresh" | "replace" | "restart" | "resume", the
    restart file a resume starts from); raises the DynamatError prepare_run_dir would."""
    if not run_dir.exists() or not any(p.name != LOCK for p in run_dir.iterdir()):
        return "fresh", None
    is_run = _is_run_folder(run_dir)
    if overwrite:
        if not is_run:
            raise DynamatError(f"{run_dir} exists and holds no dynamat run (no run.json); not removing it")
        return "replace", None
    if not is_run:
        raise DynamatError(f"{run_dir} exists and holds no dynamat run; choose another --out")
    rec = read_run_json(run_dir) or {}
    status = rec.get("status")
    restart, at = restart_point(run_dir)
    damaged = damaged_restarts(run_dir)
    if status == "exploded":
        raise DynamatError(f"{run_dir} holds a run that exploded (a result, kept); pass --overwrite to run again")
    if status == "completed":
        done = int(rec.get("steps_requested") or 0)
        if restart is None and damaged and steps and steps > done:
            raise DynamatError(_no_restart_message(run_dir, damaged))
        if steps is None or steps <= done or restart is None:
            why = "no restart point to extend it from" if restart is None and steps and steps > done else \
                f"--steps {steps if steps is not None else 'default'} asks for no more"
            raise DynamatError(f"{run_dir} holds a completed run of {done} steps ({why}); pass --overwrite to "
                               "replace it or --out to choose another folder")
        return "resume", restart
    if restart is None:
        if damaged:
            raise DynamatError(_no_restart_message(run_dir, damaged))
        # failed or killed before i-PI wrote any restart point: start again, in place
        return "restart", None
    if steps is not None and at is not None and at > steps:
        raise DynamatError(f"{run_dir} holds an unfinished run already at step {at}, beyond --steps {steps}; "
                           f"pass --steps {at} or more to finish it, or --overwrite to start again")
    return "resume", restart


#: driver flags that change the served model's numbers (device, threads, stress stride, files and labels do not)
_MODEL_FLAGS = ("--model", "--model-path", "--dtype", "--dispersion", "--dispersion-functional", "--option")


def model_identity(served: str, driver_args) -> dict:
    """What a run's driver serves, read from its arguments as the driver reads them (the last of a flag
    wins, ``-o`` is ``--option``): the model, its ``--model-path``, ``--dtype``, options and dispersion
    label (e.g. d3-bj(pbe)). Equal identities serve the same model; run.json keeps it as ``served``."""
    flags: dict = {"--model": served}
    options: dict = {}
    args = list(driver_args)
    k = 0
    while k < len(args):
        flag, eq, value = args[k].partition("=")
        k += 1
        flag = "--option" if flag == "-o" else flag
        if flag not in _MODEL_FLAGS:
            continue
        if not eq:
            if k == len(args):
                break
            value, k = args[k], k + 1
        if flag == "--option":
            key, _, text = value.partition("=")
            options[key.strip()] = text.strip()
        else:
            flags[flag] = value
    method = flags.get("--dispersion")
    functional = (flags.get("--dispersion-functional") or "pbe").strip().lower()
    return {"model": flags["--model"], "model_path": flags.get("--model-path"), "dtype": flags.get("--dtype"),
            "options": dict(sorted(options.items())), "dispersion": f"{method}({functional})" if method else None}


def _identity_part(key: str, value) -> str:
    if key == "options":
        return "options " + " ".join(f"{k}={v}" for k, v in value.items()) if value else "no model options"
    if key == "model":
        return f"model {value}"
    flag = "--" + key.replace("_", "-")
    return f"{flag} {value}" if value else f"no {flag}"


def model_differences(old: dict | None, identity: dict) -> list[tuple[str, str]]:
    """[(what the run recorded, what ``identity`` asks)] for each part of the served model that differs
    between a run.json ``old`` and ``identity`` (:func:`model_identity`); empty: the same model."""
    old = old or {}
    had = old.get("served")
    if not isinstance(had, dict):  # run.json from before identities were recorded: only its correction is known
        had = {"dispersion": old.get("dispersion")}
    return [(_identity_part(k, had[k]), _identity_part(k, identity[k])) for k in had
            if k in identity and had[k] != identity[k]
            and not (k == "dtype" and had[k] is None and identity[k] == old.get("dtype"))]


def check_same_model(run_dir: Path, old: dict | None, identity: dict) -> None:
    """A run is continued only by the model it started with: the folder is named by the model's name alone,
    which a models file, a MODULE:CALLABLE's options or a correction leave the same. A ``--dtype`` the
    first run did not give is accepted where it is the one that run recorded using."""
    differ = model_differences(old, identity)
    if differ:
        was = ", ".join(w for w, _ in differ)
        now = ", ".join(n for _, n in differ)
        raise DynamatError(f"{run_dir} holds a run with {was}; continuing it with {now} would mix two models: "
                           "give another --out, or --overwrite")


def _check_same_recording(run_dir: Path, opts: RunOptions) -> None:
    """A run whose driver records its frames (an every-step protocol) is continued only by one driver that can."""
    from dynamat.engines.ipi_input import records_frames

    try:
        recorded = records_frames(RunFolder(run_dir).input_xml.read_text())
    except OSError:
        return
    if recorded and (opts.n_drivers != 1 or "--stress-stride" in opts.driver_args):
        raise DynamatError(f"{run_dir} holds an every-step run whose frames its one driver records; continue it "
                           "with one driver and without --stress-stride among the driver arguments, or --overwrite")


def step_timing(samples: list[tuple[float, int]], warmup_steps: int) -> tuple[float | None, float | None]:
    """Mean and median wall seconds per MD step from (time, step) samples, warm-up excluded."""
    pts = [(t, s) for t, s in samples if s >= warmup_steps]
    if len(pts) < 2 or pts[-1][1] == pts[0][1]:
        return None, None
    mean = (pts[-1][0] - pts[0][0]) / (pts[-1][1] - pts[0][1])
    rates = sorted((t1 - t0) / (s1 - s0) for (t0, s0), (t1, s1) in zip(pts, pts[1:]) if s1 > s0)
    n = len(rates)
    median = rates[n // 2] if n % 2 else 0.5 * (rates[n // 2 - 1] + rates[n // 2])
    return mean, median


def run_settings(system: System, engine: str, nbeads: int, steps: int | None,
                 seed: int) -> tuple[System, MDSettings]:
    """The system as run (path integrals through i-PI run PILE-L, recorded with what it replaced) and its
    MD settings: what a run of ``system`` with these options is, for running it or checking a kept one."""
    if engine == "ipi":
        system = with_beads(system, nbeads)
    return system, system.md_settings(steps=steps, seed=seed, nbeads=nbeads)


def run_md(
    model: str,
    system: System,
    initial: ase.Atoms,
    reference: str,
    out: Path,
    opts: RunOptions,
    progress: Callable[[int, int], None] | None = None,
    announce: Callable[[str], None] | None = None,
    replica: int | None = None,
) -> RunRecord:
    """Runs one (model, system) MD in ``<out>/<model>/<system>`` (``<system>_r<k>`` for replica k >= 1)
    and writes run.json; raises DynamatError on failure (the record is written first)."""
    run_dir = RunFolder.of(out, model, system.name, replica or 0).path
    with _refusals():
        check_same_run(run_dir, system.name, replica, opts.overwrite)
        seed = run_seed(Path(run_dir).resolve(), opts.seed, opts.overwrite)
        system, settings = run_settings(system, opts.engine, opts.nbeads, opts.steps, seed)
    info = system_record(system, initial)
    return supervise(model, initial, settings, run_dir, opts, progress=progress, system=system,
                     # absolute: `dynamat score --run DIR` scores against it from any working folder
                     reference=str(Path(reference).resolve()), system_info=info, announce=announce,
                     replica=replica)


def structure_sha256(atoms: ase.Atoms) -> str:
    """The start structure's fingerprint: elements, positions (Å), cell and periodicity, to the bit."""
    h = hashlib.sha256()
    for a in (atoms.numbers.astype("<i8"), atoms.positions.astype("<f8"), atoms.cell.array.astype("<f8"),
              atoms.pbc.astype("u1")):
        h.update(a.tobytes())
    return h.hexdigest()


def system_record(system: System, initial: ase.Atoms | None = None) -> dict:
    """run.json's ``system_info``: every value the system was run with and its source, and the fingerprint of
    the reference frame it started from (before any relaxation), which a rerun must start from too."""
    info = system.describe() if hasattr(system, "describe") else {}
    return info | ({"start_structure_sha256": structure_sha256(initial)} if initial is not None else {})


def check_same_run(run_dir: Path, system: str, replica: int | None, overwrite: bool) -> None:
    """A folder holds one run: a system ``X_r1`` must not continue replica 1 of ``X`` (same folder name),
    nor the reverse; a single run and replica 0 of a set share the folder on purpose. A record that names
    no system (a run cut short before it wrote one) is left to the resume checks."""
    old = None if overwrite else read_run_json(run_dir)
    if not old or old.get("system") is None:
        return
    if old.get("system") != system or (old.get("replica") or 0) != (replica or 0):
        was = f"{old.get('system')!r}" + (f" (replica {old['replica']})" if old.get("replica") else "")
        now = f"{system!r}" + (f" (replica {replica})" if replica else "")
        raise DynamatError(f"{run_dir} holds a run of {was}, not of {now}: give another --out, or --overwrite")


def supervise(
    model: str,
    initial: ase.Atoms,
    settings: MDSettings,
    run_dir: Path,
    opts: RunOptions,
    *,
    progress: Callable[[int, int], None] | None = None,
    system: System | None = None,
    reference: str = "",
    system_info: dict | None = None,
    announce: Callable[[str], None] | None = None,
    replica: int | None = None,
) -> RunRecord:
    """Runs ``settings`` from ``initial`` with ``model`` in ``run_dir`` under ``opts.engine``.

    ``announce`` receives one line once the inputs are checked and the folder is settled. The checks
    before the run starts raise :class:`RunRefused`."""
    with _refusals():
        _check_request(settings, opts)
    run_dir = Path(run_dir).resolve()  # children run inside it: no relative paths
    if run_dir.is_dir():
        processes.RunLock(run_dir, notify=announce).release()  # wait for a leftover i-PI before judging the folder
    with _refusals():
        kept = None if opts.overwrite else _kept_final(run_dir, settings, model, opts, system_info)
        if kept is not None:
            if announce:
                meanwhile = ", run meanwhile" if opts.keep_final else ""
                announce(f"kept: {run_dir} is {kept.status} at the asked length (seed {kept.seed}){meanwhile}; "
                         "--overwrite runs it anew")
            return kept
        action, resume_from = prepare_run_dir(run_dir, opts.overwrite, settings.steps)
        if announce and action == "restart":  # never silently
            announce(f"{run_dir} holds an unfinished run with no restart point to resume from"
                     + (" (the ASE engine writes none)" if opts.engine == "ase" else "")
                     + ": starting it again at step 0")
        old = read_run_json(run_dir) if resume_from is not None else None
        _check_resume_seed(run_dir, old, settings.seed)
        identity = model_identity(opts.served(model), opts.driver_args)
        if resume_from is not None:
            check_continues(run_dir, old, settings, opts.engine, identity, system_info)
            _check_same_recording(run_dir, opts)
    lock = processes.RunLock(run_dir, notify=announce)
    if announce:
        announce(_start_line(model, run_dir, settings, resume_from, (system_info or {}).get("start_cell")))
    record = _new_record(model, settings, run_dir, opts, system, reference, system_info, old)
    record.replica, record.served = replica, identity
    samples: list[tuple[float, int]] = []
    t0 = time.monotonic()
    try:
        if resume_from is None:
            initial = _fresh_inputs(model, initial, settings, run_dir, opts, system, record, progress)
        else:  # until it ends, the resumed run is unfinished: an extension killed is never 'completed' short
            record.steps_done = int((old or {}).get("steps_done") or 0)
        # recorded now, not only at the end: a rerun after a SIGKILL checks its seed, ensemble and model
        write_text_atomic(RunFolder(run_dir).run_json, json.dumps(asdict(record), indent=2) + "\n")
        _attempts(model, run_dir, resume_from, settings, opts, samples, progress, lock, initial, record)
        record.status = "completed"
        drop_superseded_backups(run_dir)
    except Exploded as exc:
        record.status = "exploded"
        record.error = f"MD exploded: {str(exc).removeprefix('MD exploded: ')}"
        record.time_to_failure_fs = (last_step(RunFolder(run_dir, PREFIX).properties) or 0) * settings.timestep_fs
        raise DynamatError(record.error) from None
    except DynamatError as exc:
        record.status = "failed"
        record.error = str(exc)
        raise
    except KeyboardInterrupt:
        record.status = "failed"
        record.error = "interrupted; rerun the same command to resume"
        raise
    finally:
        _finish_record(record, run_dir, settings, opts, samples, t0)
        lock.release()
    return record


def final_at(rec: dict, steps: int | None) -> str | None:
    """The status of a run.json ``rec`` that a --replicas set keeps as it is: ``completed`` with at least
    ``steps`` MD steps, or ``exploded`` (a result at any length); None: the run is to be run or continued."""
    status = rec.get("status")
    if status == "exploded" or status == "completed" and int(rec.get("steps_requested") or 0) >= (steps or 0):
        return status
    return None


def _kept_final(run_dir: Path, settings: MDSettings, model: str, opts: RunOptions,
                system_info: dict | None = None) -> RunRecord | None:
    """The record of a run kept as it is (``opts.keep_final``: final at ``settings``' length;
    ``opts.keep_same``: completed at exactly that length), with their seed, protocol, system (its start
    and what its score takes, :func:`check_kept_system`) and served model (else refused, as a kept replica
    is), or None: the folder is left to :func:`prepare_run_dir`."""
    old = read_run_json(run_dir) or {}
    status = final_at(old, settings.steps)
    same = status == "completed" and int(old.get("steps_requested") or 0) == settings.steps
    if not (opts.keep_final and status or opts.keep_same and same):
        return None
    _check_resume_seed(run_dir, old, settings.seed)
    check_continues(run_dir, old, settings, opts.engine, model_identity(opts.served(model), opts.driver_args),
                    system_info)
    known = {f.name for f in fields(RunRecord)}
    return RunRecord(**{k: v for k, v in old.items() if k in known})


def check_continues(run_dir: Path, old: dict | None, settings: MDSettings, engine: str, identity: dict,
                    system_info: dict | None = None, way_out: str | None = None) -> None:
    """A run kept as it is, resumed or extended is the run asked now, else refused in one line: its
    protocol and ensemble (:func:`check_resume_settings`), its system (:func:`check_kept_system`; None:
    not known here) and the served model (:func:`check_same_model`). The seed is the caller's to check
    (a set derives each replica's own)."""
    check_resume_settings(run_dir, old, settings, engine, way_out)
    if system_info:
        check_kept_system(run_dir, old, system_info, way_out)
    check_same_model(run_dir, old, identity)


def check_kept_system(run_dir: Path, old: dict | None, info: dict, way_out: str | None = None) -> None:
    """A run kept, resumed or extended is of the system asked now (``info`` against run.json's ``system_info``):
    it started from the reference frame asked (its index, and the frame itself: another --reference whose
    system starts elsewhere would be recorded and scored as the one asked, while a resume goes on from its
    restart file), and it has the class and dims its score takes (``dynamat run --dims 2`` scores a slab).
    Values a record lacks (an older run.json) are not compared."""
    had = (old or {}).get("system_info") or {}
    start = int(info.get("start_frame") or 0)
    if isinstance(had.get("start_frame"), int) and had["start_frame"] != start:
        was = had["start_frame"]
        raise DynamatError(f"{run_dir} holds a run started from reference frame {was} (--start-frame {was}), not "
                           f"{start}: {way_out or f'give --start-frame {was}, another --out, or --overwrite'}")
    was_sha, sha = had.get("start_structure_sha256"), info.get("start_structure_sha256")
    if was_sha and sha and was_sha != sha:
        made = (old or {}).get("reference") or "another reference"
        raise DynamatError(f"{run_dir} holds a run started from another structure than frame {start} of the reference "
                           f"asked (it was made from {made}): "
                           f"{way_out or 'give the --reference it was made from, another --out, or --overwrite'}")
    asked = {"class": info.get("class"), "dims": info.get("dims")}
    differ = [f"--{k} {shlex.quote(str(had[k]))} (asked {shlex.quote(str(v))})" for k, v in asked.items()
              if v is not None and had.get(k) is not None and had[k] != v]
    if differ:
        raise DynamatError(f"{run_dir} holds a run with {', '.join(differ)}, which its score takes: "
                           f"{way_out or 'give the same, another --out, or --overwrite'}")


def _check_request(settings: MDSettings, opts: RunOptions) -> None:
    """Refuses what cannot run, before any folder is touched."""
    if opts.engine not in ENGINES:
        raise DynamatError(f"unknown engine {opts.engine!r}: use {' or '.join(ENGINES)}")
    if not 1 <= settings.steps <= MAX_STEPS:
        raise DynamatError(f"--steps must be between 1 and {MAX_STEPS}, got {settings.steps}")
    if not 0 <= settings.seed <= MAX_SEED:
        raise DynamatError(f"--seed must be an integer between 0 and {MAX_SEED}, got {settings.seed}")
    if opts.nbeads < 1 or settings.nbeads < 1:
        raise DynamatError("--beads must be at least 1")
    if opts.batch_size is not None and opts.batch_size < 1:
        raise DynamatError(f"--batch-size must be at least 1, got {opts.batch_size}")
    if opts.engine == "ase" and settings.nbeads > 1:
        raise DynamatError("path integrals (--beads) need the i-PI engine")
    if opts.engine == "ase" and settings.thermostat != "svr":
        raise DynamatError("--engine ase reproduces the paper's Nose-Hoover-chain protocols only; "
                           f"this system's protocol uses {settings.thermostat}")
    if settings.is_npt and (opts.engine != "ipi" or settings.nbeads > 1):
        raise DynamatError("NPT (--ensemble npt, or an NPT reference's own) runs classical MD through i-PI's "
                           "barostats: drop --engine ase and --beads, or give --ensemble nvt for a fixed cell")
    if opts.client is not None:
        opts.client.check()  # the code is installed: say how to install it otherwise, before any folder change
    else:
        processes.driver_command(opts.driver_cmd)  # a missing or non-executable driver: say so before any folder change
    if opts.engine == "ipi":
        processes.executable("i-pi")


def _check_resume_seed(run_dir: Path, old: dict | None, seed: int) -> None:
    """A resume continues the recorded run, whose random state is in its restart file: another --seed
    would be recorded but not used."""
    recorded = (old or {}).get("seed")
    if isinstance(recorded, int) and recorded != seed:
        raise DynamatError(f"{run_dir} holds a run with --seed {recorded}, which a resume continues; pass --seed "
                           f"{recorded} (or no --seed), or --overwrite to start again with --seed {seed}")


def ensemble_of(protocol: dict) -> dict:
    """The ensemble a run.json protocol (or MDSettings as a dict) records; one written before NPT existed is NVT."""
    if protocol.get("ensemble", "nvt") != "npt":
        return {"ensemble": "nvt"}
    return {k: protocol.get(k) for k in ("ensemble", "pressure_GPa", "barostat", "tau_barostat_fs")}


def check_resume_ensemble(run_dir: Path, old: dict | None, settings: MDSettings, way_out: str | None = None) -> None:
    """A resume continues the recorded ensemble (the restart file holds its barostat): other ensemble
    arguments are refused, as another --seed is."""
    if not old:
        return
    had, want = ensemble_of(old.get("protocol") or {}), ensemble_of(asdict(settings))
    if had != want:
        raise DynamatError(f"{run_dir} holds a run with {ensemble_flags(had)}, which a resume continues; it was asked "
                           f"for {ensemble_flags(want)}: "
                           f"{way_out or 'give the same ensemble arguments, another --out, or --overwrite'}")


def ensemble_flags(e: dict) -> str:
    """An :func:`ensemble_of` as the command line says it."""
    return ("--ensemble nvt" if e["ensemble"] == "nvt" else
            f"--ensemble npt --pressure-GPa {e['pressure_GPa']:g} --barostat {e['barostat']} "
            f"--tau-barostat-fs {e['tau_barostat_fs']:g}")


def recorded_thermostat(settings: MDSettings, engine: str) -> str:
    """The thermostat a run records: the mode i-PI runs (path integrals: pile_l), or ``nhc`` for the ASE
    engine's Nose-Hoover chain (``ase.md.nose_hoover_chain.NoseHooverChainNVT``, tchain 3)."""
    return ipi_thermostat(settings) if engine == "ipi" else "nhc"


#: the protocol a resume continues (the restart file holds it): (run.json key, what the user gives, unit)
_RESUMED_PROTOCOL = (("temperature_K", "--temperature", "K"), ("timestep_fs", "--timestep-fs", "fs"),
                     ("tau_fs", "--tau-fs", "fs"), ("stride", "--stride", "steps"), ("nbeads", "--beads", ""),
                     ("thermostat", "--thermostat", ""))


def check_resume_settings(run_dir: Path, old: dict | None, settings: MDSettings, engine: str = "ipi",
                          way_out: str | None = None) -> None:
    """A resume continues the recorded run: i-PI's restart file holds its temperature, time step, thermostat
    and its time constant, save stride and beads, and i-PI takes them from there whatever the new input
    says. Other values are refused in one line (as another --seed or ensemble is), never recorded as if run."""
    check_resume_ensemble(run_dir, old, settings, way_out)
    had = dict((old or {}).get("protocol") or {})
    # run.json before it recorded what ran: path integrals said svr/langevin for PILE-L, the ASE engine svr
    if had.get("engine") == "ase":
        had["thermostat"] = "nhc"
    elif int(had.get("nbeads") or 1) > 1 and had.get("thermostat") in ("svr", "langevin"):
        had["thermostat"] = "pile_l"
    want = asdict(settings)
    want["thermostat"] = recorded_thermostat(settings, engine)  # as run.json records it
    differ = []
    for key, flag, unit in _RESUMED_PROTOCOL:
        a, b = had.get(key), want.get(key)
        if a is None or b is None or a == b or (isinstance(a, (int, float)) and isinstance(b, (int, float))
                                                 and math.isclose(a, b, rel_tol=1e-9)):
            continue
        differ.append(f"{flag} {a:g}{' ' + unit if unit else ''} (asked {b:g})" if isinstance(a, (int, float))
                      else f"{flag} {a} (asked {b})")
    if differ:
        raise DynamatError(f"{run_dir} holds a run with {', '.join(differ)}, which a resume continues from its "
                           f"restart file: {way_out or 'give the same protocol arguments, another --out, or --overwrite'}")


def _start_line(model: str, run_dir: Path, settings: MDSettings, resume_from: Path | None,
                start_cell: dict | None = None) -> str:
    how = "running"
    if resume_from is not None:
        damaged = damaged_restarts(run_dir)
        hurt = f"; {' and '.join(damaged)} damaged, not used" if damaged else ""
        how = f"resuming from {resume_from.name} (step {restart_step(resume_from)}{hurt})"
    cell = f", NPT at {settings.pressure_GPa:g} GPa ({settings.barostat} barostat)" if settings.is_npt else ""
    if start_cell and resume_from is None:  # a fresh start only: a resumed run is where its restart left it
        cell += (f", in the reference's mean cell ({start_cell['volume_A3']:.6g} Å³; its frames' volumes spread "
                 f"{100 * start_cell['frame_volume_rel_sd']:.2g} %)")
        if not settings.is_npt:  # its pressure distribution (Eq. 9) then compares two ensembles
            from dynamat.reference import reference_pressure_said

            p, how = reference_pressure_said(start_cell) or ("P", "")
            cell += (f"; the reference's cell moves and this run's does not: --ensemble npt --pressure-GPa {p} "
                     f"runs its ensemble{how}")
    return f"{how}: {model} on {run_dir.name}, {settings.steps} steps, seed {settings.seed}{cell} -> {run_dir}"


def _new_record(model, settings: MDSettings, run_dir: Path, opts: RunOptions, system: System | None,
                reference: str, system_info: dict | None, old: dict | None) -> RunRecord:
    protocol = asdict(system.protocol) if system is not None else {}
    protocol.update(asdict(settings), engine=opts.engine)
    protocol["thermostat"] = recorded_thermostat(settings, opts.engine)
    if opts.engine == "ipi":  # the mode i-PI runs (path integrals: PILE-L), in both keys
        protocol["ipi_thermostat"] = protocol["thermostat"]
    else:  # ASE's Nose-Hoover chain ran: no i-PI thermostat did
        protocol["ipi_thermostat"] = None
    if system is not None:
        protocol.update(system_class=system.system_class, dims=system.dims)
    record = RunRecord(
        model=model,
        system=system.name if system is not None else run_dir.name,
        reference=reference,
        steps_requested=settings.steps,
        last_saved_step=settings.last_saved_step,
        seed=settings.seed,
        protocol=protocol,
        system_info=system_info or {},
        n_drivers=opts.n_drivers,
        pack=None if opts.pack is None else {"model": opts.pack.model, "log": str(opts.pack.log)},
        batch_size=opts.batch_size or settings.nbeads,
        versions=_versions(),
        started=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        folder=str(run_dir),
    )
    thermostat_source = (system_info or {}).get("sources", {}).get("thermostat", "")
    if settings.nbeads > 1 and thermostat_source.startswith("pile_l (path integrals"):
        record.notes.append(f"thermostat {thermostat_source}")
    if settings.last_saved_step != settings.steps:
        record.notes.append(f"{settings.steps} steps is not a multiple of the save stride {settings.stride}: "
                            f"the last saved frame is step {settings.last_saved_step}")
    if old:
        record.restarts = old.get("restarts") or []
        record.relaxation = old.get("relaxation")
    return record


def _fresh_inputs(model, initial: ase.Atoms, settings: MDSettings, run_dir: Path, opts: RunOptions,
                  system: System | None, record: RunRecord, progress) -> ase.Atoms:
    """A fresh start: the relaxed-cell protocol's relaxation, then i-PI's input.xml and init.xyz."""
    if system is not None and system.protocol.relax:
        p = system.protocol
        if progress:
            progress(0, settings.steps)
        initial, record.relaxation = relax_cell(
            opts.served(model), initial, run_dir, processes.driver_command(opts.driver_cmd) + list(opts.driver_args),
            fmax=p.relax_fmax_eV_per_A, max_steps=p.relax_max_steps, timeout_s=opts.stall_timeout_s,
        )
    xml = write_inputs(initial, settings, run_dir, mode="unix", address="s", sockets_prefix="/tmp/ipi_",
                       prefix=PREFIX, batch_size=opts.batch_size, safe_stride=opts.safe_stride,
                       checkpoint_stride=opts.safe_stride, timeout_s=opts.client_timeout_s,
                       record_frames=driver_records_frames(settings, opts))
    if opts.extra_outputs:
        text = xml.read_text()
        xml.write_text(text.replace("</output>", f"  {opts.extra_outputs.strip()}\n  </output>", 1))
    return initial


def driver_records_frames(settings: MDSettings, opts: RunOptions) -> bool:
    """Every-step classical i-PI runs with one driver: the driver records the frames (``--record``), which
    costs i-PI no trajectory of positions (issue 25 §3); the driver then needs the stress schedule. Not when
    another code is the client (CP2K records nothing), the caller reads i-PI's own positions
    (``opts.record_frames`` off), nor in NPT (the driver has no stress schedule there)."""
    return (opts.record_frames and opts.engine == "ipi" and int(settings.stride) == 1 and int(settings.nbeads) == 1
            and opts.n_drivers == 1 and "--stress-stride" not in opts.driver_args and opts.client is None
            and not getattr(settings, "is_npt", False))


def _attempts(model, run_dir: Path, resume_from: Path | None, settings: MDSettings, opts: RunOptions, samples,
              progress, lock, initial: ase.Atoms, record: RunRecord) -> None:
    """Engine attempts until one ends the run, each recovery from the newest complete restart point."""
    restarts = 0
    engine = ENGINES[opts.engine]
    while True:
        try:
            engine(opts.served(model), run_dir, resume_from, settings, opts, samples, progress, lock.fd, initial=initial)
            return
        except Interrupted as exc:
            restarts += 1
            resume_from = restart_file(run_dir)
            if restarts > opts.max_restarts or resume_from is None:
                raise DynamatError(f"{exc} (after {restarts - 1} restart(s); rerun to resume)") from None
            record.restarts.append({"reason": str(exc), "from": resume_from.name,
                                    "step": last_step(RunFolder(run_dir, PREFIX).properties)})


def _finish_record(record: RunRecord, run_dir: Path, settings: MDSettings, opts: RunOptions, samples, t0: float):
    """Steps done, timings and the pack's counters into run.json (written atomically)."""
    record.steps_done = last_step(RunFolder(run_dir, PREFIX).properties) or 0
    warm = max(settings.stride, settings.steps // 10) if opts.warmup_steps is None else opts.warmup_steps
    record.seconds_per_step_mean, record.seconds_per_step_median = step_timing(samples, warmup_steps=warm)
    record.wall_seconds = time.monotonic() - t0
    record.finished = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    _merge_driver_timing(record, run_dir)
    if opts.pack is not None and record.pack is not None:
        record.pack["at_end"] = opts.pack.summary()  # the pack's counters when this run ended
    write_text_atomic(RunFolder(run_dir).run_json, json.dumps(asdict(record), indent=2) + "\n")


def _merge_driver_timing(record: RunRecord, run_dir: Path) -> None:
    timings = []
    for f in sorted(run_dir.glob(RunFolder(run_dir).driver_timing_json("*").name)):
        try:
            timings.append(json.loads(f.read_text()))
        except (OSError, ValueError):
            pass
    record.driver_timings = timings
    if not timings:
        return
    t = timings[0]
    facts = t.get("model") if isinstance(t.get("model"), dict) else {}
    record.tier, record.n_params = facts.get("tier"), facts.get("n_params")
    record.model_label, record.model_family = facts.get("human_name"), facts.get("family")
    record.training_set = facts.get("training_set")
    record.dispersion = facts.get("dispersion")
    per_eval = t.get("model_seconds_per_evaluation") or {}
    record.model_seconds_per_eval_mean = per_eval.get("mean")
    record.model_seconds_per_eval_median = per_eval.get("median")
    record.n_model_evals = sum(int(x.get("n_evaluations") or 0) for x in timings) or t.get("n_evaluations")
    record.device = t.get("device")
    record.dtype = t.get("dtype")
    if isinstance(t.get("versions"), dict):
        record.versions.update({f"driver:{k}": v for k, v in t["versions"].items()})


def steps_for_time(time_ps: float, timestep_fs: float) -> int:
    """MD steps for ``time_ps`` of simulated time at ``timestep_fs``; the error names ``--time-ps``."""
    if not 0 < time_ps < float("inf"):
        raise DynamatError(f"--time-ps must be positive and finite, got {time_ps}")
    steps = int(round(time_ps * 1000.0 / timestep_fs))
    if not 1 <= steps <= MAX_STEPS:
        raise DynamatError(f"--time-ps {time_ps:g} is {steps} steps of {timestep_fs:g} fs; it must give between 1 "
                           f"and {MAX_STEPS} steps")
    return steps


def steps_for(system: System, steps: int | None, time_ps: float | None) -> int | None:
    """MD steps from ``--steps`` or ``--time-ps`` (simulated time at the protocol's time step)."""
    if steps is not None and time_ps is not None:
        raise DynamatError("give --steps or --time-ps, not both")
    if time_ps is not None:
        return steps_for_time(time_ps, system.protocol.timestep_fs)
    if steps is not None and not 1 <= steps <= MAX_STEPS:
        raise DynamatError(f"--steps must be between 1 and {MAX_STEPS}, got {steps}")
    return steps


def run_seed(run_dir: Path, seed: int | None, overwrite: bool = False) -> int:
    """The seed a run in ``run_dir`` uses: ``seed`` when given, else the one its run.json records (a rerun
    or resume reproduces it), else one drawn now (recorded in run.json, so it reproduces too)."""
    if seed is not None:
        if not 0 <= int(seed) <= MAX_SEED:
            raise DynamatError(f"--seed must be an integer between 0 and {MAX_SEED}, got {seed}")
        return int(seed)
    recorded = None if overwrite else (read_run_json(run_dir) or {}).get("seed")
    if isinstance(recorded, int) and 0 <= recorded <= MAX_SEED:
        return recorded
    return secrets.randbelow(2**31)


def run_system(model: str, system: str, reference, out: Path, opts: RunOptions, *, time_ps: float | None = None,
               protocol: str | None = None, start_frame: int = 0, overrides: dict | None = None,
               isolated_energies_eV: dict[str, float] | None = None,
               progress: Callable[[int, int], None] | None = None, announce: Callable[[str], None] | None = None,
               replica: int | None = None):
    """Loads ``system`` from ``reference`` (catalogue, inference, overrides) and runs it: what
    ``dynamat run``, ``demo`` and campaign tasks do. Returns (reference path, System, RunRecord).
    ``replica``: the index of this run in a ``--replicas`` set (its folder and run.json say so).

    ``isolated_energies_eV``: the model's isolated-atom energies by element when the caller has them
    already (``demo`` after its single points); otherwise they are computed when the reference has its own."""
    from dynamat.catalogue import with_protocol
    from dynamat.reference import load_system, start_atoms

    RunFolder.of(out, model, system, replica or 0)  # names are checked before anything is read
    reference, sys_entry, attrs = load_system(reference, system, **(overrides or {}))
    sys_entry = with_protocol(sys_entry, protocol)
    opts.steps = steps_for(sys_entry, opts.steps, time_ps)
    initial = start_atoms(reference, sys_entry, start_frame)
    rec = run_md(model, sys_entry, initial, str(reference), out, opts, progress=progress, announce=announce,
                 replica=replica)
    if attrs.get("isolated_atom_energies_eV"):
        _store_isolated_atom_energies(model, rec.run_dir, initial, opts, isolated_energies_eV)
    return reference, sys_entry, rec


def _store_isolated_atom_energies(model, run_dir: Path, atoms: ase.Atoms, opts, known: dict | None) -> None:
    """The model's isolated-atom energies beside a run whose reference gives its own (another code):
    a report can then reference Eq. 1 on both sides without the model at hand."""
    from dynamat.io.results import write_json_atomic
    from dynamat.singlepoint import isolated_atom_energies

    target = RunFolder(run_dir).isolated_atom_energies_json
    if target.exists():
        return
    data = {"model": model, "box_A": 20.0, "energies_eV": known}
    if known is None:
        try:
            e = isolated_atom_energies(opts.served(model), sorted(set(atoms.numbers.tolist())), driver_cmd=opts.driver_cmd,
                                       driver_args=tuple(opts.driver_args))
            data["energies_eV"] = {ase.Atoms(numbers=[z]).get_chemical_symbols()[0]: v for z, v in e.items()}
        except DynamatError as exc:
            data["note"] = f"unavailable: {exc}"
    write_json_atomic(target, data)


def run_packed(model: str, systems: list, reference, out: Path, opts: RunOptions, pack_size: int, *,
               time_ps: float | None = None, overrides: dict | None = None, start_frame: int = 0,
               progress_for: Callable[[str], Callable[[int, int], None]] | None = None,
               announce: Callable[[str], None] | None = None, wait_ms: float | None = None) -> list:
    """Runs ``systems`` with ``model``, ``pack_size`` at a time, all served by one pack driver
    (:mod:`dynamat.engines.pack`). Every run is an ordinary run folder. An item of ``systems`` is a
    name, or a :class:`dynamat.replicas.ReplicaRun` (one replica of a ``--replicas`` set, its seed
    chosen). Returns, per item, its RunRecord or the DynamatError that ended it."""
    import copy

    from dynamat.engines.pack import PackDriver, run_all

    if pack_size < 1:
        raise DynamatError(f"--pack must be at least 1, got {pack_size}")
    if opts.engine != "ipi":
        raise DynamatError("packed runs need the i-PI engine")
    for item in systems:
        name, replica = (item, None) if isinstance(item, str) else (item.system, item.replica)
        RunFolder.of(out, model, name, replica or 0)  # every name checked before anything runs
    pack = PackDriver(opts.served(model), Path(out) / f"pack-{model_folder(model)}.log", driver_cmd=opts.driver_cmd,
                      driver_args=opts.driver_args, threads=opts.driver_threads, wait_ms=wait_ms)

    def one(item):
        o = copy.copy(opts)
        o.pack = pack
        name, replica = (item, None) if isinstance(item, str) else (item.system, item.replica)
        if replica is not None:
            o.seed = item.seed
        label = name if replica is None else item.label
        return run_system(model, name, reference, out, o, time_ps=time_ps, overrides=overrides,
                          start_frame=start_frame, progress=progress_for(label) if progress_for else None,
                          announce=announce, replica=replica)[2]

    results = run_all(pack, systems, one, at_once=pack_size)
    for r in results:
        if isinstance(r, BaseException) and not isinstance(r, DynamatError):
            raise r  # a bug, not a run that ended with a reason
    return results
