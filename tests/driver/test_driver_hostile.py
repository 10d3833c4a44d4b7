"""A server that lies or stays silent costs the driver one line, a non-zero exit, little memory and
bounded time (issue 24, hole 4).

The test process is the server: a plain Python unix socket in tmp_path that sends one hostile
message to a real ``dynamat-driver`` subprocess. The driver's peak memory is read from the kernel's
accounting for that one child (``os.wait4``'s ``ru_maxrss``), so an allocation the server merely
announced shows even when the driver fails afterwards.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

BIN = Path(sys.executable).parent
#: peak resident memory a driver serving EMT on 4 atoms stays under (it needs ~100 MB: numpy, ase, click)
MAX_RSS_MB = 300
#: seconds a hostile case may take; a driver that waits longer has hung
DEADLINE_S = 60


def _hdr(name: str) -> bytes:
    return name.upper().ljust(12).encode()


def _init(text: bytes, length: int | None = None) -> bytes:
    return _hdr("init") + struct.pack("=ii", 0, len(text) if length is None else length) + text


def _posdata_head(nat: int) -> bytes:
    h = np.eye(3) * 10.0
    return _hdr("posdata") + h.tobytes() + np.linalg.inv(h).tobytes() + struct.pack("=i", nat)


CU4 = _init(b"species: Cu4")
CASES = {
    # announced sizes: refused before anything is allocated for them
    "posdata_2e9_atoms": ([CU4, _posdata_head(2_000_000_000)], "2000000000 atoms"),
    "posdata_negative_atoms": ([CU4, _posdata_head(-3)], "-3 atoms"),
    "init_2GB_string": ([_init(b"", 2_000_000_000)], "2000000000 bytes"),
    "init_negative_length": ([_init(b"", -8)], "-8 bytes"),
    "init_huge_batch": ([_init(b"species: Cu4, batch_size:2000000000")], "batch_size 2000000000"),
    "init_huge_species": ([_init(b"species: Cu50000000")], "more than"),
    # a connection that ends inside a message is not a normal end
    "closed_mid_message": ([CU4, _posdata_head(4)[:40]], "middle of a message"),
    # a server that never speaks
    "silent": ([], "sent nothing for 1.5 s"),
}


def _wait_rusage(proc: subprocess.Popen, deadline_s: float):
    """(exit status, peak RSS in MB) of ``proc``; kills it and fails the test after ``deadline_s``."""
    t_end = time.monotonic() + deadline_s
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return proc.returncode, usage.ru_maxrss / 1024.0
        if time.monotonic() > t_end:
            proc.kill()
            os.wait4(proc.pid, 0)
            proc.returncode = -9
            pytest.fail(f"the driver still ran after {deadline_s} s: it waits on a hostile server for ever")
        time.sleep(0.05)


def _serve_hostile(sock_path: str, messages: list[bytes], proc: subprocess.Popen) -> socket.socket:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(sock_path)
    listener.listen(1)
    listener.settimeout(30)
    conn, _ = listener.accept()
    listener.close()
    for m in messages:
        conn.sendall(m)
    if messages:
        conn.shutdown(socket.SHUT_WR)  # what was announced never comes
    return conn


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_server_costs_one_line_and_a_nonzero_exit(case, tmp_path):
    messages, needle = CASES[case]
    sock_path = str(tmp_path / "s")
    if len(sock_path) > 100:  # unix socket paths are limited to 107 bytes
        pytest.skip("tmp_path too long for a unix socket")
    exe = BIN / "dynamat-driver"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "dynamat_driver.cli"]
    cmd += ["--model", "emt", "--unix", sock_path, "--connect-timeout", "30", "--server-timeout", "1.5"]
    err_path = tmp_path / "stderr"
    with open(err_path, "w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, cwd=tmp_path)
    conn = None
    try:
        # the driver binds nothing: wait for its connection on our socket
        conn = _serve_hostile(sock_path, messages, proc)
        code, rss_mb = _wait_rusage(proc, DEADLINE_S)
    finally:
        if proc.returncode is None:
            proc.kill()
            proc.wait()
        if conn is not None:
            conn.close()
    stderr = err_path.read_text()
    errors = [ln for ln in stderr.splitlines() if ln.startswith("dynamat-driver: error:")]
    assert code not in (0, None), stderr
    assert "Traceback" not in stderr and "unexpected" not in stderr, stderr
    assert len(errors) == 1 and needle in errors[0], stderr
    assert rss_mb < MAX_RSS_MB, f"peak RSS {rss_mb:.0f} MB"


def test_pack_ends_a_silent_session(tmp_path):
    """Pack mode: a session whose server never speaks ends after its server_timeout with an error
    record saying so; the pack itself goes on and exits normally when idle."""
    import json

    from dynamat_driver.contract import DONE, REQUEST

    sock_path = str(tmp_path / "s")
    if len(sock_path) > 100:
        pytest.skip("tmp_path too long for a unix socket")
    pack = tmp_path / "pack"
    pack.mkdir()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(sock_path)
    listener.listen(1)
    (pack / f"s1{REQUEST}").write_text(json.dumps({
        "socket": sock_path, "connect_timeout": 10, "server_timeout": 1.5,
        "log_file": str(tmp_path / "s1.log"), "timing_file": str(tmp_path / "s1_timing.json")}))
    exe = BIN / "dynamat-driver"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "dynamat_driver.cli"]
    proc = subprocess.Popen(cmd + ["--model", "emt", "--pack-dir", str(pack), "--pack-idle-exit", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        listener.settimeout(30)
        conn, _ = listener.accept()  # and say nothing
        _, err = proc.communicate(timeout=DEADLINE_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        listener.close()
    assert proc.returncode == 0, err
    done = json.loads((pack / f"s1{DONE}").read_text())
    assert done["status"] == "error" and "sent nothing for 1.5 s" in done["error"], done
    conn.close()
