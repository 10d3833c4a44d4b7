"""A hostile but realistic user: every bad input ends in one line on stderr and a non-zero exit, never a
traceback, and nothing planted beside or inside ``--out`` changes (issue: nothing outside --out is touched).

Each case is a real `dynamat` process. Files are planted beside ``--out`` (``victim/``), inside it (a
finished-looking file and a folder that is not a run) and compared byte for byte afterwards.
"""

import hashlib
import json
import os
import stat

import h5py
import numpy as np
import pytest

from conftest import DEMO, dynamat_cmd

SYSTEM = "bulkCu_300K-demo_EMT"


def _snapshot(root):
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, root)] = hashlib.sha256(fh.read()).hexdigest()
    return out


def _copy_group(src, dst, name, new_name=None, **replace):
    with h5py.File(src) as fin, h5py.File(dst, "a") as fout:
        g = fout.create_group(new_name or name)
        for k, v in fin[name].attrs.items():
            g.attrs[k] = v
        for k in fin[name]:
            data = replace.get(k, fin[name][k][()])
            g.create_dataset(k, data=data)
    return dst


def _ref_variant(tmp, **replace):
    return _copy_group(DEMO, tmp / "variant.h5", SYSTEM, **replace)


def _demo_arrays():
    with h5py.File(DEMO) as f:
        return {k: f[SYSTEM][k][()] for k in f[SYSTEM]}


def _nan_frame(tmp):
    pos = _demo_arrays()["positions"].copy()
    pos[3, 5, 1] = np.nan
    return _ref_variant(tmp, positions=pos)


def _write_failed_run(tmp):
    d = tmp / "out" / "emt" / SYSTEM
    d.mkdir(parents=True)
    (d / "run.json").write_text(json.dumps({"status": "failed", "error": "the driver exited before the first MD step"}))
    return d


def _non_run_folder(tmp):
    """A folder where the run would go that holds something else (not a dynamat run)."""
    d = tmp / "out" / "notarun" / "emt" / SYSTEM
    d.mkdir(parents=True)
    (d / "notes.txt").write_text("not a run")
    return tmp / "out" / "notarun"


def _blocker(tmp):
    f = tmp / "out" / "a-file"
    f.write_text("not a folder")
    return f


def _non_executable(tmp):
    f = tmp / "driver.sh"
    f.write_text("#!/bin/sh\n")
    f.chmod(stat.S_IRUSR)
    return f


def _extxyz_without_lattice(tmp):
    from ase.io import write
    from ase import Atoms

    f = tmp / "nolattice.extxyz"
    frames = [Atoms("Cu32", positions=np.random.default_rng(i).random((32, 3)) * 7) for i in range(20)]
    write(f, frames, format="extxyz")
    return f


def _synthetic(tmp):
    from dynamat.report import write_synthetic_results

    return write_synthetic_results(tmp / "results", curves=False)


def _ref_extxyz(tmp):
    """The demo reference's own frames as an extxyz trajectory (scores zero against itself)."""
    from ase import Atoms
    from ase.io import write

    from dynamat.io import read_reference

    ref = read_reference(DEMO, SYSTEM)
    f = tmp / "ref.extxyz"
    write(f, [Atoms(numbers=ref.numbers, positions=ref.positions[i], cell=ref.cells[i], pbc=True)
              for i in range(ref.n_frames)], format="extxyz")
    return f


# (id, argv builder, words the one line must contain)
CASES = [
    ("model-dotdot-overwrite", lambda t: ["run", "--model", "../victim", "--system", SYSTEM, "--overwrite", "--steps", "10",
                                          "--out", str(t / "out")], ["model"]),
    ("model-abs-overwrite", lambda t: ["run", "--model", str(t / "victim"), "--system", SYSTEM, "--overwrite",
                                       "--steps", "10", "--out", str(t / "out")], ["model"]),
    ("system-dotdot", lambda t: ["run", "--model", "emt", "--system", "..", "--overwrite", "--steps", "10",
                                 "--out", str(t / "out")], ["system"]),
    ("overwrite-non-run", lambda t: ["run", "--model", "emt", "--system", SYSTEM, "--overwrite", "--steps", "10",
                                     "--out", str(_non_run_folder(t))], ["no dynamat run"]),
    ("driver-cmd-missing", lambda t: ["run", "--model", "emt", "--system", SYSTEM, "--steps", "10", "--out",
                                      str(t / "out"), "--driver-cmd", str(t / "nope")], ["--driver-cmd"]),
    ("driver-cmd-not-executable", lambda t: ["run", "--model", "emt", "--system", SYSTEM, "--steps", "10", "--out",
                                             str(t / "out"), "--driver-cmd", str(_non_executable(t))], ["executable"]),
    ("zero-frames", lambda t: ["inputs", "--system", SYSTEM, "--out", str(t / "out" / "inp"), "--reference",
                               str(_ref_variant(t, positions=np.zeros((0, 32, 3)), cell=np.zeros((0, 3, 3))))], []),
    ("atomic-number-999", lambda t: ["inputs", "--system", SYSTEM, "--out", str(t / "out" / "inp"), "--reference",
                                     str(_ref_variant(t, atomic_numbers=np.full(32, 999)))], ["999"]),
    ("zero-cell", lambda t: ["inputs", "--system", SYSTEM, "--out", str(t / "out" / "inp"), "--reference",
                             str(_ref_variant(t, cell=np.zeros_like(_demo_arrays()["cell"])))], ["cell"]),
    ("nan-positions-singlepoint", lambda t: ["singlepoint", "--model", "emt", "--system", SYSTEM, "--reference",
                                             str(_nan_frame(t)), "--batch-size", "8"], ["frame 3"]),
    ("dt-negative", lambda t: ["score", "--system", SYSTEM, "--trajectory", str(_extxyz_without_lattice(t)),
                               "--dt-fs", "-2"], ["--dt-fs"]),
    ("dt-nan", lambda t: ["score", "--system", SYSTEM, "--trajectory", str(_extxyz_without_lattice(t)),
                          "--dt-fs", "nan"], ["--dt-fs"]),
    ("dt-inf", lambda t: ["score", "--system", SYSTEM, "--trajectory", str(_extxyz_without_lattice(t)),
                          "--dt-fs", "inf"], ["--dt-fs"]),
    ("dt-zero", lambda t: ["score", "--system", SYSTEM, "--trajectory", str(_extxyz_without_lattice(t)),
                           "--dt-fs", "0"], ["positive"]),
    ("extxyz-without-lattice", lambda t: ["score", "--system", SYSTEM, "--trajectory", str(_extxyz_without_lattice(t)),
                                          "--dt-fs", "2.5"], ["Lattice"]),
    ("score-failed-run", lambda t: ["score", "--system", SYSTEM, "--run", str(_write_failed_run(t))], ["failed"]),
    ("report-unwritable", lambda t: ["report", str(_synthetic(t)), "--out", str(_blocker(t) / "rep")], ["cannot write"]),
    ("score-json-unwritable", lambda t: ["score", "--system", SYSTEM, "--trajectory", str(_ref_extxyz(t)), "--dt-fs",
                                         "2.5", "--json", str(_blocker(t) / "s.json")], ["its folder", "is a file"]),
    ("inputs-unwritable", lambda t: ["inputs", "--system", SYSTEM, "--out", str(_blocker(t) / "inp")], ["cannot write"]),
    ("inputs-evil-socket", lambda t: ["inputs", "--system", SYSTEM, "--out", str(t / "out" / "inp"),
                                      "--unix", "a</address><evil/>"], ["socket"]),
    ("steps-huge", lambda t: ["run", "--model", "emt", "--system", SYSTEM, "--steps", str(10**20), "--out",
                              str(t / "out")], ["--steps"]),
    ("batch-size-negative", lambda t: ["run", "--model", "emt", "--system", SYSTEM, "--batch-size", "-3", "--out",
                                       str(t / "out")], ["--batch-size"]),
    ("max-frames-zero", lambda t: ["singlepoint", "--model", "emt", "--system", SYSTEM, "--max-frames", "0"],
     ["--max-frames"]),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_touches_nothing(tmp_path, case):
    name, argv, needles = case
    (tmp_path / "victim" / SYSTEM).mkdir(parents=True)
    (tmp_path / "victim" / SYSTEM / "precious.txt").write_text("earlier results")
    (tmp_path / "out" / "notarun").mkdir(parents=True)
    (tmp_path / "out" / "notarun" / "thesis.tex").write_text("months of work")
    (tmp_path / "out" / "keep.json").write_text("{}")
    args = argv(tmp_path)
    before = _snapshot(tmp_path)
    res = dynamat_cmd(*args, timeout=300)
    assert res.returncode != 0, res.stdout
    err = res.stderr.strip()
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if not ln.startswith("  ")]  # progress lines are indented
    assert len(lines) == 1 and (lines[0].startswith("dynamat: error:") or lines[0].startswith("Error:")
                                or "Usage:" in err), err
    for needle in needles:
        assert needle in err, (needle, err)
    after = _snapshot(tmp_path)
    for path, digest in before.items():  # nothing planted was changed or removed
        assert after.get(path) == digest, path


def test_csv_and_markdown_neutralise_names(tmp_path):
    from dynamat.report.tables import Table, to_csv, to_markdown

    t = Table(name="t", title="t", columns=["model", "x"],
              rows=[{"model": '=HYPERLINK("http://evil","x")', "x": 1.0}, {"model": "<script>alert(1)</script>", "x": 2.0}])
    import csv
    import io

    cells = [row[0] for row in csv.reader(io.StringIO(to_csv(t)))]
    assert cells[1].startswith("'=HYPERLINK")  # a spreadsheet shows it as text, never runs it
    md = to_markdown(t)
    assert "<script>" not in md and "\\<script\\>" in md


def test_long_tmpdir_does_not_break_the_socket(tmp_path):
    deep = tmp_path / ("d" * 100) / ("e" * 60)
    deep.mkdir(parents=True)
    env_tmp = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(deep)
    try:
        res = dynamat_cmd("run", "--model", "emt", "--system", SYSTEM, "--steps", "20", "--out", str(tmp_path / "out"))
    finally:
        if env_tmp is None:
            del os.environ["TMPDIR"]
        else:
            os.environ["TMPDIR"] = env_tmp
    assert res.returncode == 0, res.stderr
    assert json.loads((tmp_path / "out" / "emt" / SYSTEM / "run.json").read_text())["status"] == "completed"


def test_stale_socket_folders_of_killed_runs_are_cleaned(monkeypatch):
    """A SIGKILLed run leaves an empty private dm-* folder; the next run removes it, never a live one."""
    import shutil
    import tempfile
    import time
    from pathlib import Path

    from dynamat.engines.ipi import socket_dir

    tmp_path = Path(tempfile.mkdtemp(prefix="st", dir="/tmp"))  # short: socket folders live in a short $TMPDIR
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    old_empty, old_live, young = tmp_path / "dm-old", tmp_path / "dm-live", tmp_path / "dm-young"
    for d in (old_empty, old_live, young):
        d.mkdir(mode=0o700)
    (old_live / "s").write_text("")  # a live run's socket
    past = time.time() - 3600
    os.utime(old_empty, (past, past))
    os.utime(old_live, (past, past))
    new = socket_dir()
    try:
        assert not old_empty.exists() and old_live.exists() and young.exists()
        assert new.parent == tmp_path and oct(new.stat().st_mode & 0o777) == "0o700"
    finally:
        shutil.rmtree(tmp_path)


def test_inputs_never_replace_files_unasked_nor_write_through_a_link(tmp_path):
    """`dynamat inputs` into a folder that holds an input.xml (an earlier input, a user's own) refuses in one
    line; --force replaces it, a link there being replaced rather than written through; a run folder's
    inputs are refused even with --force (its resume reads them)."""
    out, victim = tmp_path / "in", tmp_path / "victim.xml"
    out.mkdir()
    (out / "input.xml").write_text("<mine/>")
    args = ("inputs", "--system", SYSTEM, "--steps", "10", "--out", str(out))
    res = dynamat_cmd(*args)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1 and "--force" in res.stderr
    assert (out / "input.xml").read_text() == "<mine/>" and not (out / "init.xyz").exists()
    (out / "input.xml").unlink()
    victim.write_text("<victim/>")
    (out / "input.xml").symlink_to(victim)
    assert dynamat_cmd(*args, "--force").returncode == 0
    assert victim.read_text() == "<victim/>" and not (out / "input.xml").is_symlink()
    assert "<simulation" in (out / "input.xml").read_text() and (out / "init.xyz").exists()
    run = tmp_path / "runs"
    assert dynamat_cmd("run", "--model", "emt", "--system", SYSTEM, "--steps", "10", "--out", str(run)).returncode == 0
    folder = run / "emt" / SYSTEM
    before = _snapshot(folder)
    res = dynamat_cmd("inputs", "--system", SYSTEM, "--out", str(folder), "--force")
    assert res.returncode == 2 and "holds a dynamat run" in res.stderr and _snapshot(folder) == before
