"""Packed runs (issue 15 §2): several i-PI simulations served by one dynamat-driver process.

A packed run must be indistinguishable from its solo run with the same seed: the same trajectory
(float64: to 1e-6 Å over 200 steps), the same pressures, an ordinary run folder (run.json,
timing file, resumable), scored like a solo run. With CHGNet the structures of the different
simulations really share model calls (checked from the pack's counters), cells of different sizes
and species in one graph batch. A pack driver killed mid-run is recovered from every run's restart
point without losing or repeating a frame.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk

from dynamat.engines.ipi_input import MDSettings
from dynamat.engines.pack import PackDriver
from dynamat.io import read_ipi_run
from dynamat.runner import RunOptions, supervise

from conftest import dynamat_cmd, wait_for_step, wait_until

SYSTEMS = ("bulkCu_300K-demo_EMT", "bulkCu3Au_500K-demo_EMT")


def _assert_same_run(packed: Path, solo: Path, stress_atol: float = 1e-12) -> None:
    """Same frames; ``stress_atol`` (eV/Å³): a restart goes through i-PI's RESTART text, whose positions
    are rounded (to far below 1e-6 Å), and the pressure shows it at the 1e-8 eV/Å³ level."""
    a, b = read_ipi_run(packed), read_ipi_run(solo)
    np.testing.assert_array_equal(a.steps, b.steps)
    assert len(a.steps) > 1
    np.testing.assert_allclose(a.positions, b.positions, rtol=0, atol=1e-6)
    # the stress is computed on written steps only, in both: the same written pressures
    np.testing.assert_allclose(a.stress, b.stress, rtol=1e-9, atol=stress_atol)
    assert np.isfinite(a.stress).all()


def test_packed_emt_runs_equal_their_solo_runs(tmp_path):
    """`dynamat run --system A,B --pack 2` against two solo `dynamat run`s: same frames, ordinary folders."""
    res = dynamat_cmd("run", "--model", "emt", "--system", ",".join(SYSTEMS), "--pack", "2", "--steps", "200",
                      "--seed", "11", "--out", str(tmp_path / "packed"))
    assert res.returncode == 0, res.stderr
    for name in SYSTEMS:
        solo = dynamat_cmd("run", "--model", "emt", "--system", name, "--steps", "200", "--seed", "11",
                           "--out", str(tmp_path / "solo"))
        assert solo.returncode == 0, solo.stderr
        run_dir = tmp_path / "packed" / "emt" / name
        _assert_same_run(run_dir, tmp_path / "solo" / "emt" / name)
        rec = json.loads((run_dir / "run.json").read_text())
        assert rec["status"] == "completed" and rec["steps_done"] == 200
        assert rec["pack"]["model"] == "emt" and rec["seconds_per_step_median"] > 0
        timing = json.loads((run_dir / "driver_timing.json").read_text())
        assert timing["status"] == "finished" and timing["n_evaluations"] == 201  # step 0 + 200 steps
        assert timing["stress"]["stride"] == 10  # stress on written steps, as in a solo run
        assert timing["pack"]["sessions_served"] == 2
    # scored exactly as a solo run
    name = SYSTEMS[0]
    for where in ("packed", "solo"):
        s = dynamat_cmd("score", "--system", name, "--run", str(tmp_path / where / "emt" / name))
        assert s.returncode == 0, s.stderr
    ps = json.loads((tmp_path / "packed" / "emt" / name / "score.json").read_text())
    ss = json.loads((tmp_path / "solo" / "emt" / name / "score.json").read_text())
    for key in ("rdf_error_pct", "pressure_mae_GPa", "pressure_hist_error_pct", "vdos_error_pct"):
        assert ps[key] == pytest.approx(ss[key], rel=1e-6, abs=1e-9), key


def _cells():
    """Two different small cells: 4-atom fcc Cu and 8-atom diamond Si (other species, other size)."""
    cu = bulk("Cu", "fcc", a=3.61, cubic=True)
    si = bulk("Si", "diamond", a=5.43, cubic=True)
    return {"cu4": cu, "si8": si}


def _supervise_all(model, cells, out: Path, settings, pack: PackDriver | None, driver_args=()):
    records, errors = {}, []

    def one(name, atoms):
        opts = RunOptions(driver_args=tuple(driver_args), pack=pack, driver_threads=1)
        try:
            records[name] = supervise(model, atoms, settings, out / name, opts)
        except Exception as exc:  # surfaced by the assertion below
            errors.append(f"{name}: {exc}")

    threads = [threading.Thread(target=one, args=item) for item in cells.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return records


def test_packed_chgnet_shares_model_calls_and_equals_solo(tmp_path):
    """CHGNet in float64: the two simulations' structures go through one batched model call per
    step, and each trajectory equals its solo run to 1e-6 Å over 200 steps."""
    pytest.importorskip("chgnet")
    settings = MDSettings("svr", 1.0, 50.0, 10, 200, 600.0, seed=5)
    args = ("--dtype", "float64")
    pack = PackDriver("chgnet", tmp_path / "pack.log", driver_args=args, threads=1, wait_ms=200)
    try:
        packed = _supervise_all("chgnet", _cells(), tmp_path / "packed", settings, pack)
        summary = pack.close()
    finally:
        pack.close()
    for name, atoms in _cells().items():
        supervise("chgnet", atoms, settings, tmp_path / "solo" / name, RunOptions(driver_args=args, driver_threads=1))
        _assert_same_run(tmp_path / "packed" / name, tmp_path / "solo" / name)
        assert packed[name].status == "completed"
    assert summary["shared_model_calls"] is True and summary["sessions_served"] == 2
    # 2 x 201 structures; with a generous gathering window nearly every call holds both cells
    assert summary["structures_evaluated"] == 402
    assert summary["calls_by_structures"].get("2", 0) >= 150, summary
    timing = json.loads((tmp_path / "packed" / "si8" / "driver_timing.json").read_text())
    assert timing["dtype"] == "float64" and timing["n_batched_calls"] >= 150


def test_pack_driver_killed_mid_run_is_recovered(tmp_path):
    """SIGKILL the shared driver: every run resumes from its restart point with a new pack driver and
    ends with the frames of an uninterrupted solo run (none lost, none repeated)."""
    settings = MDSettings("svr", 1.0, 50.0, 10, 1500, 300.0, seed=9)
    cells = {"cu4": bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2), "au4": bulk("Au", "fcc", a=4.08, cubic=True).repeat(2)}
    pack = PackDriver("emt", tmp_path / "pack.log", threads=1)
    killed = {}

    def killer():
        wait_for_step(tmp_path / "packed" / "cu4" / "simulation.out", 300)
        killed["pid"] = pack.proc.pid
        os.kill(pack.proc.pid, signal.SIGKILL)

    k = threading.Thread(target=killer)
    k.start()
    try:
        records = _supervise_all("emt", cells, tmp_path / "packed", settings, pack)
    finally:
        k.join()
        pack.close()
    assert killed, "the run ended before the driver could be killed"
    assert pack.starts >= 2
    for name, atoms in cells.items():
        rec = records[name]
        assert rec.status == "completed" and rec.steps_done == 1500
        assert rec.restarts and "driver exited" in rec.restarts[0]["reason"]
        supervise("emt", atoms, settings, tmp_path / "solo" / name, RunOptions(driver_threads=1))
        _assert_same_run(tmp_path / "packed" / name, tmp_path / "solo" / name, stress_atol=1e-6)


def test_several_systems_need_pack_and_distinct_names(tmp_path):
    res = dynamat_cmd("run", "--model", "emt", "--system", ",".join(SYSTEMS), "--steps", "20", "--out", str(tmp_path))
    assert res.returncode == 2 and "--pack" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    res = dynamat_cmd("run", "--model", "emt", "--system", f"{SYSTEMS[0]},{SYSTEMS[0]}", "--pack", "2",
                      "--steps", "20", "--out", str(tmp_path))
    assert res.returncode == 2 and "twice" in res.stderr
    res = dynamat_cmd("run", "--model", "emt", "--system", f"{SYSTEMS[0]},../x", "--pack", "2", "--steps", "20",
                      "--out", str(tmp_path))
    assert res.returncode == 2 and not (tmp_path / "emt").exists()
    res = dynamat_cmd("run", "--model", "emt", "--system", SYSTEMS[0], "--pack-wait-ms", "5", "--steps", "20",
                      "--out", str(tmp_path))
    assert res.returncode == 2 and "add --pack" in res.stderr and not (tmp_path / "emt").exists()


def test_a_pack_driver_that_cannot_load_its_model_fails_each_run_once(tmp_path):
    """A driver that dies at start (unknown model, a package missing from this environment) is not
    restarted for a request it never took: each run fails at once with the driver's own line, as a
    solo run does (it used to start new pack drivers in a loop, forever)."""
    # a module no environment has: the name passes the up-front check, the driver fails at start
    res = dynamat_cmd("run", "--model", "dm_no_such_module:make", "--system", ",".join(SYSTEMS), "--pack", "2",
                      "--steps", "20", "--out", str(tmp_path), timeout=180)
    assert res.returncode != 0 and "Traceback" not in res.stderr
    failed = [ln for ln in res.stderr.splitlines() if ln.startswith("failed: ")]
    assert len(failed) == 2, res.stderr
    why = "model 'dm_no_such_module:make': cannot import dm_no_such_module"
    for ln in failed:
        assert f"the pack driver exited (code 1): {why}" in ln, ln
    starts = (tmp_path / "pack-dm_no_such_module@make.log").read_text().count(why)
    assert 1 <= starts <= len(SYSTEMS)  # at most one start per run's attempt


def test_run_all_runs_at_most_at_once_and_reports_each_failure(tmp_path):
    from dynamat.engines.pack import run_all

    pack = PackDriver("emt", tmp_path / "pack.log")
    lock, live, peak, started = threading.Lock(), [0], [0], [0]

    def work(i):
        with lock:
            live[0] += 1
            order = started[0]
            started[0] += 1
            peak[0] = max(peak[0], live[0])
        # each run stays until the next one has started beside it (the last: at once), so two runs
        # overlap for certain; a third that at_once let in would be counted while they wait
        wait_until(lambda: started[0] > order + 1 or started[0] == 5, 30, "the next run to start", poll=0.01)
        with lock:
            live[0] -= 1
        if i == 2:
            raise ValueError("run 2 failed")
        return i * 10

    results = run_all(pack, [0, 1, 2, 3, 4], work, at_once=2)
    assert results[:2] == [0, 10] and results[3:] == [30, 40]
    assert isinstance(results[2], ValueError)
    assert peak[0] == 2
    assert not pack.dir.exists()  # closed (never started: nothing to wait for)


def test_run_all_interrupt_cancels_every_run_and_reraises(tmp_path):
    import _thread

    from dynamat.engines.pack import run_all

    pack = PackDriver("emt", tmp_path / "pack.log")
    saw_cancel = []
    all_going = threading.Barrier(3)

    def work(i):
        all_going.wait(timeout=30)
        if i == 0:
            _thread.interrupt_main()  # Ctrl-C while the runs are going
        saw_cancel.append(pack.cancelled.wait(timeout=30))
        return i

    # Ctrl-C reaches Python only through its own SIGINT handler; a shell's background job (CI started
    # with `&`) inherits SIGINT ignored, and then interrupt_main() does nothing
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            run_all(pack, [0, 1, 2], work)
    finally:
        signal.signal(signal.SIGINT, old)
    assert saw_cancel == [True, True, True]  # every run was told, and was waited for
    assert not pack.dir.exists()


def test_stale_pack_folders_of_dead_drivers_are_removed_and_nothing_else(tmp_path):
    import subprocess

    from dynamat.engines.pack import _clean_stale_pack_dirs

    dead = subprocess.Popen(["true"])
    dead.wait()
    old = time.time() - 3600

    def folder(name, files, pid, age=old):
        d = tmp_path / name
        d.mkdir()
        for f in files:
            (d / f).write_text("{}")
        if pid is not None:
            (d / "pack.json").write_text(json.dumps({"status": "serving", "pid": pid}))
        os.utime(d, (age, age))
        return d

    gone = folder("dm-pack-gone", ["s00001.active.json", "s00002.done.json", ".pack.json.tmp12", ".s00003.tmp"], dead.pid)
    never = folder("dm-pack-never", ["s00001.request.json"], None, age=time.time() - 2 * 86400)
    starting = folder("dm-pack-starting", ["s00001.request.json"], None)  # its driver may still be starting
    live = folder("dm-pack-live", ["s00001.active.json"], os.getpid())
    young = folder("dm-pack-young", [], dead.pid, age=time.time())
    foreign = folder("dm-pack-foreign", ["notes.txt"], dead.pid)
    other = folder("dm-other", [], None)
    _clean_stale_pack_dirs(tmp_path)
    assert not gone.exists() and not never.exists()
    assert live.exists() and young.exists() and other.exists() and starting.exists()
    assert (foreign / "notes.txt").exists()


def test_stale_socket_folders_empty_and_old_are_removed_and_nothing_else(tmp_path):
    from dynamat.engines.ipi import _clean_stale_socket_dirs

    old = time.time() - 3600
    empty_old, empty_young, busy = tmp_path / "dm-a", tmp_path / "dm-b", tmp_path / "dm-c"
    for d in (empty_old, empty_young, busy):
        d.mkdir()
    (busy / "s").write_text("")
    target = tmp_path / "elsewhere"
    target.mkdir()
    (tmp_path / "dm-link").symlink_to(target)
    for d in (empty_old, busy, target):
        os.utime(d, (old, old))
    _clean_stale_socket_dirs(tmp_path)
    assert not empty_old.exists()
    assert empty_young.exists() and busy.exists() and target.exists() and (tmp_path / "dm-link").is_symlink()
