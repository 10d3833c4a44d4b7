"""SLURM side of ``dynamat campaign``: render the array script, ``sbatch --parsable``, poll ``squeue``."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

from dynamat.errors import DynamatError

TEMPLATES = {"unix": "campaign_array.sbatch.in", "inet": "campaign_array_inet.sbatch.in"}
PENDING_STATES = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "CONFIGURING",
                  "SUSPENDED", "RESIZING"}
RUNNING_STATES = {"RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING"}
#: squeue's reason for a pending task whose --dependency can no longer be met (the job it waits on failed)
NEVER_STARTS = "DependencyNeverSatisfied"
_VAR = re.compile(r"@([a-z_]+)@")


def template_path(socket_mode: str, template: Path | None = None) -> Path:
    if template is not None:
        return Path(template)
    here = resources.files("dynamat.templates").joinpath(TEMPLATES[socket_mode])
    if not here.is_file():
        raise DynamatError(f"cannot find the sbatch template {here}; pass --template FILE")
    return Path(str(here))


def render(template_text: str, values: dict[str, str]) -> str:
    """Replaces every ``@name@``; an unknown name is an error (a typo would otherwise reach sbatch)."""
    missing = sorted({m for m in _VAR.findall(template_text) if m not in values})
    if missing:
        raise DynamatError(f"the sbatch template uses unknown variable(s): {', '.join(missing)}")
    return _VAR.sub(lambda m: str(values[m.group(1)]), template_text)


def script_values(*, n_jobs: int, jobs_at_once: int | None, manifest: Path, log_dir: Path, workdir: Path,
                  job_name: str, cpus_per_task: int, partition: str | None, gpus_per_task: int | None,
                  time_limit: str | None, sbatch_args: tuple[str, ...], inet_nodes: int = 2) -> dict[str, str]:
    for what, val in (("--partition", partition), ("--time-limit", time_limit), *(("--sbatch-arg", a) for a in sbatch_args)):
        if val is not None and any(c in str(val) for c in "\n\r\0"):
            raise DynamatError(f"{what} {val!r} holds a line break; one #SBATCH option per value")
    if any(c in str(log_dir) for c in '"\n\r\0'):
        raise DynamatError(f"the campaign folder {log_dir} holds a quote or line break; choose another --out")
    job_name = re.sub(r"[^A-Za-z0-9._-]", "_", job_name)[:64] or "dynamat"
    lines = []
    if partition:
        lines.append(f"#SBATCH --partition={partition}")
    if gpus_per_task:
        lines.append(f"#SBATCH --gpus-per-task={gpus_per_task}")
    if time_limit:
        lines.append(f"#SBATCH --time={time_limit}")
    for a in sbatch_args:
        lines.append(f"#SBATCH {a}")
    array = f"0-{n_jobs - 1}" + (f"%{jobs_at_once}" if jobs_at_once else "")
    q = shlex.quote
    return {
        "job_name": job_name,
        "array": array,
        "cpus_per_task": str(cpus_per_task),
        "log_dir": str(log_dir),  # inside double quotes in the template (sbatch reads quoted #SBATCH values)
        "sbatch_lines": "\n".join(lines),
        "workdir": q(str(workdir)),
        "python": q(sys.executable),
        "manifest": q(str(manifest)),
        "nodes": str(inet_nodes),
        "driver_relative": "1" if inet_nodes > 1 else "0",
        "driver_srun_args": f"--gpus-per-task={gpus_per_task}" if gpus_per_task else "",
    }


def _need(prog: str) -> str:
    exe = shutil.which(prog)
    if not exe:
        raise DynamatError(f"--executor slurm needs {prog!r} on PATH (is this a SLURM login node?)")
    return exe


def submit(script: Path) -> str:
    """``sbatch --parsable SCRIPT``; returns the job id."""
    proc = subprocess.run([_need("sbatch"), "--parsable", str(script)], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        msg = (proc.stderr or proc.stdout).strip().splitlines()
        raise DynamatError(f"sbatch failed: {msg[-1] if msg else f'exit status {proc.returncode}'}")
    job_id = proc.stdout.strip().split(";")[0]
    if not job_id.isdigit():
        raise DynamatError(f"sbatch --parsable printed {proc.stdout.strip()!r}, not a job id")
    return job_id


def queue_states(job_ids: list[str]) -> dict[str, tuple[str, str]]:
    """``{"JOB_TASK": (state, reason)}`` for the array tasks SLURM still knows of (pending, running
    and, for MinJobAge after they end, finished ones). Unknown jobs are simply absent."""
    if not job_ids:
        return {}
    out: dict[str, tuple[str, str]] = {}
    for jid in job_ids:  # one call per job: squeue fails the whole call when one id has aged out
        proc = subprocess.run([_need("squeue"), "-h", "-r", "--states=all", "-j", jid, "-o", "%i|%T|%r"],
                              capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            continue
        for line in proc.stdout.splitlines():
            parts = line.strip().split("|")
            if len(parts) >= 2:
                out[parts[0]] = (parts[1], parts[2] if len(parts) > 2 else "")
    return out


def accounting_state(task_id: str) -> str | None:
    """The final state sacct records for ``task_id``, where accounting is enabled."""
    if not shutil.which("sacct"):
        return None
    try:
        proc = subprocess.run(["sacct", "-n", "-X", "-P", "-j", task_id, "-o", "State"], capture_output=True,
                              text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = [ln.strip() for ln in proc.stdout.splitlines() if ln.strip()]
    return lines[0].split()[0] if proc.returncode == 0 and lines else None


def cancel(job_ids: list[str]) -> None:
    if job_ids and shutil.which("scancel"):
        subprocess.run(["scancel", *job_ids], capture_output=True, timeout=60)


def env_note() -> str:
    conf = os.environ.get("SLURM_CONF")
    return f" (SLURM_CONF={conf})" if conf else ""
