"""The driver's frame record (dynamat-driver --record): the contract's layout, and records it refuses to extend."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from dynamat_driver import DriverError
from dynamat_driver.contract import FRAMES_HEADER_BYTES, FRAMES_MAGIC, frame_record_floats
from dynamat_driver.frames import FrameRecorder

from conftest import assert_one_line_error, driver_cmd


def test_records_follow_the_contract(tmp_path):
    """Records read back with the contract's layout alone, bit for bit, after a reopen (a resumed run)."""
    rng = np.random.default_rng(1)
    n = 5
    frames = [(s, rng.normal(size=(3, 3)), rng.normal(size=(n, 3)),
               (float(rng.normal()), rng.normal(size=(n, 3)), rng.normal(size=(3, 3)), "")) for s in (0, 1, 2)]
    path = tmp_path / "f.f64"
    rec = FrameRecorder(str(path), n)
    for f in frames[:2]:
        rec.record(*f)
    rec.close()
    rec = FrameRecorder(str(path), n)  # appends after the header it finds
    rec.record(*frames[2])
    rec.close()
    raw = path.read_bytes()
    assert raw[:8] == FRAMES_MAGIC and int(np.frombuffer(raw, "<i8", 1, 8)[0]) == n
    rows = np.frombuffer(raw, "<f8", offset=FRAMES_HEADER_BYTES).reshape(-1, frame_record_floats(n))
    assert len(rows) == 3
    for row, (step, h, q, (e, f, v, _)) in zip(rows, frames):
        want = np.concatenate([[step], h.ravel(), q.ravel(), [e], f.ravel(), v.ravel()])
        np.testing.assert_array_equal(row, want)


def test_refuses_what_it_cannot_extend(tmp_path):
    other = tmp_path / "notes.txt"
    other.write_text("a user's file\n")
    with pytest.raises(DriverError, match="not a dynamat frame record"):
        FrameRecorder(str(other), 4)
    assert other.read_text() == "a user's file\n"
    path = tmp_path / "f.f64"
    FrameRecorder(str(path), 4).close()
    with pytest.raises(DriverError, match="holds 4 atoms"):
        FrameRecorder(str(path), 5)
    with open(path, "ab") as fh:
        fh.write(b"\0" * 12)  # a record cut short by a kill, not trimmed
    with pytest.raises(DriverError, match="partial frame"):
        FrameRecorder(str(path), 4)


def test_record_needs_the_stress_schedule(tmp_path):
    res = subprocess.run(driver_cmd() + ["--model", "null", "--record", str(tmp_path / "f.f64"), "--unix",
                                         str(tmp_path / "s")], capture_output=True, text=True, timeout=60)
    assert_one_line_error(res, "--record needs --stress-stride", prog="dynamat-driver", code=None)
    assert not (tmp_path / "f.f64").exists()


def test_a_second_close_leaves_the_next_file_with_that_number_alone(tmp_path):
    """The serve loop closes a connection's record when i-PI re-sends INIT and again at its end: the second
    close must not close the file the number has been given to since."""
    import os

    rec = FrameRecorder(str(tmp_path / "frames.f64"), 2)
    number = rec.fd
    rec.close()
    other = os.open(tmp_path / "other", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        assert other == number  # the lowest free number is given again (POSIX)
        rec.close()
        assert os.write(other, b"still open") == 10
    finally:
        os.close(other)
