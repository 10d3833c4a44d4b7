"""A built wheel carries every template: a non-editable install renders an i-PI input and an sbatch script."""

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_wheel_install_renders_ipi_input_and_sbatch(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels),
                    str(REPO)], check=True, capture_output=True, text=True, timeout=600)
    (wheel,) = wheels.glob("dynamat-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    py = venv / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--disable-pip-version-check", str(wheel)],
                   check=True, capture_output=True, text=True, timeout=300)
    # dependencies from the test environment, appended after the fresh venv's own site-packages; its .pth
    # files (the editable install's finder) are not processed, so dynamat must come from the wheel
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "deps-from-test-env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    work = tmp_path / "elsewhere"  # not the repository: nothing found through the cwd
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    script = """
import dynamat, sys
from pathlib import Path
from dynamat.campaign import slurm
assert Path(dynamat.__file__).resolve().is_relative_to(Path(sys.prefix).resolve()), dynamat.__file__
for mode in ("unix", "inet"):
    tpl = slurm.template_path(mode)
    vals = slurm.script_values(n_jobs=3, jobs_at_once=None, manifest=Path("jobs.tsv"), log_dir=Path("logs"),
                               workdir=Path("."), job_name="t", cpus_per_task=2, partition=None, gpus_per_task=None,
                               time_limit=None, sbatch_args=())
    text = slurm.render(tpl.read_text(), vals)
    assert "#SBATCH --array=0-2" in text and "@" not in text.replace("%A_%a", ""), text
print("ok")
"""
    res = subprocess.run([str(py), "-c", script], capture_output=True, text=True, cwd=work, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    res = subprocess.run([str(venv / "bin" / "dynamat"), "inputs", "--system", "bulkCu_300K-demo_EMT", "--out", "inp",
                          "--steps", "20"], capture_output=True, text=True, cwd=work, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    xml = (work / "inp" / "input.xml").read_text()
    assert "<total_steps>20</total_steps>" in xml.replace(" ", "") and "ffsocket" in xml
