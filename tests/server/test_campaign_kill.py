"""A local campaign killed outright (SIGKILL, an out-of-memory kill) takes its task processes with it."""

import os
import signal
import subprocess
from pathlib import Path

from conftest import BIN, wait_for_step, wait_until

A, B = "bulkCu_300K-demo_EMT", "bulkCu3Au_500K-demo_EMT"


def _processes_naming(text: str) -> list[int]:
    """Pids whose command line holds ``text`` (Linux /proc)."""
    found = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if text in (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    found.append(int(d.name))
            except OSError:
                pass
    return found


def test_a_killed_packed_campaign_leaves_no_task_behind(tmp_path):
    """The pack task (one process serving both pairs) outlived a SIGKILLed campaign, kept computing into the
    folders and held the pairs' locks, so the rerun failed both as 'busy'. The task now gets SIGTERM when the
    campaign dies, and stops as on Ctrl-C."""
    out = tmp_path / "camp"
    camp = subprocess.Popen([str(BIN / "dynamat"), "campaign", "--models", "emt", "--systems", f"{A},{B}",
                             "--steps", "100000", "--pack", "2", "--seed", "7", "--no-report", "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_step(out / "emt" / A / "simulation.out", 100, timeout=120)
        assert _processes_naming(f"{out}/_campaign/jobs-")  # the task is running
    finally:
        os.kill(camp.pid, signal.SIGKILL)
        camp.wait(timeout=30)
    wait_until(lambda: not _processes_naming(str(out)), 60, "the campaign's task, i-PIs and driver to stop")
