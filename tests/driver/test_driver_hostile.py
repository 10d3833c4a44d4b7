"""A server that lies or stays silent costs the driver one line, a non-zero exit, little memory and
bounded time (issue 24, hole 4).

The test process is the server: a plain Python unix socket in tmp_path that sends one hostile
message to a real ``dynamat-driver`` subprocess. The driver's peak memory is read from the kernel's
accounting for that one process (``os.wait4``'s ``ru_maxrss``), so an allocation the server merely
announced shows even when the driver fails afterwards.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
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


#: starts the driver and reports its exit status and peak RSS (kB) from the kernel's accounting for
#: that one child. A small process in between: a child forked from pytest itself would count the
#: pytest process's own memory (which it shares until exec) in its peak.
MEASURE = (
    "import os, subprocess, sys\n"
    "p = subprocess.Popen(sys.argv[2:], stdout=subprocess.DEVNULL, stderr=open(sys.argv[1], 'w'))\n"
    "_, status, usage = os.wait4(p.pid, 0)\n"
    "print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)\n"
)


def _finish(measured: subprocess.Popen, deadline_s: float) -> tuple[int, float]:
    """(exit status, peak RSS in MB) of the measured driver; kills it and fails the test after ``deadline_s``."""
    try:
        out, _ = measured.communicate(timeout=deadline_s)
    except subprocess.TimeoutExpired:
        os.killpg(measured.pid, signal.SIGKILL)
        measured.wait()
        pytest.fail(f"the driver still ran after {deadline_s} s: it waits on a hostile server for ever")
    code, rss_kb = out.split()
    return int(code), int(rss_kb) / 1024.0


def _serve_hostile(sock_path: str, messages: list[bytes]) -> socket.socket:
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
    proc = subprocess.Popen([sys.executable, "-c", MEASURE, str(err_path), *cmd], stdout=subprocess.PIPE, text=True,
                            cwd=tmp_path, start_new_session=True)
    conn = None
    try:
        conn = _serve_hostile(sock_path, messages)
        code, rss_mb = _finish(proc, DEADLINE_S)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
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
