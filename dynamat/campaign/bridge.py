"""i-PI and the driver on different nodes, over inet: a unix-to-TCP relay that stands in for the driver.

``dynamat run`` (``runner.run_md``) always starts i-PI on a private unix socket and then the driver
command with ``--unix SOCKET``. With ``dynamat campaign --socket inet`` that driver command is

    python -m dynamat.campaign.bridge --run-dir RUN_DIR -- REAL_DRIVER_CMD [--model M --unix SOCKET ...]

which, on the i-PI node,

1. listens on a TCP port (``DYNAMAT_INET_PORT``, default: any free port) on 127.0.0.1 when the
   driver runs on this node, else on the node's own address (``SLURMD_NODENAME`` or the host name;
   ``DYNAMAT_INET_HOST`` / ``DYNAMAT_INET_BIND`` to name another), never on all interfaces, and
   writes ``RUN_DIR/socket.json`` with that ``host`` and ``port``;
2. starts the real driver with ``--inet HOST:PORT`` in place of ``--unix SOCKET``, prefixed by the
   launcher in ``DYNAMAT_DRIVER_LAUNCHER`` (the SLURM template sets ``srun --nodes=1 --ntasks=1
   --relative=1 ...``, which places it on the job's second node; empty: on this node);
3. accepts that driver's one connection, connects to i-PI's unix socket and relays bytes both ways
   until either side closes, then exits with the driver's exit status.

run_md supervises the bridge as it would a driver: a driver that dies ends the relay, the bridge
exits, and run_md recovers from i-PI's restart point as usual. Only the first connection is
accepted; the port is open to the cluster network while the bridge waits for it.
"""

from __future__ import annotations

import json
import os
import selectors
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from dynamat.files import write_text_atomic
from dynamat.layout import RunFolder

ACCEPT_TIMEOUT_S = float(os.environ.get("DYNAMAT_INET_ACCEPT_TIMEOUT", "600"))


def _err(msg: str) -> None:
    print(f"dynamat-bridge: error: {msg}", file=sys.stderr, flush=True)


def _info(msg: str) -> None:
    print(f"dynamat-bridge: {msg}", file=sys.stderr, flush=True)


def split_args(argv: list[str]) -> tuple[Path, list[str], str]:
    """(run dir, driver command with --unix removed, the unix socket path)."""
    if "--" not in argv:
        raise SystemExit("usage: python -m dynamat.campaign.bridge --run-dir DIR -- DRIVER_CMD ... --unix SOCKET ...")
    i = argv.index("--")
    head, tail = argv[:i], argv[i + 1:]
    if len(head) != 2 or head[0] != "--run-dir":
        raise SystemExit("usage: python -m dynamat.campaign.bridge --run-dir DIR -- DRIVER_CMD ...")
    unix = None
    cmd: list[str] = []
    k = 0
    while k < len(tail):
        if tail[k] == "--unix" and k + 1 < len(tail):
            unix = tail[k + 1]
            k += 2
            continue
        if tail[k].startswith("--unix="):
            unix = tail[k].split("=", 1)[1]
            k += 1
            continue
        cmd.append(tail[k])
        k += 1
    if not unix or not cmd:
        raise SystemExit("dynamat-bridge: the driver command line has no --unix SOCKET (run_md passes it)")
    return Path(head[1]), cmd, unix


def relay(a: socket.socket, b: socket.socket, stop: list) -> None:
    """Copies bytes a<->b until one side closes or ``stop`` is set."""
    sel = selectors.DefaultSelector()
    sel.register(a, selectors.EVENT_READ, b)
    sel.register(b, selectors.EVENT_READ, a)
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    try:
        while not stop:
            for key, _ in sel.select(timeout=0.5):
                src, dst = key.fileobj, key.data
                n = src.recv_into(buf)
                if n == 0:
                    return
                dst.sendall(view[:n])
    except OSError:
        return
    finally:
        sel.close()


def main(argv: list[str] | None = None) -> int:
    run_dir, cmd, unix = split_args(list(sys.argv[1:] if argv is None else argv))
    stop: list = []

    def on_signal(signum, frame):
        stop.append(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    launcher = shlex.split(os.environ.get("DYNAMAT_DRIVER_LAUNCHER", ""))
    # localhost unless the driver runs on another node: then the node's own address, never 0.0.0.0
    remote = bool(launcher) and "--relative=0" not in launcher
    host = os.environ.get("DYNAMAT_INET_HOST") or (
        (os.environ.get("SLURMD_NODENAME") or socket.gethostname()) if remote else "127.0.0.1")
    bind = os.environ.get("DYNAMAT_INET_BIND") or host
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        lsock.bind((bind, int(os.environ.get("DYNAMAT_INET_PORT", "0"))))
    except OSError as exc:
        _err(f"cannot listen on {bind}: {exc.strerror or exc}")
        return 2
    lsock.listen(1)
    port = lsock.getsockname()[1]
    full = launcher + cmd + ["--inet", f"{host}:{port}"]
    info = {"host": host, "port": port, "unix": unix, "driver_command": full, "time": time.time(),
            "server_host": socket.gethostname()}
    write_text_atomic(RunFolder(run_dir).socket_json, json.dumps(info, indent=1) + "\n")
    _info(f"listening on {host}:{port} for the driver; i-PI at unix:{unix}")
    proc = subprocess.Popen(full, start_new_session=True)
    conn = upstream = None
    try:
        lsock.settimeout(0.5)
        deadline = time.monotonic() + ACCEPT_TIMEOUT_S
        while conn is None:
            if stop:
                return 143
            if proc.poll() is not None:
                _err(f"the driver exited (code {proc.returncode}) before connecting")
                return proc.returncode or 1
            if time.monotonic() > deadline:
                _err(f"no driver connected to {host}:{port} within {ACCEPT_TIMEOUT_S:g} s")
                return 1
            try:
                conn, peer = lsock.accept()
            except socket.timeout:
                continue
        lsock.close()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.settimeout(None)
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        upstream.connect(unix)
        _info(f"driver connected from {peer[0]}; relaying to i-PI")
        relay(conn, upstream, stop)
        for s in (conn, upstream):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        try:
            return proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            return 1
    finally:
        for s in (conn, upstream, lsock):
            if s is not None:
                s.close()
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


if __name__ == "__main__":
    sys.exit(main())
