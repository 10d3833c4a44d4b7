"""``dynamat run``: i-PI plus one dynamat-driver on a private socket, supervised to the end.

A run directory ``<out>/<model>/<system>/`` receives the i-PI input, the initial structure, i-PI's
outputs and RESTART, ``ipi.log``, ``driver.log``, ``driver_timing.json`` and ``run.json``.
Either process dying or the MD stalling ends the run with an error; no process is left behind.
"""

from __future__ import annotations

import json
import platform
import re
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Callable

import ase
import numpy as np

from dynamat import processes
from dynamat.ase_engine import relax_cell, run_ase_nhc
from dynamat.catalogue import System
from dynamat.errors import DynamatError
from dynamat.io.ipi_output import last_properties_row
from dynamat.ipi_input import MDSettings, write_inputs

PREFIX = "simulation"


@dataclass
class RunOptions:
    steps: int | None = None  # None: the protocol's full length
    seed: int = 12345
    driver_cmd: str | None = None  # another environment's dynamat-driver, for conflicting MLIPs
    driver_args: tuple[str, ...] = ()  # e.g. ("--device", "cuda", "--model-path", "x.pt")
    batch_size: int | None = None  # structures per i-PI request; None: the bead count
    nbeads: int = 1  # > 1: path-integral MD (PILE-L), see dynamat.pimd
    socket_mode: str = "unix"  # "unix" (private 0700 folder) or "inet" (TCP, see host)
    host: str = "127.0.0.1"  # inet interface; localhost unless the user names another
    overwrite: bool = False
    stall_timeout_s: float = 600.0  # no new MD step for this long = hung
    start_timeout_s: float = 120.0
    max_restarts: int = 3  # recoveries from i-PI's restart point after a dead driver or server
    max_temperature_factor: float = 5.0  # kinetic temperature above this x target = exploded
    engine: str = "ipi"  # "ipi", or "ase": ASE's Nose-Hoover chain (the paper's exact MLIP protocol)


@dataclass
class RunRecord:
    """What run.json holds."""

    model: str
    system: str
    reference: str
    status: str = "running"  # running | completed | failed | exploded
    error: str | None = None
    steps_requested: int = 0
    steps_done: int = 0
    seed: int = 0
    protocol: dict = field(default_factory=dict)
    seconds_per_step_mean: float | None = None
    seconds_per_step_median: float | None = None
    model_seconds_per_eval_mean: float | None = None
    model_seconds_per_eval_median: float | None = None
    n_model_evals: int | None = None
    device: str | None = None
    dtype: str | None = None
    versions: dict = field(default_factory=dict)
    wall_seconds: float | None = None
    time_to_failure_fs: float | None = None
    restarts: list = field(default_factory=list)
    relaxation: dict | None = None  # relaxed-cell protocol: steps, final fmax, volume change
    started: str = ""
    finished: str | None = None


def _versions() -> dict:
    out = {"python": platform.python_version()}
    for pkg in ("dynamat", "ipi", "ase", "numpy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def _check_writable(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise DynamatError(f"cannot write to {run_dir}: {exc.strerror or exc}") from None


def restart_file(run_dir: Path) -> Path | None:
    """The newest i-PI restart point in ``run_dir``: RESTART (soft exit) or the checkpoint, by step."""
    best, best_step = None, -1
    for cand in (run_dir / "RESTART", run_dir / f"{PREFIX}.chk"):
        try:
            m = _STEP_TAG.search(cand.read_text())
        except OSError:
            continue
        if m and int(m.group(1)) > best_step:
            best, best_step = cand, int(m.group(1))
    return best


def prepare_run_dir(run_dir: Path, overwrite: bool) -> Path | None:
    """Decides between a fresh start and a resume; returns the restart file to resume from, if any.

    A completed run is never replaced without ``overwrite``; an interrupted one is resumed from its
    RESTART or checkpoint; an unfinished one that cannot be resumed is refused.
    """
    if run_dir.exists() and any(p.name != ".lock" for p in run_dir.iterdir()):
        if overwrite:
            shutil.rmtree(run_dir)
        else:
            status = None
            try:
                status = json.loads((run_dir / "run.json").read_text()).get("status")
            except (OSError, ValueError):
                pass
            if status == "completed":
                raise DynamatError(f"{run_dir} holds a completed run; pass --overwrite to replace it or --out to choose another folder")
            if status == "exploded":
                raise DynamatError(f"{run_dir} holds a run that exploded (a result, kept); pass --overwrite to run again")
            restart = restart_file(run_dir)
            if restart is None:
                raise DynamatError(f"{run_dir} already holds an unfinished run with no RESTART or checkpoint to resume from; pass --overwrite to start again")
            _check_writable(run_dir)
            return restart
    _check_writable(run_dir)
    return None


_STEP_TAG = re.compile(r"<step>\s*(\d+)\s*</step>")
_PREFIX_ATTR = re.compile(r"sockets_prefix=(['\"])[^'\"]*\1")
_FFSOCKET = re.compile(r"(<ffsocket\b[^>]*?\bmode=)(['\"])\w+\2")
_ADDRESS = re.compile(r"<address>[^<]*</address>")
_PORT = re.compile(r"<port>[^<]*</port>")


def _free_port(host: str) -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, 0))
        except OSError as exc:
            raise DynamatError(f"cannot bind an inet socket on {host!r}: {exc.strerror or exc}") from None
        return s.getsockname()[1]


def _last_step(props: Path) -> int | None:
    row = last_properties_row(props)
    return None if row is None else int(row[0])


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


class _Interrupted(Exception):
    """One attempt ended early but the run may be resumed from i-PI's restart point."""


class _Exploded(Exception):
    pass


def _explosion(row: list[float] | None, target_K: float, max_T_factor: float) -> str | None:
    """Why the latest properties row shows a blown-up MD, or None. Columns: step time T ..."""
    if row is None or len(row) < 3:
        return None
    if not all(np.isfinite(row)):
        return "non-finite energies, temperature or virial"
    if row[2] > max_T_factor * target_K:
        return f"temperature {row[2]:.0f} K exceeds {max_T_factor:g}x the target {target_K:g} K"
    return None


def run_md(
    model: str,
    system: System,
    initial: ase.Atoms,
    reference: str,
    out: Path,
    opts: RunOptions,
    progress: Callable[[int, int], None] | None = None,
) -> RunRecord:
    """Runs one (model, system) MD with i-PI and writes run.json; raises DynamatError on failure.

    A driver that dies mid-run, or an i-PI that dies or hangs, is recovered from i-PI's restart
    point with fresh processes (at most ``opts.max_restarts`` times); i-PI appends to its outputs
    and the readers keep one copy per step, so no frame is lost or repeated. MD that blows up
    (non-finite values, runaway temperature) stops with status ``exploded`` and its outputs kept.
    """
    run_dir = (Path(out) / model / system.name).resolve()  # children run inside it: no relative paths
    if run_dir.is_dir():
        lock = processes.RunLock(run_dir)  # wait for a leftover i-PI before judging the folder
        lock.release()
    resume_from = prepare_run_dir(run_dir, opts.overwrite)
    lock = processes.RunLock(run_dir)
    settings: MDSettings = system.md_settings(steps=opts.steps, seed=opts.seed, nbeads=opts.nbeads)
    record = RunRecord(
        model=model,
        system=system.name,
        reference=str(reference),
        steps_requested=settings.steps,
        seed=opts.seed,
        protocol={**asdict(system.protocol), **asdict(settings), "system_class": system.system_class, "dims": system.dims},
        versions=_versions(),
        started=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )
    record.protocol["engine"] = opts.engine
    if opts.engine == "ase" and system.protocol.ipi_thermostat != "svr":
        raise DynamatError("--engine ase reproduces the paper's Nose-Hoover-chain protocols only; "
                           f"{system.name} uses {system.protocol.paper_thermostat}")
    if opts.engine == "ase" and opts.nbeads > 1:
        raise DynamatError("path integrals (--beads) need the i-PI engine")
    if opts.nbeads < 1:
        raise DynamatError("--beads must be at least 1")
    if opts.engine not in ("ipi", "ase"):
        raise DynamatError(f"unknown engine {opts.engine!r}: use ipi or ase")
    if resume_from is None and system.protocol.relax:
        p = system.protocol
        if progress:
            progress(0, settings.steps)
        initial, record.relaxation = relax_cell(
            model, initial, run_dir, processes.driver_command(opts.driver_cmd) + list(opts.driver_args),
            fmax=p.relax_fmax_eV_per_A, max_steps=p.relax_max_steps, timeout_s=opts.stall_timeout_s,
        )
    if resume_from is None:
        write_inputs(initial, settings, run_dir, mode="unix", address="s", sockets_prefix="/tmp/ipi_",
                     prefix=PREFIX, batch_size=opts.batch_size)
    props = run_dir / f"{PREFIX}.out"
    samples: list[tuple[float, int]] = []
    t0 = time.monotonic()
    restarts = 0
    try:
        while opts.engine == "ase":
            try:
                run_ase_nhc(model, initial, settings, run_dir, processes.driver_command(opts.driver_cmd) + list(opts.driver_args),
                            samples, progress, timeout_s=opts.stall_timeout_s, prefix=PREFIX,
                            max_temperature_K=opts.max_temperature_factor * settings.temperature_K)
            except DynamatError as exc:
                if "exploded" in str(exc) or "non-finite" in str(exc):
                    raise _Exploded(str(exc).removeprefix("MD exploded: ")) from None
                raise
            break
        while opts.engine == "ipi":
            try:
                _attempt(model, run_dir, resume_from, settings, opts, samples, progress, lock.fd)
                break
            except _Interrupted as exc:
                restarts += 1
                resume_from = restart_file(run_dir)
                if restarts > opts.max_restarts or resume_from is None:
                    raise DynamatError(f"{exc} (after {restarts - 1} restart(s); rerun to resume)") from None
                record.restarts.append({"reason": str(exc), "from": resume_from.name,
                                        "step": _last_step(props)})
        record.status = "completed"
    except _Exploded as exc:
        record.status = "exploded"
        record.error = f"MD exploded: {exc}"
        record.time_to_failure_fs = (_last_step(props) or 0) * settings.timestep_fs
        raise DynamatError(record.error) from None
    except DynamatError as exc:
        record.status = "failed"
        record.error = str(exc)
        raise
    finally:
        record.steps_done = _last_step(props) or 0
        record.seconds_per_step_mean, record.seconds_per_step_median = step_timing(
            samples, warmup_steps=max(settings.stride, settings.steps // 10)
        )
        record.wall_seconds = time.monotonic() - t0
        record.finished = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        _merge_driver_timing(record, run_dir / "driver_timing.json")
        tmp = run_dir / "run.json.tmp"
        tmp.write_text(json.dumps(asdict(record), indent=2) + "\n")
        tmp.replace(run_dir / "run.json")
        lock.release()
    return record


def _attempt(model, run_dir, resume_from, settings, opts, samples, progress, lock_fd) -> None:
    """One i-PI process and one driver, from input.xml or a restart file, supervised to the end."""
    sock_dir = Path(tempfile.mkdtemp(prefix="dm-"))  # mode 0700: private to this attempt
    if resume_from is None:
        text = (run_dir / "input.xml").read_text()
    else:
        text = resume_from.read_text()
    attr = f"sockets_prefix='{sock_dir}/'"
    text, n = _PREFIX_ATTR.subn(attr, text, count=1)
    if n == 0:
        text = text.replace("<simulation", f"<simulation {attr}", 1)
    if opts.socket_mode == "inet":
        port = _free_port(opts.host)
        text = _FFSOCKET.sub(r"\g<1>'inet'", text, count=1)
        text = _ADDRESS.sub(f"<address> {opts.host} </address>", text, count=1)
        text = _PORT.sub(f"<port> {port} </port>", text, count=1)
        (run_dir / "socket.json").write_text(json.dumps({"mode": "inet", "host": opts.host, "port": port}) + "\n")
        where = ["--inet", f"{opts.host}:{port}", "--connect-timeout", str(opts.start_timeout_s)]
    (run_dir / "attempt.xml").write_text(text)
    ipi = driver = None
    props = run_dir / f"{PREFIX}.out"
    t_start = time.monotonic()
    clean_exit = False
    try:
        ipi = processes.start([processes.executable("i-pi"), "attempt.xml"], run_dir, run_dir / "ipi.log",
                              pass_fds=(lock_fd,))
        if opts.socket_mode == "unix":
            sock = sock_dir / "s"
            while not sock.exists():
                if ipi.poll() is not None:
                    raise DynamatError(f"i-PI stopped before opening its socket: {processes.last_line(run_dir / 'ipi.log')}")
                if time.monotonic() - t_start > opts.start_timeout_s:
                    raise DynamatError("i-PI did not open its socket within the start timeout")
                time.sleep(0.05)
            where = ["--unix", str(sock)]
        cmd = processes.driver_command(opts.driver_cmd) + [
            "--model", model, *where,
            "--timing-file", str(run_dir / "driver_timing.json"), *opts.driver_args,
        ]
        driver = processes.start(cmd, run_dir, run_dir / "driver.log")
        first_step = _last_step(props)
        last_progress = time.monotonic()
        while ipi.poll() is None:
            time.sleep(0.2)
            now = time.monotonic()
            row = last_properties_row(props)
            step = None if row is None else int(row[0])
            if step is not None and step != first_step and (not samples or step > samples[-1][1]):
                samples.append((now, step))
                last_progress = now
                if progress:
                    progress(step, settings.steps)
            why = _explosion(row, settings.temperature_K, opts.max_temperature_factor)
            if why:
                raise _Exploded(f"{why} at step {step}")
            if driver.poll() is not None and ipi.poll() is None:
                time.sleep(1.0)  # a driver that got EXIT leaves just before i-PI does
                if ipi.poll() is None:
                    msg = processes.last_line(run_dir / "driver.log", "no message")
                    if _explosion_in_driver(msg):
                        raise _Exploded(msg)
                    if step is None or step == first_step:  # died before any MD: a setup error
                        raise DynamatError(f"the driver exited (code {driver.returncode}) before the first MD step: {msg}")
                    raise _Interrupted(f"the driver exited (code {driver.returncode}) during the run: {msg}")
            if now - last_progress > opts.stall_timeout_s:
                raise _Interrupted(f"no MD progress for {opts.stall_timeout_s:.0f} s: i-PI or the driver hung")
        if ipi.returncode != 0:
            raise _Interrupted(f"i-PI stopped (code {ipi.returncode}): {processes.last_line(run_dir / 'ipi.log')}")
        if (_last_step(props) or 0) < settings.steps:
            raise _Interrupted(f"i-PI ended at step {_last_step(props)} of {settings.steps}")
        clean_exit = True
        try:
            driver.wait(timeout=30)
        except Exception:
            pass
    finally:
        if not clean_exit:
            processes.stop(ipi, signal.SIGTERM)  # soft exit: i-PI writes RESTART where it can
        processes.stop(ipi)
        processes.stop(driver, signal.SIGTERM, grace_s=5)
        shutil.rmtree(sock_dir, ignore_errors=True)


def _explosion_in_driver(msg: str) -> bool:
    """The driver refuses to return non-finite energies or forces: that is MD blowing up."""
    return "non-finite" in msg.lower()


def _merge_driver_timing(record: RunRecord, path: Path) -> None:
    try:
        t = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    per_eval = t.get("model_seconds_per_evaluation") or {}
    record.model_seconds_per_eval_mean = per_eval.get("mean")
    record.model_seconds_per_eval_median = per_eval.get("median")
    record.n_model_evals = t.get("n_evaluations")
    record.device = t.get("device")
    record.dtype = t.get("dtype")
    if isinstance(t.get("versions"), dict):
        record.versions.update({f"driver:{k}": v for k, v in t["versions"].items()})
