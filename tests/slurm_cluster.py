"""A private one-node SLURM cluster on this machine, for tests, benchmarks and trying
``dynamat campaign --executor slurm`` on a workstation.

    with private_slurm_cluster(Path("/tmp/slurm")) as info:   # sets SLURM_CONF while inside
        subprocess.run(["sinfo"])

Needs root and Debian's ``slurm-wlm`` (slurmctld, slurmd and the client commands). Writes a minimal
slurm.conf under ``root`` (ClusterName, SlurmctldHost=localhost, NodeName=localhost with the CPU
count and memory ``slurmd -C`` reports, one partition, proctrack/linuxproc, task/none,
select/cons_tres, MpiDefault=none, SlurmUser=root, free ports, state/spool/log folders under
``root``), uses auth/none where the installed SLURM still ships it (22.05 in Debian 12 does) and
otherwise starts a private ``munged`` with a fresh key, starts slurmctld and slurmd in the
foreground as child processes, waits until ``sinfo`` shows the node idle, and on exit cancels
what is left in its partition and stops exactly the processes it started.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Iterator

PARTITION = "test"
_AUTH_NONE = ["/usr/lib/*/slurm-wlm/auth_none.so", "/usr/lib/slurm*/auth_none.so", "/usr/lib64/slurm/auth_none.so",
              "/usr/local/lib/slurm/auth_none.so"]


class ClusterUnavailable(Exception):
    """SLURM is not installed or cannot be started here (the reason is the message)."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


def missing_programs() -> list[str]:
    return [p for p in ("slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo", "srun") if not shutil.which(p)]


@contextlib.contextmanager
def private_slurm_cluster(root: Path, auth: str | None = None, timeout_s: float = 60.0) -> Iterator[dict]:
    missing = missing_programs()
    if missing:
        raise ClusterUnavailable(f"slurm-wlm is not installed (no {', '.join(missing)}): apt-get install -y slurm-wlm")
    if os.geteuid() != 0:
        raise ClusterUnavailable("a private SLURM cluster (slurmctld/slurmd) needs root")
    root = Path(root)
    for d in ("state", "spool", "log"):
        (root / d).mkdir(parents=True, exist_ok=True)
    hw = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, timeout=30).stdout
    try:
        cpus = int(re.search(r"CPUs=(\d+)", hw).group(1))
        mem = int(re.search(r"RealMemory=(\d+)", hw).group(1))
    except AttributeError:
        raise ClusterUnavailable(f"cannot read the node's CPUs and memory from `slurmd -C`: {hw!r}") from None
    auth = auth or os.environ.get("DYNAMAT_TEST_SLURM_AUTH") or (
        "none" if any(glob.glob(p) for p in _AUTH_NONE) else "munge")
    procs: list[subprocess.Popen] = []
    lines: list[str] = []
    if auth == "munge":
        if not shutil.which("munged"):
            raise ClusterUnavailable("this SLURM has no auth/none and munge is not installed: apt-get install -y munge")
        key = root / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        msock = root / "munge.sock"
        procs.append(subprocess.Popen(
            ["munged", "-F", "-f", "--socket", str(msock), "--key-file", str(key),
             "--pid-file", str(root / "munged.pid"), "--log-file", str(root / "log" / "munged.log"),
             "--seed-file", str(root / "munge.seed")],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT))
        lines += ["AuthType=auth/munge", "CredType=cred/munge", f"AuthInfo=socket={msock}"]
        deadline = time.monotonic() + 20
        while not msock.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
    else:
        lines += ["AuthType=auth/none", "CredType=cred/none"]
    conf = root / "slurm.conf"
    conf.write_text("\n".join([
        "ClusterName=dynamattest", "SlurmctldHost=localhost", f"SlurmctldPort={_free_port()}",
        f"SlurmdPort={_free_port()}", "SlurmUser=root", "SlurmdUser=root", *lines,
        "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core", "MpiDefault=none", "ReturnToService=2", "SchedulerType=sched/backfill",
        "AccountingStorageType=accounting_storage/none", "JobAcctGatherType=jobacct_gather/none",
        "JobCompType=jobcomp/none", "KillWait=30", "MinJobAge=600",
        f"StateSaveLocation={root / 'state'}", f"SlurmdSpoolDir={root / 'spool'}",
        f"SlurmctldPidFile={root / 'slurmctld.pid'}", f"SlurmdPidFile={root / 'slurmd.pid'}",
        f"SlurmctldLogFile={root / 'log' / 'slurmctld.log'}", f"SlurmdLogFile={root / 'log' / 'slurmd.log'}",
        f"NodeName=localhost CPUs={cpus} RealMemory={mem} State=UNKNOWN",
        f"PartitionName={PARTITION} Nodes=localhost Default=YES MaxTime=INFINITE State=UP", ""]))
    old_conf = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(conf)
    try:
        for cmd in (["slurmctld", "-D", "-c", "-f", str(conf)], ["slurmd", "-D", "-f", str(conf), "-N", "localhost"]):
            procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT))
            time.sleep(0.5)
        deadline = time.monotonic() + timeout_s
        state = ""
        while time.monotonic() < deadline and all(p.poll() is None for p in procs):
            r = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True, timeout=20)
            state = r.stdout.strip()
            if state == "idle":
                break
            time.sleep(0.5)
        if state != "idle":
            logs = "".join((root / "log" / n).read_text(errors="replace")[-1500:]
                           for n in ("slurmctld.log", "slurmd.log") if (root / "log" / n).exists())
            raise RuntimeError(f"the private SLURM cluster did not come up (sinfo: {state!r}, auth/{auth}):\n{logs}")
        yield {"conf": conf, "root": root, "cpus": cpus, "memory_mb": mem, "auth": auth, "partition": PARTITION}
    finally:
        if any(p.poll() is None for p in procs):
            subprocess.run(["scancel", "--partition", PARTITION], capture_output=True, timeout=30)
            deadline = time.monotonic() + 45
            while time.monotonic() < deadline:
                r = subprocess.run(["squeue", "-h"], capture_output=True, text=True, timeout=20)
                if r.returncode != 0 or not r.stdout.strip():
                    break
                time.sleep(1)
        for p in reversed(procs):
            _stop(p)
        if old_conf is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old_conf
