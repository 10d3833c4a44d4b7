"""One i-PI attempt: i-PI from input.xml or a restart file, and its drivers, watched to the end.

The supervisor (:mod:`dynamat.runner`) decides what to start from and what a failure means; this
module only starts the processes, reports progress and raises :class:`Interrupted` (resumable) or
:class:`Exploded` (a result) or :class:`~dynamat.errors.DynamatError` (a setup error).
"""

from __future__ import annotations

import re
import shutil
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from dynamat import processes
from dynamat.engines.ipi_input import records_frames
from dynamat.engines.ipi_restart import LastGoodKeeper, checkpoint_step, trim_outputs
from dynamat.engines.pack import PackSession
from dynamat.errors import DynamatError
from dynamat.io.ipi_output import last_properties_row, last_recorded_step
from dynamat.layout import PREFIX, RunFolder
from dynamat_driver.contract import write_socket_file

_PREFIX_ATTR = re.compile(r"sockets_prefix=(['\"])[^'\"]*\1")
_FFSOCKET = re.compile(r"(<ffsocket\b[^>]*?\bmode=)(['\"])\w+\2")
_ADDRESS = re.compile(r"<address>[^<]*</address>")
_PORT = re.compile(r"<port>[^<]*</port>")
_TOTAL_STEPS = re.compile(r"<total_steps>\s*\d+\s*</total_steps>")


class Interrupted(Exception):
    """The attempt ended early but the run may be resumed from i-PI's restart point."""


class Exploded(Exception):
    """The MD blew up (non-finite values, runaway temperature): a result, not a fault."""


def last_step(props: Path) -> int | None:
    row = last_properties_row(props)
    return None if row is None else int(row[0])


def explosion(row: list[float] | None, target_K: float, max_T_factor: float) -> str | None:
    """Why the latest properties row shows a blown-up MD, or None. Columns: step time T ..."""
    if row is None or len(row) < 3:
        return None
    if not all(np.isfinite(row)):
        return "non-finite energies, temperature or virial"
    if row[2] > max_T_factor * target_K:
        return f"temperature {row[2]:.0f} K exceeds {max_T_factor:g}x the target {target_K:g} K"
    return None


def _explosion_in_driver(msg: str) -> bool:
    """The driver refuses to return non-finite energies or forces: that is MD blowing up."""
    return "non-finite" in msg.lower()


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, 0))
        except OSError as exc:
            raise DynamatError(f"cannot bind an inet socket on {host!r}: {exc.strerror or exc}") from None
        return s.getsockname()[1]


def socket_dir(client=None) -> Path:
    """A private (0700) folder for a unix socket, short whatever ``$TMPDIR`` is: a unix socket path
    is limited to 107 bytes, and i-PI's error for a longer one hides that limit. A force client that
    names its socket relative to a fixed folder (CP2K: ``/tmp/ipi_<HOST>``) gets it there."""
    base, prefix = tempfile.gettempdir(), "dm-"
    if client is not None and getattr(client, "socket_base", None):
        base, prefix = client.socket_base, client.socket_dir_prefix
    if len(base) > 60:
        base = "/tmp"
    _clean_stale_socket_dirs(Path(base), f"{prefix}*")
    return Path(tempfile.mkdtemp(prefix=prefix, dir=base))


def _clean_stale_socket_dirs(base: Path, pattern: str = "dm-*", min_age_s: float = 300.0) -> None:
    """Removes our empty ``dm-*`` socket folders left by a SIGKILLed run. A live run's folder holds its
    socket; a just-made one is younger than ``min_age_s``; another user's is not ours to touch."""
    for d, _ in processes.own_stale_dirs(base, pattern, min_age_s):
        try:
            d.rmdir()  # only succeeds when empty
        except OSError:
            continue


def attempt_xml(text: str, sock_dir: Path, total_steps: int) -> str:
    """input.xml or a restart file made to listen in ``sock_dir`` and to stop at ``total_steps``."""
    attr = f"sockets_prefix='{sock_dir}/'"
    text, n = _PREFIX_ATTR.subn(attr, text, count=1)
    if n == 0:
        text = text.replace("<simulation", f"<simulation {attr}", 1)
    # a rerun with another --steps continues to (or stops at) the new target
    text = _TOTAL_STEPS.sub(f"<total_steps>{int(total_steps)}</total_steps>", text, count=1)
    return text


def run_attempt(model, run_dir: Path, resume_from: Path | None, settings, opts, samples, progress,
                lock_fd: int | None = None) -> None:
    """One i-PI process and ``opts.n_drivers`` drivers, from input.xml or a restart file."""
    if resume_from is not None and (at := checkpoint_step(resume_from)) is not None:
        trim_outputs(run_dir, PREFIX, at)  # i-PI appends from the step after the restart point
    sock_dir = socket_dir(opts.client)
    text, where = _attempt_input(run_dir, resume_from, sock_dir, settings, opts)
    ipi = None
    drivers: list = []
    clean_exit = False
    n_drivers = max(1, int(opts.n_drivers))
    tags = [""] if n_drivers == 1 else [f"_{i}" for i in range(n_drivers)]
    rf = RunFolder(run_dir, PREFIX)
    keeper = LastGoodKeeper(run_dir, (rf.restart.name, rf.checkpoint.name))
    try:
        plan = _stress_plan(text, settings, opts, n_drivers)
        if records_frames(rf.input_xml.read_text()):
            plan = _with_record(plan, rf, n_drivers)  # before i-PI starts: a run it cannot serve is refused first
        # i-PI itself, its binary frames written in one call each (dynamat.ipi_launch; the same bytes)
        ipi = processes.start([sys.executable, "-m", "dynamat.ipi_launch", rf.attempt_xml.name], run_dir, rf.ipi_log,
                              env=processes.supervised_env(), pass_fds=() if lock_fd is None else (lock_fd,))
        if opts.socket_mode == "unix":
            where = _wait_for_socket(ipi, sock_dir / "s", run_dir, opts.start_timeout_s)
        _start_drivers(drivers, tags, model, run_dir, where, plan, opts)
        _watch(ipi, drivers, tags, run_dir, settings, opts, samples, progress, keeper, "record" in plan)
        props = rf.properties
        if ipi.returncode != 0:
            raise Interrupted(f"i-PI stopped (code {ipi.returncode}): {processes.last_line(rf.ipi_log)}")
        if (last_step(props) or 0) < settings.last_saved_step:
            raise Interrupted(f"i-PI ended at step {last_step(props)} of {settings.steps}")
        clean_exit = True
        for d in drivers:
            try:
                d.wait(timeout=30)
            except Exception:
                pass
    finally:
        if not clean_exit:
            processes.stop(ipi, signal.SIGTERM)  # soft exit: i-PI writes RESTART where it can
        processes.stop(ipi)
        for d in drivers:
            if isinstance(d, PackSession):
                d.stop()
            else:
                processes.stop(d, signal.SIGTERM, grace_s=5)
        keeper.check()  # the RESTART of i-PI's exit
        shutil.rmtree(sock_dir, ignore_errors=True)


def _attempt_input(run_dir: Path, resume_from: Path | None, sock_dir: Path, settings, opts) -> tuple[str, list]:
    """Writes attempt.xml (input.xml or the restart file, on this attempt's socket); returns its text and,
    for an inet socket, the driver's address arguments (a unix socket's come once i-PI has made it)."""
    rf = RunFolder(run_dir, PREFIX)
    text = (rf.input_xml if resume_from is None else resume_from).read_text()
    text = attempt_xml(text, sock_dir, settings.steps)
    where: list = []
    if opts.socket_mode == "inet":
        port = _free_port(opts.host)
        text = _FFSOCKET.sub(r"\g<1>'inet'", text, count=1)
        text = _ADDRESS.sub(f"<address> {opts.host} </address>", text, count=1)
        text = _PORT.sub(f"<port> {port} </port>", text, count=1)
        write_socket_file(run_dir, opts.host, port)
        where = ["--inet", f"{opts.host}:{port}", "--connect-timeout", str(opts.start_timeout_s)]
    rf.attempt_xml.write_text(text)
    return text, where


def _wait_for_socket(ipi, sock: Path, run_dir: Path, timeout_s: float) -> list:
    t_start = time.monotonic()
    while not sock.exists():
        if ipi.poll() is not None:
            raise DynamatError(f"i-PI stopped before opening its socket: {processes.last_line(RunFolder(run_dir).ipi_log)}")
        if time.monotonic() - t_start > timeout_s:
            raise DynamatError("i-PI did not open its socket within the start timeout")
        time.sleep(0.02)
    return ["--unix", str(sock)]


def _stress_plan(text: str, settings, opts, n_drivers: int) -> dict:
    """In NVT the virial is only written, every stride steps, so the driver computes the model's stress
    for those steps only (one driver sees every request; the first is the restart file's <step>, or 0).
    Empty when the driver must compute it always: in NPT the virial drives the barostat every step, and
    another code as client (CP2K) has no schedule."""
    if (n_drivers != 1 or "--stress-stride" in opts.driver_args or getattr(settings, "is_npt", False)
            or opts.client is not None):
        return {}
    start = re.search(r"<step>\s*(\d+)\s*</step>", text)
    return {"stress_stride": int(settings.stride), "first_step": int(start.group(1)) if start else 0,
            "beads": max(1, int(settings.nbeads))}


def _with_record(plan: dict, rf: RunFolder, n_drivers: int) -> dict:
    """The stress plan plus the frame record: the run's input writes no positions, its driver records them."""
    if not plan or n_drivers != 1:
        raise DynamatError(f"{rf.path}: this run's frames are recorded by its one driver (an every-step protocol); "
                           "resume it with one driver and without --stress-stride among the driver arguments")
    return {**plan, "record": str(rf.frame_record)}


def _start_drivers(drivers: list, tags: list, model, run_dir: Path, where: list, stress: dict, opts) -> None:
    """Starts one driver (or pack session) per tag into ``drivers``, so the caller stops what was started."""
    for tag in tags:
        if opts.client is not None:  # another code's force client (dynamat.refgen: CP2K)
            drivers.append(opts.client.start(run_dir, where, tag))
            continue
        if opts.pack is not None:  # a session of the shared pack driver (dynamat.engines.pack)
            drivers.append(opts.pack.attach(run_dir, where, tag=tag, stress=stress,
                                            connect_timeout=opts.start_timeout_s))
            continue
        cmd = processes.driver_command(opts.driver_cmd) + [
            "--model", model, *where,
            "--timing-file", str(RunFolder(run_dir).driver_timing_json(tag)), *opts.driver_args,
        ]
        if opts.driver_threads:
            cmd += ["--threads", str(int(opts.driver_threads))]
        if stress:
            cmd += ["--stress-stride", str(stress["stress_stride"]), "--first-step", str(stress["first_step"]),
                    "--beads", str(stress["beads"])]
        if stress.get("record"):
            cmd += ["--record", stress["record"]]
        drivers.append(processes.start(cmd, run_dir, RunFolder(run_dir).driver_log(tag)))


def _watch(ipi, drivers: list, tags: list, run_dir: Path, settings, opts, samples, progress, keeper,
           recorded_run: bool) -> None:
    """Polls until i-PI exits: records progress, keeps the last good restart point, and raises on an
    explosion, a dead driver or a stall. ``recorded_run``: the driver's frame record shows progress too."""
    props = RunFolder(run_dir, PREFIX).properties
    record = RunFolder(run_dir, PREFIX).frame_record if recorded_run else None
    first_step = last_step(props)
    last_progress = time.monotonic()
    poll = 0.05 if settings.steps < 2000 else 0.2
    while ipi.poll() is None:
        time.sleep(poll)
        if opts.pack is not None and opts.pack.cancelled.is_set():
            raise KeyboardInterrupt
        keeper.check()
        now = time.monotonic()
        row = last_properties_row(props)
        step = None if row is None else int(row[0])
        # every step, where i-PI flushes its rows every ~100 steps
        recorded = None if record is None else last_recorded_step(record)
        if recorded is not None and (step is None or recorded > step):
            step = recorded
        if step is not None and step != first_step and (not samples or step > samples[-1][1]):
            samples.append((now, step))
            last_progress = now
            if progress:
                progress(step, settings.steps)
        why = explosion(row, settings.temperature_K, opts.max_temperature_factor)
        if why:
            raise Exploded(f"{why} at step {step}")
        if opts.client is not None and (fatal := opts.client.fatal(run_dir)):
            raise DynamatError(fatal)  # e.g. SCF not converged: a restart would only repeat it
        _check_drivers(ipi, drivers, tags, run_dir, step, first_step, opts.client)
        if now - last_progress > opts.stall_timeout_s:
            raise Interrupted(f"no MD progress for {opts.stall_timeout_s:.0f} s: i-PI or the driver hung")


def _check_drivers(ipi, drivers: list, tags: list, run_dir: Path, step, first_step, client=None) -> None:
    """Raises when a driver has ended while i-PI runs on: an explosion, a setup error or an interruption."""
    for tag, driver in zip(tags, drivers):
        if driver.poll() is None or ipi.poll() is not None:
            continue
        # a client that ended cleanly got EXIT and leaves just before i-PI does (a pack session ends
        # at once, while i-PI may still be writing its last files on a loaded machine)
        deadline = time.monotonic() + (30.0 if driver.returncode == 0 else 1.0)
        while ipi.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        if ipi.poll() is not None:
            return
        if client is not None and (fatal := client.fatal(run_dir)):
            raise DynamatError(fatal)
        msg = (client.exit_message(run_dir, tag) if client is not None
               else processes.last_line(RunFolder(run_dir).driver_log(tag), "no message"))
        if _explosion_in_driver(msg):
            raise Exploded(msg)
        if step is None or step == first_step:  # died before any MD: a setup error
            raise DynamatError(f"the driver exited (code {driver.returncode}) before the first MD step: {msg}")
        raise Interrupted(f"the driver exited (code {driver.returncode}) during the run: {msg}")
