"""Finding and stopping the external programs a run starts (i-PI, drivers)."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from dynamat.errors import DynamatError


def executable(name: str) -> str:
    """``name`` from this interpreter's environment first, then from PATH."""
    here = Path(sys.executable).parent / name
    if here.exists():
        return str(here)
    found = shutil.which(name)
    if not found:
        raise DynamatError(f"cannot find the {name!r} program; is it installed in this environment?")
    return found


def driver_command(driver_cmd: str | None) -> list[str]:
    """The driver to start: ``driver_cmd`` (a command line, e.g. another venv's dynamat-driver) or ours."""
    return shlex.split(driver_cmd) if driver_cmd else [executable("dynamat-driver")]


def start(cmd: list[str], cwd: Path, log: Path, env: dict | None = None) -> subprocess.Popen:
    """Starts ``cmd`` in its own process group, stdout and stderr appended to ``log``."""
    fh = open(log, "ab")
    try:
        return subprocess.Popen(
            cmd, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env=env,
        )
    finally:
        fh.close()


def stop(proc: subprocess.Popen | None, sig: int = signal.SIGTERM, grace_s: float = 20.0) -> None:
    """Sends ``sig`` to the process group, waits ``grace_s``, then kills what is left."""
    if proc is None or proc.poll() is not None:
        _kill_group(proc)
        return
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    _kill_group(proc)


def _kill_group(proc: subprocess.Popen | None) -> None:
    if proc is None:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def last_line(log: Path, default: str = "") -> str:
    """The last non-empty line of a log, for one-line error messages."""
    try:
        lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return default
    errors = [ln for ln in lines if "error" in ln.lower()]
    return (errors or lines or [default])[-1]
