"""Matbench's keys from score_md's neighbour pass (scoring.run.score_with_matbench): the bits of a pass of
their own, and a pass of their own wherever score_md's is not the same one."""

import sys
from pathlib import Path

import numpy as np
import pytest

from dynamat.metrics import matbench
from dynamat.scoring.core import score_md
from dynamat.scoring.run import matbench_object, score_with_matbench

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from bench_scoring import CELLS, synthetic  # noqa: E402


def _count_own_passes(monkeypatch):
    """Counts the RDF passes Matbench's keys make themselves."""
    calls = []
    real = matbench.matbench_rdf

    def counted(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(matbench, "matbench_rdf", counted)
    return calls


# the sheared cell: Matbench rebuilds the prediction's R_max from the reference's bin centres, one ulp
# off here, so that side makes its own pass (a different R_max could move a pair across a bin edge)
@pytest.mark.parametrize("cell, own_passes", [("cubic", 0), ("triclinic", 1)])
def test_shared_pass_gives_the_same_bits_and_no_pass_of_its_own(cell, own_passes, monkeypatch):
    ref, mlip = synthetic(300, CELLS[cell], 1), synthetic(300, CELLS[cell], 2, sigma=0.13)
    own = matbench_object(ref, mlip)
    calls = _count_own_passes(monkeypatch)
    res = score_with_matbench(ref, mlip, n_boot=0)
    assert len(calls) == own_passes  # the others came from score_md's pass
    assert res["matbench"] == own  # dict equality: every key to the bit
    assert res["rdf_error_pct"] == score_md(ref, mlip, n_boot=0)["rdf_error_pct"]  # the visitor changes nothing
    assert all(v is not None and np.isfinite(v) for v in own.values())


def test_a_pass_over_other_frames_is_not_reused(monkeypatch):
    """The MLIP run is longer than the reference: score_md cuts both to the shorter duration, Matbench
    matches frame counts on the common grid; where the frames differ the side makes its own pass."""
    ref, mlip = synthetic(200, CELLS["cubic"], 1), synthetic(300, CELLS["cubic"], 2)
    mlip.dt_fs = ref.dt_fs / 2  # same frames count 2:1 in time: Matbench takes every frame up to the span
    own = matbench_object(ref, mlip)
    calls = _count_own_passes(monkeypatch)
    res = score_with_matbench(ref, mlip, n_boot=0)
    assert res["matbench"] == own
    assert len(calls) >= 1
