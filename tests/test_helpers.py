"""The shared test helpers (tests/conftest.py) fail when they should: a check that cannot fail would
make every test using it pass for nothing."""

import subprocess
import sys
import time

import pytest

from conftest import assert_no_leftovers, assert_one_line_error, leftover_processes, wait_until


def test_wait_until_returns_the_value_or_names_what_it_waited_for():
    t0 = time.monotonic()
    calls = []
    assert wait_until(lambda: calls.append(1) or (len(calls) >= 3 and "ready"), 5, "three calls", poll=0.01) == "ready"
    with pytest.raises(AssertionError, match=r"timed out after 0.2 s waiting for the moon"):
        wait_until(lambda: False, 0.2, "the moon", poll=0.01)
    assert time.monotonic() - t0 < 3


def _done(code, stderr):
    return subprocess.CompletedProcess([], code, "", stderr)


def test_one_line_error_check_refuses_each_way_of_breaking_the_contract():
    assert assert_one_line_error(_done(2, "dynamat: error: no such system 'x'\n"), "'x'") == \
        "dynamat: error: no such system 'x'"
    for res in (_done(1, "dynamat: error: x\n"),  # exit status other than 2
                _done(2, "dynamat: error: x\nand a second line\n"),
                _done(2, "Traceback (most recent call last):\ndynamat: error: x\n"),
                _done(2, "error: x\n")):
        with pytest.raises(AssertionError):
            assert_one_line_error(res)
    with pytest.raises(AssertionError):
        assert_one_line_error(_done(2, "dynamat: error: x\n"), "absent")  # a needle missing
    progress = "dynamat: fetching u\ndynamat: error: failed\n"
    assert_one_line_error(_done(2, progress), after_progress=True)
    with pytest.raises(AssertionError):
        assert_one_line_error(_done(2, progress))
    with pytest.raises(AssertionError):
        assert_one_line_error(_done(2, "dynamat: error: a\ndynamat: error: b\n"), after_progress=True)
    assert_one_line_error(_done(1, "dynamat-driver: error: x\n"), prog="dynamat-driver", code=None)
    with pytest.raises(AssertionError):
        assert_one_line_error(_done(0, "dynamat-driver: error: x\n"), prog="dynamat-driver", code=None)


def test_leftover_check_finds_a_live_process_by_tag_and_by_folder(tmp_path):
    tag = str(tmp_path / "run")
    (tmp_path / "run").mkdir()
    # stand-ins: a process whose command line names the driver and the run folder, and two that
    # name i-pi (by hand) or dynamat.ipi_launch (as runs start i-PI) and run inside the folder
    by_arg = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "dynamat-driver", tag])
    in_dir = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "i-pi"], cwd=tmp_path / "run")
    launched = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "dynamat.ipi_launch"],
                                cwd=tmp_path / "run")
    try:
        wait_until(lambda: len(leftover_processes(tag)) == 3, 10, "the three stand-ins to be seen")
        with pytest.raises(AssertionError, match=str(launched.pid)):
            assert_no_leftovers(tag, timeout=0.3)
    finally:
        for p in (by_arg, in_dir, launched):
            p.kill()
            p.wait()
    assert_no_leftovers(tag, timeout=5)
