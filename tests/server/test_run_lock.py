"""The run folder's lock and the orphans it stops: a rerun sends SIGTERM to an i-PI whose supervisor is gone,
but only after a grace, because an i-PI that did get its parent-death signal is writing RESTART and a second
SIGTERM falls through to Python's default handler, killing it before the file is complete."""

import os
import subprocess
import sys
import threading
import time

from dynamat import processes
from dynamat.layout import RunFolder

ORPHAN = """
import fcntl, os, signal, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
def on_term(signum, frame):
    open("signalled", "w").write(repr(time.monotonic()))
    sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
open("ready", "w").close()
while True:
    time.sleep(0.05)
"""


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _orphan(run_dir):
    env = {**os.environ, processes.SUPERVISOR_ENV: str(_dead_pid())}
    proc = subprocess.Popen([sys.executable, "-c", ORPHAN, str(RunFolder(run_dir).lock)], cwd=run_dir, env=env)
    deadline = time.monotonic() + 30
    while not (run_dir / "ready").exists():
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    return proc


def test_orphan_is_signalled_after_the_grace_and_the_lock_then_taken(tmp_path):
    proc = _orphan(tmp_path)
    try:
        assert processes.orphans_in(tmp_path) == [proc.pid]
        t0 = time.monotonic()
        got = []
        th = threading.Thread(target=lambda: got.append(
            processes.RunLock(tmp_path, wait_s=60, notify=lambda line: None, orphan_grace_s=2.0)))
        th.start()
        th.join(timeout=60)
        assert got, "the lock was not taken"
        got[0].release()
        signalled_at = float((tmp_path / "signalled").read_text())
        assert signalled_at - t0 >= 2.0  # not while a soft exit may still be writing RESTART
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()


def test_live_holder_is_not_signalled_and_the_wait_is_bounded(tmp_path):
    """A holder whose supervisor is alive (this test process) is another run at work: the lock is refused
    in one line naming it, and the holder is left alone."""
    env = {**os.environ, processes.SUPERVISOR_ENV: str(os.getpid())}
    proc = subprocess.Popen([sys.executable, "-c", ORPHAN, str(RunFolder(tmp_path).lock)], cwd=tmp_path, env=env)
    try:
        while not (tmp_path / "ready").exists():
            assert proc.poll() is None
            time.sleep(0.05)
        assert processes.orphans_in(tmp_path) == []
        try:
            processes.RunLock(tmp_path, wait_s=1.0, notify=lambda line: None, orphan_grace_s=0.0)
        except processes.DynamatError as exc:
            assert str(proc.pid) in str(exc) and "\n" not in str(exc)
        else:
            raise AssertionError("the lock of a live run was taken")
        assert proc.poll() is None and not (tmp_path / "signalled").exists()
    finally:
        proc.kill()
