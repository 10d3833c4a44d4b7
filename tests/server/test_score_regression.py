"""Reading + scoring + reporting give today's numbers: a refactor of the scoring pipeline must not move them.

The goldens under tests/data/golden/ were written by tests/data/golden/regenerate.py (its docstring says
from what and how to remake them). Every number must match to 1e-12 relative, key by key (None stays
None, strings and flags exactly), curves.npz arrays too, and the report's CSV/JSON tables and Matbench
export likewise.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "golden"
RTOL = 1e-12


def _load_regenerate():
    spec = importlib.util.spec_from_file_location("golden_regenerate", GOLDEN / "regenerate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _close(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b or abs(a - b) <= RTOL * max(abs(a), abs(b))


def diffs(new, old, where: str = "") -> list[str]:
    """Where ``new`` and ``old`` differ: numbers beyond RTOL, anything else at all."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = [f"{where}/{k}: missing" for k in old if k not in new]
        out += [f"{where}/{k}: new key" for k in new if k not in old]
        for k in old:
            if k in new:
                out += diffs(new[k], old[k], f"{where}/{k}")
        return out
    if isinstance(old, list) and isinstance(new, list):
        if len(old) != len(new):
            return [f"{where}: length {len(new)} != {len(old)}"]
        return [d for i, (a, b) in enumerate(zip(new, old)) for d in diffs(a, b, f"{where}[{i}]")]
    numeric = (int, float)
    if (isinstance(old, numeric) and isinstance(new, numeric) and not isinstance(old, bool)
            and not isinstance(new, bool)):
        return [] if _close(float(new), float(old)) else [f"{where}: {new!r} != {old!r}"]
    return [] if new == old and type(new) is type(old) else [f"{where}: {new!r} != {old!r}"]


def _csv_cells(text: str) -> list[list]:
    def cell(c: str):
        try:
            return float(c)
        except ValueError:
            return c
    return [[cell(c) for c in row] for row in csv.reader(io.StringIO(text))]


def file_diffs(new: Path, old: Path) -> list[str]:
    name = str(old.relative_to(GOLDEN))
    if not new.exists():
        return [f"{name}: not written"]
    if old.suffix == ".json":
        return diffs(json.loads(new.read_text()), json.loads(old.read_text()), name)
    if old.suffix == ".csv":
        return diffs(_csv_cells(new.read_text()), _csv_cells(old.read_text()), name)
    if old.suffix == ".npz":
        with np.load(new) as a, np.load(old) as b:
            if sorted(a.files) != sorted(b.files):
                return [f"{name}: arrays {sorted(a.files)} != {sorted(b.files)}"]
            return [f"{name}:{k}" for k in b.files
                    if a[k].shape != b[k].shape or not np.allclose(a[k], b[k], rtol=RTOL, atol=0)]
    return [] if new.read_text() == old.read_text() else [f"{name}: text differs"]


def golden_files() -> list[Path]:
    return sorted(p for sub in ("scores", "report") for p in (GOLDEN / sub).rglob("*") if p.is_file()) + [
        GOLDEN / "pimd_differences.json"]


@pytest.fixture(scope="module")
def recomputed(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("recomputed")
    _load_regenerate().compute(out)
    return out


def test_goldens_are_small_and_cover_every_case():
    assert sum(p.stat().st_size for p in GOLDEN.rglob("*") if p.is_file()) < 1_000_000
    names = {p.name for p in golden_files()}
    for case in ("classical", "pimd2", "trajectory"):
        assert {f"{case}.score.json", f"{case}.curves.npz"} <= names
    assert {"per_model.csv", "per_model.json", "per_model_system.csv"} <= names
    pimd = json.loads((GOLDEN / "scores" / "pimd2.score.json").read_text())
    assert pimd["rdf_source"] == "all_beads" and pimd["rdf_error_centroid_pct"] is not None


@pytest.mark.parametrize("sub", ["scores", "pimd_differences.json", "report"])
def test_outputs_equal_the_goldens(recomputed, sub):
    files = [p for p in golden_files() if p.relative_to(GOLDEN).parts[0] == sub]
    assert files
    bad = [d for p in files for d in file_diffs(recomputed / p.relative_to(GOLDEN), p)]
    assert not bad, "\n".join(bad[:40])


def test_a_perturbed_number_is_caught(tmp_path):
    """The comparison can fail: one number moved by 1e-10 relative, one None made 0, one curve point."""
    old = json.loads((GOLDEN / "scores" / "classical.score.json").read_text())
    moved = dict(old, rdf_error_pct=old["rdf_error_pct"] * (1 + 1e-10))
    assert diffs(moved, old) == ["/rdf_error_pct: " + f"{moved['rdf_error_pct']!r} != {old['rdf_error_pct']!r}"]
    nulls = [k for k, v in old.items() if v is None] or ["seconds_per_step"]
    assert diffs(dict(old, **{nulls[0]: 0.0}), dict(old, **{nulls[0]: None}))
    assert diffs({**old, "matbench": {**old["matbench"], "rdf_error": 0.0}}, old)
    with np.load(GOLDEN / "scores" / "classical.curves.npz") as z:
        arrays = {k: z[k].copy() for k in z.files}
    arrays["rdf_mlip"][np.argmax(arrays["rdf_mlip"])] *= 1 + 1e-9
    np.savez(tmp_path / "c.npz", **arrays)
    assert file_diffs(tmp_path / "c.npz", GOLDEN / "scores" / "classical.curves.npz")


def test_pimd_differences_are_score_md_with_the_classical_run_as_reference():
    """quantum_classical_differences goes through the scoring pipeline: its errors are score_md's."""
    from dynamat.io.run_folder import read_bead_trajectory, read_centroid_trajectory, read_run_trajectory
    from dynamat.pimd import quantum_classical_differences
    from dynamat.scoring import score_md

    classical, quantum = GOLDEN / "runs" / "emt_classical", GOLDEN / "runs" / "emt_pimd2"
    diff = quantum_classical_differences(classical, quantum, discard_fraction=0.0, n_bins=120)
    score = score_md(read_run_trajectory(classical), read_centroid_trajectory(quantum), n_bins=120, n_boot=0,
                     mlip_beads=read_bead_trajectory(quantum))
    for key in ("rdf_error_pct", "rdf_error_centroid_pct", "pressure_mae_GPa", "pressure_hist_error_pct",
                "vdos_error_pct", "matched_duration_fs", "rdf_r_max_A"):
        assert diff[key] == score[key], key
    assert abs(diff["pressure_difference_GPa"]) == pytest.approx(diff["pressure_mae_GPa"], rel=1e-12)
