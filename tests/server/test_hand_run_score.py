"""`dynamat score --run DIR` on a run made by hand (`dynamat inputs`, then `i-pi input.xml & dynamat-driver`,
the README's first commands): a run killed part-way is scored over the frames it has, but recorded as
status 'incomplete' with steps_done/steps_requested and a note (it was 'completed'), so a report does not
count it among the complete runs; a run that reached input.xml's total_steps stays 'completed'. Real i-PI."""

import json
import secrets
import subprocess

from dynamat.report.tables import load_results

from conftest import BIN, dynamat_cmd, wait_for_step

SYSTEM = "bulkCu_300K-demo_EMT"


def _hand_run(folder, steps, kill_at=None):
    name = f"dyt-{secrets.token_hex(4)}"
    res = dynamat_cmd("inputs", "--system", SYSTEM, "--out", str(folder), "--steps", str(steps), "--unix", name)
    assert res.returncode == 0, res.stderr
    ipi = subprocess.Popen([str(BIN / "i-pi"), "input.xml"], cwd=folder, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    drv = subprocess.Popen([str(BIN / "dynamat-driver"), "--model", "emt", "--unix", name, "--connect-timeout", "60"],
                           cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        if kill_at is None:
            assert ipi.wait(timeout=300) == 0
            assert drv.wait(timeout=60) == 0, drv.stderr.read()
        else:
            wait_for_step(folder / "simulation.out", kill_at)
    finally:
        for proc in (ipi, drv):
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def _score(folder):
    res = dynamat_cmd("score", "--system", SYSTEM, "--run", str(folder))
    assert res.returncode == 0, res.stderr
    return res, json.loads((folder / "score.json").read_text())


def test_a_hand_run_killed_part_way_is_scored_as_incomplete(tmp_path):
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    _hand_run(killed, 4000, kill_at=200)
    _hand_run(whole, 100)
    res, s = _score(killed)
    last = max(int(float(ln.split()[0])) for ln in (killed / "simulation.out").read_text().splitlines()
               if ln.strip() and not ln.startswith("#"))
    assert s["status"] == "incomplete"
    assert s["steps_requested"] == 4000 and 200 <= s["steps_done"] <= last < 4000
    assert any(f"step {s['steps_done']} of the 4000 steps" in n for n in s["notes"]), s["notes"]
    assert "note: incomplete" in res.stderr
    assert s["n_frames_mlip"] >= 8  # what is there is scored
    _, w = _score(whole)
    assert (w["status"], w["steps_requested"], w["steps_done"]) == ("completed", 100, 100) and "notes" not in w
    results = load_results(tmp_path)  # the report counts the whole run only
    assert [r["status"] for r in results.completed] == ["completed"]
    assert [r["status"] for r in results.failures] == ["incomplete"]
