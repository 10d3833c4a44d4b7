import shutil
import subprocess
import sys
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


@pytest.fixture
def demo_reference() -> Path:
    return DEMO
