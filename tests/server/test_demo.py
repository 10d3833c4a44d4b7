"""`dynamat demo` on an existing folder behaves as `dynamat run` does: a completed demo run of the asked
length is kept and scored again (so `make demo` can be rerun), a shorter one of the demo's seed is continued,
any other run (another seed, a longer run) is refused in one line naming --overwrite and --out before any
work, and --overwrite replaces it. A --steps too short to score is refused before any MD, naming the minimum.
Real i-PI runs with EMT on the bundled demo copper."""

import json

from conftest import dynamat_cmd

SYSTEM = "bulkCu_300K-demo_EMT"
MIN_STEPS = 70  # 8 frames saved every 10 steps, the demo reference's 2.5 fs frame interval


def _demo(out, steps, *extra):
    return dynamat_cmd("demo", "--model", "emt", "--steps", str(steps), "--out", str(out),
                       "--singlepoint-frames", "2", *extra)


def _error_line(res):
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode != 0 and len(lines) == 1, res.stderr
    return lines[0]


def _snapshot(run_dir):
    return {p.name: p.read_bytes() for p in sorted(run_dir.iterdir()) if p.is_file()}


def test_steps_too_short_to_score_are_refused_before_any_md(tmp_path):
    out = tmp_path / "demo"
    res = _demo(out, MIN_STEPS - 1)
    line = _error_line(res)
    assert f"--steps {MIN_STEPS} or more" in line and "8 frames" in line, line
    assert not out.exists()  # nothing ran, nothing was written


def test_rerun_keeps_and_rescores_then_a_longer_one_continues(tmp_path):
    out = tmp_path / "demo"
    first = _demo(out, MIN_STEPS)  # the minimum scores (8 frames)
    assert first.returncode == 0, first.stderr
    run_dir = out / "emt" / SYSTEM
    before = _snapshot(run_dir)
    score_mtime = (run_dir / "score.json").stat().st_mtime_ns
    again = _demo(out, MIN_STEPS)
    assert again.returncode == 0, again.stderr
    assert "kept:" in again.stderr and "running:" not in again.stderr, again.stderr
    after = _snapshot(run_dir)
    for name in ("run.json", "simulation.out", "simulation.pos_0.extxyz"):
        assert after[name] == before[name], name  # the run itself untouched
    assert (run_dir / "score.json").stat().st_mtime_ns > score_mtime  # scored again
    assert again.stdout == first.stdout  # the same numbers: the same run, scored the same way
    longer = _demo(out, MIN_STEPS + 20)
    assert longer.returncode == 0, longer.stderr
    assert "resuming from" in longer.stderr, longer.stderr
    rec = json.loads((run_dir / "run.json").read_text())
    assert (rec["status"], rec["steps_done"], rec["seed"]) == ("completed", MIN_STEPS + 20, 12345)


def test_another_run_is_refused_then_replaced_with_overwrite(tmp_path):
    out = tmp_path / "demo"
    res = dynamat_cmd("run", "--model", "emt", "--system", SYSTEM, "--steps", "100", "--out", str(out), "--seed", "99")
    assert res.returncode == 0, res.stderr
    run_dir = out / "emt" / SYSTEM
    before = _snapshot(run_dir)
    for steps in (100, 120, MIN_STEPS):  # same length, longer (would continue), shorter
        line = _error_line(_demo(out, steps))
        assert "--overwrite" in line and "--out" in line, line
        assert "singlepoint" not in line
        assert _snapshot(run_dir) == before, steps  # the seed-99 run is untouched
    line = _error_line(_demo(out, 100))
    assert "seed 99" in line and "12345" in line, line
    res = _demo(out, MIN_STEPS, "--overwrite")
    assert res.returncode == 0, res.stderr
    rec = json.loads((run_dir / "run.json").read_text())
    assert (rec["status"], rec["steps_done"], rec["seed"]) == ("completed", MIN_STEPS, 12345)
    assert (run_dir / "score.json").is_file()


def test_a_run_of_another_protocol_is_not_kept(tmp_path):
    out = tmp_path / "demo"
    res = dynamat_cmd("run", "--model", "emt", "--system", SYSTEM, "--steps", str(MIN_STEPS), "--out", str(out),
                      "--seed", "12345", "--tau-fs", "100")
    assert res.returncode == 0, res.stderr
    line = _error_line(_demo(out, MIN_STEPS))
    assert "--tau-fs 100 fs (asked 254.5)" in line and "--overwrite" in line and "protocol arguments" not in line, line


def test_a_run_from_another_start_frame_is_not_kept(tmp_path):
    """The demo starts from the reference's frame 0: a run of the same seed and length from frame 2 is not
    the demo's (it was kept and scored as if it were)."""
    out = tmp_path / "demo"
    res = dynamat_cmd("run", "--model", "emt", "--system", SYSTEM, "--steps", str(MIN_STEPS), "--out", str(out),
                      "--seed", "12345", "--start-frame", "2")
    assert res.returncode == 0, res.stderr
    line = _error_line(_demo(out, MIN_STEPS))
    assert "started from reference frame 2" in line and "--overwrite" in line and "give --start-frame" not in line, line
