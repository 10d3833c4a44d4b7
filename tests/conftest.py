import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "dynamat" / "data" / "demo_reference.h5"
BIN = Path(sys.executable).parent


def dynamat_cmd(*args: str, timeout: float = 600, cwd=None) -> subprocess.CompletedProcess:
    """Runs the installed `dynamat` console script (a real process, as a user would)."""
    exe = BIN / "dynamat"
    cmd = [str(exe)] if exe.exists() else [shutil.which("dynamat")]
    return subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=timeout, cwd=cwd)


def wait_for_step(props: Path, step: int, timeout: float = 120.0, poll: float = 0.05) -> None:
    """Waits until i-PI's properties file ``props`` has a row at MD step >= ``step``."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        rows = [ln for ln in props.read_text().splitlines() if ln.strip() and ln[0] != "#"] if props.exists() else []
        if rows and float(rows[-1].split()[0]) >= step:
            return
        time.sleep(poll)
    raise AssertionError(f"step {step} never reached in {props}")


@pytest.fixture
def demo_reference() -> Path:
    return DEMO
