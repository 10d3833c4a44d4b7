"""`dynamat score --run DIR` on a run made by hand (`dynamat inputs`, then `i-pi input.xml & dynamat-driver`,
the README's first commands): a run killed part-way is scored over the frames it has, but recorded as
status 'incomplete' with steps_done/steps_requested and a note (it was 'completed'), so a report does not
count it among the complete runs; a run that reached input.xml's total_steps stays 'completed'. Real i-PI."""

import json
import secrets
import subprocess

from dynamat.io.run_folder import input_info
from dynamat.report.tables import load_results

from conftest import BIN, dynamat_cmd, wait_for_step

SYSTEM = "bulkCu_300K-demo_EMT"


def _hand_run(folder, steps, kill_at=None, drop_virial=False):
    name = f"dyt-{secrets.token_hex(4)}"
    res = dynamat_cmd("inputs", "--system", SYSTEM, "--out", str(folder), "--steps", str(steps), "--unix", name)
    assert res.returncode == 0, res.stderr
    if drop_virial:  # a user's input.xml whose properties leave the virial out
        xml = (folder / "input.xml").read_text()
        assert ", virial_md{ev/ang3}" in xml
        (folder / "input.xml").write_text(xml.replace(", virial_md{ev/ang3}", ""))
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


def _score(folder, *args):
    res = dynamat_cmd("score", "--system", SYSTEM, "--run", str(folder), *args)
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
    # the kill can fall between i-PI's properties line of a step and that step's frame: the frames then end one
    # save stride before simulation.out does (seen once in CI: frames to step 190, properties to 200)
    stride = input_info(killed)["stride"]
    assert s["steps_requested"] == 4000 and 200 <= last < 4000 and last - stride <= s["steps_done"] <= last
    assert any(f"step {s['steps_done']} of the 4000 steps" in n for n in s["notes"]), s["notes"]
    assert "note: incomplete" in res.stderr
    assert s["n_frames_mlip"] >= 8  # what is there is scored
    _, w = _score(whole)
    assert (w["status"], w["steps_requested"], w["steps_done"]) == ("completed", 100, 100) and "notes" not in w
    results = load_results(tmp_path)  # the report counts the whole run only
    assert [r["status"] for r in results.completed] == ["completed"]
    assert results.failures == [] and [r["status"] for r in results.unfinished] == ["incomplete"]
    assert any(f"frames to step {s['steps_done']} of 4000" in n and "not counted as failures" in n
               for n in results.notes), results.notes


def test_a_score_without_pressure_says_why(tmp_path):
    """n/a pressure errors (and so no Eq. 11-12) name the side without stress, on the scorecard and in
    score.json, not a bare n/a; both sides missing it are both named."""
    import h5py

    from conftest import DEMO

    run = tmp_path / "novirial"
    _hand_run(run, 100, drop_virial=True)
    res, s = _score(run)
    assert s["pressure_mae_GPa"] is None and s["E_RPV_pct"] is None and s["rdf_error_pct"] is not None
    assert s["notes"] == ["pressure: the run saved no virial"]
    assert s["pressure_hist_error_pct_note"] == "the run saved no virial"
    assert "P MAE (Eq. 7)            n/a  (the run saved no virial)" in res.stdout
    assert "E_RPV (Eq. 11)           n/a  (no E_P: the run saved no virial)" in res.stdout
    no_stress = tmp_path / "nostress.h5"
    with h5py.File(DEMO) as src, h5py.File(no_stress, "w") as dst:
        src.copy(SYSTEM, dst)
        del dst[f"{SYSTEM}/stress"]
    res, s = _score(run, "--reference", str(no_stress))
    both = "the reference holds no stress and the run saved no virial"
    assert s["notes"] == [f"pressure: {both}"] and f"E_P (Eq. 9)              n/a  ({both})" in res.stdout
    assert f"note: pressure: {both}" in res.stderr
