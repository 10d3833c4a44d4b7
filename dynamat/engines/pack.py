"""Packed runs, server side: one ``dynamat-driver --pack-dir`` shared by several supervised runs.

Each run stays an ordinary run (its own folder, i-PI, restart point, run.json, timing file); only
the force client is shared. A run's i-PI attempt asks the pack for a session (a request file the
driver picks up, see :mod:`dynamat_driver.pack`) instead of starting its own driver, and gets a
:class:`PackSession` that the attempt watches as it would watch a driver process. When the pack
driver dies, every run it served is interrupted and resumes from its restart point; the first run
to resume starts a new pack driver.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from dynamat import processes
from dynamat.layout import RunFolder
from dynamat_driver.contract import (ACTIVE, DONE, REQUEST, STATUS_FILE, STOP, ContractError, check_done,
                                     check_pack_status, check_request, read_json)
from dynamat_driver.files import write_json_atomic


def session_request(run_dir: Path, where: list[str], *, tag: str = "", stress: dict | None = None,
                    connect_timeout: float = 120.0) -> dict:
    """The session request (:data:`dynamat_driver.contract.REQUEST_FIELDS`) for the i-PI at ``where``."""
    return check_request({
        "run_dir": str(run_dir),
        "timing_file": str(RunFolder(run_dir).driver_timing_json(tag)),
        "log_file": str(RunFolder(run_dir).driver_log(tag)),
        "connect_timeout": connect_timeout,
        **({"socket": where[1]} if where[0] == "--unix" else {"inet": where[1]}),
        **(stress or {}),
    })


class PackDriver:
    """One pack driver process for ``model``, shared by the runs of this process (one thread each).

    ``log``: where the pack driver's own output goes (beside the runs, e.g. ``<out>/pack-<model>.log``).
    """

    def __init__(self, model: str, log: Path, *, driver_cmd: str | None = None, driver_args: tuple = (),
                 threads: int | None = None, wait_ms: float | None = None):
        self.model = model
        self.log = Path(log).resolve()
        self.cmd = processes.driver_command(driver_cmd)  # a missing driver: one line now
        self.driver_args = tuple(driver_args)
        self.threads = threads
        self.wait_ms = wait_ms
        base = tempfile.gettempdir()
        base = base if len(base) <= 60 else "/tmp"
        _clean_stale_pack_dirs(Path(base))
        self.dir = Path(tempfile.mkdtemp(prefix="dm-pack-", dir=base))
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.cancelled = threading.Event()  # set: every run of the pack stops (Ctrl-C)
        self._lock = threading.Lock()
        self._n = 0
        self._closed: dict | None = None

    def ensure_started(self) -> subprocess.Popen:
        with self._lock:
            if self.proc is None or self.proc.poll() is not None:
                cmd = [*self.cmd, "--model", self.model, "--pack-dir", str(self.dir), "--pack-idle-exit", "60",
                       *self.driver_args]
                if self.threads:
                    cmd += ["--threads", str(int(self.threads))]
                if self.wait_ms is not None:
                    cmd += ["--pack-wait-ms", str(float(self.wait_ms))]
                self.log.parent.mkdir(parents=True, exist_ok=True)
                self.proc = processes.start(cmd, self.dir, self.log, die_with_parent=False)  # it watches its parent pid
                self.starts += 1
            return self.proc

    def attach(self, run_dir: Path, where: list[str], *, tag: str = "", stress: dict | None = None,
               connect_timeout: float = 120.0) -> "PackSession":
        """Asks the pack driver to serve the i-PI at ``where`` (``['--unix', path]`` or ``['--inet', 'h:p']``)."""
        proc = self.ensure_started()
        with self._lock:
            self._n += 1
            name = f"s{self._n:05d}"
        request = session_request(run_dir, where, tag=tag, stress=stress, connect_timeout=connect_timeout)
        write_json_atomic(self.dir / f"{name}{REQUEST}", request)  # the driver only sees whole requests
        with open(RunFolder(run_dir).driver_log(tag), "a") as fh:
            fh.write(f"dynamat: served by the pack driver in {self.dir} (pid {proc.pid}, log {self.log})\n")
        return PackSession(self, name, proc, RunFolder(run_dir).driver_log(tag))

    def summary(self) -> dict | None:
        try:
            return read_json(self.dir / STATUS_FILE, check_pack_status)
        except (OSError, ContractError):
            return None

    def close(self, grace_s: float = 30.0) -> dict | None:
        """Lets the driver finish its sessions and exit; returns its last ``pack.json`` (idempotent)."""
        if self._closed is not None:
            return self._closed
        (self.dir / STOP).touch()
        if self.proc is not None:
            try:
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                processes.stop(self.proc, signal.SIGTERM, grace_s=5)
        summary = self.summary()
        shutil.rmtree(self.dir, ignore_errors=True)
        self._closed = summary or {}
        return self._closed


class PackSession:
    """A run's share of the pack driver, watched like a driver process (``poll``, ``returncode``)."""

    def __init__(self, pack: PackDriver, name: str, proc: subprocess.Popen, log: Path):
        self.pack, self.name, self.proc, self.log = pack, name, proc, log
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is not None:
            return self.returncode
        done = self.pack.dir / f"{self.name}{DONE}"
        if done.exists():
            try:
                status = read_json(done, check_done)["status"]
            except (OSError, ContractError):
                status = "error"
            self.returncode = 0 if status in ("exit", "closed") else 1
        elif self.proc.poll() == 0 and (self.pack.dir / f"{self.name}{REQUEST}").exists():
            # the driver left (idle) just as this request came: never taken, so hand it to a new one
            self.proc = self.pack.ensure_started()
        elif self.proc.poll() is not None:
            # the pack driver itself died (or never loaded its model): its last words go to this
            # run's driver log, and a request it never took is withdrawn, not retried in a loop
            try:
                (self.pack.dir / f"{self.name}{REQUEST}").unlink()
            except OSError:
                pass
            with open(self.log, "a") as fh:
                last = processes.last_line(self.pack.log, "no message").removeprefix("dynamat-driver: error: ")
                fh.write(f"dynamat-driver: error: the pack driver exited (code {self.proc.returncode}): {last}\n")
            self.returncode = self.proc.returncode or 1
        return self.returncode

    def wait(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"pack session {self.name}", timeout)
            time.sleep(0.05)
        return self.returncode

    def stop(self, grace_s: float = 5.0) -> None:
        """After the run's i-PI stopped: the session ends when the driver sees the socket close;
        a request the driver never took is withdrawn."""
        try:
            (self.pack.dir / f"{self.name}{REQUEST}").unlink()
            return
        except OSError:
            pass
        try:
            self.wait(grace_s)
        except subprocess.TimeoutExpired:
            pass


def run_all(pack: PackDriver, items: Sequence, work: Callable, *, at_once: int | None = None) -> list:
    """``work(item)`` for every item, one thread each and ``at_once`` at a time (all by default),
    every run served by ``pack``. Returns, per item, what ``work`` returned or the exception it raised.

    An exception in the calling thread (Ctrl-C, a SIGTERM handler's) cancels every run (each stops
    where it is and keeps its restart point), waits for them and is re-raised. The pack driver is
    closed in every case; ``pack.close()`` then returns its summary again.
    """
    from concurrent.futures import ThreadPoolExecutor, wait

    results: list = [None] * len(items)

    def one(i: int) -> None:
        try:
            results[i] = work(items[i])
        except BaseException as exc:  # the caller decides what a failed run means
            results[i] = exc

    pool = ThreadPoolExecutor(max_workers=max(1, at_once or len(items)), thread_name_prefix="pack")
    try:
        futures = [pool.submit(one, i) for i in range(len(items))]
        while not all(f.done() for f in futures):
            wait(futures, timeout=0.2)  # short waits: signals reach this thread
        return results
    except BaseException:
        pack.cancelled.set()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        pack.close()


_PACK_FILE = re.compile(rf"^(s\d+({'|'.join(map(re.escape, (REQUEST, ACTIVE, DONE)))})|{re.escape(STOP)}|"
                        rf"{re.escape(STATUS_FILE)}|\..*\.tmp\d*)$")


def _clean_stale_pack_dirs(base: Path, min_age_s: float = 300.0, no_pid_age_s: float = 86400.0) -> None:
    """Removes our ``dm-pack-*`` folders left by a SIGKILLed supervisor: old, whose pack driver
    (``pack.json``'s pid, written before the model loads) is gone, holding nothing but the pack's own
    files; one whose driver never started at all only after ``no_pid_age_s``. Another user's, a live
    pack's or one holding anything else is left alone."""
    now = time.time()
    for d, st in processes.own_stale_dirs(base, "dm-pack-*", min_age_s):
        try:
            names = os.listdir(d)
            if not all(_PACK_FILE.match(n) for n in names):
                continue
            pid = read_json(d / STATUS_FILE, check_pack_status)["pid"] if STATUS_FILE in names else None
            if isinstance(pid, int) and processes.pid_alive(pid):
                continue
            if not isinstance(pid, int) and now - st.st_mtime < no_pid_age_s:
                continue
            for n in names:
                (d / n).unlink()
            d.rmdir()
        except (OSError, ValueError, AttributeError):
            continue


__all__ = ["PackDriver", "PackSession", "run_all", "session_request"]
