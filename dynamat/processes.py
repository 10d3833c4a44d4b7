"""Finding and stopping the external programs a run starts (i-PI, drivers)."""

from __future__ import annotations

import functools
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
    if not driver_cmd:
        return [executable("dynamat-driver")]
    try:
        argv = shlex.split(driver_cmd)
    except ValueError as exc:
        raise DynamatError(f"--driver-cmd {driver_cmd!r} is not a valid command line: {exc}") from None
    if not argv:
        raise DynamatError("--driver-cmd is empty")
    prog = argv[0] = os.path.expanduser(argv[0])
    found = shutil.which(prog) if "/" not in prog else (prog if os.access(prog, os.X_OK) and Path(prog).is_file() else None)
    if not found:
        raise DynamatError(f"--driver-cmd: {prog!r} is not an executable program")
    return argv


def _load_prctl():
    """libc's prctl, loaded once in the parent: after a fork only async-signal-safe work is safe in
    the child, and loading a library there (dlopen) is not, when another thread of the parent held
    the loader's lock at the fork (numpy's BLAS threads, a pack's run threads)."""
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux
        return None


_PRCTL = _load_prctl()
_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent_pid: int) -> None:
    """In the child: get SIGTERM when the supervising process dies, however it dies (Linux).

    i-PI answers SIGTERM with a soft exit that writes RESTART, so a killed job stays resumable and
    leaves no orphan computing into a folder that a rerun is about to resume. A parent that died
    before the request was made never sends the signal: the child sends it to itself.
    """
    if _PRCTL is None:
        return
    _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGTERM))
    if os.getppid() != parent_pid:
        os.kill(os.getpid(), signal.SIGTERM)


def start(cmd: list[str], cwd: Path, log: Path, env: dict | None = None, pass_fds=(), *,
          die_with_parent: bool = True) -> subprocess.Popen:
    """Starts ``cmd`` in its own process group, stdout and stderr appended to ``log``.

    ``die_with_parent=False`` for a child shared by several threads (a pack driver): Linux sends the
    parent-death signal when the *thread* that started the child ends, not the process; such a
    child watches its parent pid itself."""
    fh = open(log, "ab")
    try:
        return subprocess.Popen(
            cmd, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env=env, pass_fds=pass_fds,
            preexec_fn=functools.partial(_die_with_parent, os.getpid()) if die_with_parent else None,
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


#: set in the environment of a supervised i-PI: the pid of the supervisor that started it
SUPERVISOR_ENV = "DYNAMAT_SUPERVISOR_PID"


def supervised_env() -> dict:
    """The environment for an i-PI that inherits a run's lock: it names its supervisor, so a rerun
    can tell an orphan of a killed job from a run that is alive (see :class:`RunLock`)."""
    return {**os.environ, SUPERVISOR_ENV: str(os.getpid())}


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a running process (a zombie, dead but not yet reaped, is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def own_stale_dirs(base: Path, pattern: str, min_age_s: float = 300.0) -> list[tuple[Path, os.stat_result]]:
    """Our folders ``base/pattern`` untouched for ``min_age_s``: candidates for the clean-up of what a
    SIGKILLed run left in ``$TMPDIR`` (a link, a file or another user's folder is never one)."""
    now = time.time()
    try:
        candidates = list(base.glob(pattern))
    except OSError:
        return []
    found = []
    for d in candidates:
        try:
            st = d.lstat()
        except OSError:
            continue
        if not d.is_symlink() and d.is_dir() and st.st_uid == os.getuid() and now - st.st_mtime >= min_age_s:
            found.append((d, st))
    return found


def orphans_in(run_dir: Path) -> list[int]:
    """Processes working in ``run_dir`` whose supervisor (``SUPERVISOR_ENV`` in their environment) is
    gone: an i-PI that outlived a SIGKILLed job because its parent-death signal never came (seen on
    loaded CI machines). Linux /proc only; elsewhere none are found."""
    target = os.path.realpath(run_dir)
    key = SUPERVISOR_ENV.encode() + b"="
    found = []
    try:
        entries = [e for e in os.listdir("/proc") if e.isdigit()]
    except OSError:
        return found
    for entry in entries:
        pid = int(entry)
        try:
            if pid == os.getpid() or os.readlink(f"/proc/{pid}/cwd") != target:
                continue
            with open(f"/proc/{pid}/environ", "rb") as fh:
                env = fh.read().split(b"\0")
        except OSError:
            continue
        sup = next((e[len(key):] for e in env if e.startswith(key)), b"")
        if sup.isdigit() and not pid_alive(int(sup)):
            found.append(pid)
    return found


class RunLock:
    """An exclusive lock on a run folder, held by the supervisor and inherited by its i-PI.

    Two supervisors never write into one folder, and a rerun waits (bounded) until an i-PI left
    over from a killed job has finished its soft exit. An i-PI whose supervisor is gone but which
    never got its parent-death signal is sent SIGTERM here (its soft exit writes RESTART), so a
    rerun resumes instead of finding the folder locked for good. That signal waits ``orphan_grace_s``:
    an i-PI that did get its parent-death signal may be writing RESTART, and a second SIGTERM falls
    through to Python's default handler and kills it before the file is complete.
    """

    def __init__(self, run_dir: Path, wait_s: float = 60.0, notify=None, orphan_grace_s: float = 10.0):
        """``notify`` (default: print to stderr) hears at once when the folder is busy and for whom it waits."""
        import fcntl

        from dynamat.layout import RunFolder

        lock = RunFolder(run_dir).lock
        self.fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + wait_s
        signalled: set[int] = set()
        next_look = time.monotonic() + orphan_grace_s
        told = False
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                now = time.monotonic()
                if not told:
                    told = True
                    (notify or _to_stderr)(f"{run_dir} is in use by {lock_holders(lock)}; "
                                           f"waiting up to {wait_s:.0f} s for it to finish")
                if now > deadline:
                    os.close(self.fd)
                    raise DynamatError(f"another dynamat run is using {run_dir} "
                                       f"({lock_holders(lock)})") from None
                if now >= next_look:
                    for pid in set(orphans_in(run_dir)) - signalled:
                        try:
                            os.kill(pid, signal.SIGTERM)
                        except OSError:
                            pass
                        signalled.add(pid)
                    next_look = now + 2.0
                time.sleep(0.2)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def lock_holders(lock: Path) -> str:
    """Who holds the flock on ``lock``, as 'pid N (command)', from /proc/locks (Linux; else 'another process')."""
    try:
        ino = os.stat(lock).st_ino
        with open("/proc/locks") as fh:
            rows = [ln.split() for ln in fh]
    except OSError:
        return "another process"
    pids = sorted({int(r[4]) for r in rows if len(r) > 5 and r[1] == "FLOCK" and r[4].isdigit()
                   and r[5].rsplit(":", 1)[-1] == str(ino)})
    found = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                # whitespace folded: the message is one line whatever the holder's arguments hold
                cmd = " ".join(a.decode(errors="replace") for a in fh.read().replace(b"\0", b" ").split())
        except OSError:
            cmd = "gone; its i-PI still holds the folder"
        found.append(f"pid {pid} ({cmd[:200]})")
    return ", ".join(found) or "another process"


def last_line(log: Path, default: str = "") -> str:
    """The last non-empty line of a log, for one-line error messages."""
    try:
        lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return default
    errors = [ln for ln in lines if "error" in ln.lower()]
    return (errors or lines or [default])[-1]
