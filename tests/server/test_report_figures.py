"""Figures build from a small synthetic results set and hold the expected series."""

import numpy as np
import pytest

from dynamat.report import write_synthetic_results
from dynamat.report.external import load_external, match_external
from dynamat.report.figures import fig_correlations, fig_curves, fig_pareto, fig_tier_bars
from dynamat.report.pareto import pareto_front
from dynamat.report.tables import load_results, model_table


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """6 models (tiers 1,1,2,3,3,4) x 3 systems; UMA-S-P1 exploded on Pt3Co."""
    res = load_results(write_synthetic_results(tmp_path_factory.mktemp("res")))
    ext = match_external(res.models, load_external())
    return res, model_table(res, ext).rows


def _gid(artists, gid):
    return [a for a in artists if a.get_gid() == gid]


def test_tier_bars_one_bar_per_model_and_one_median_per_tier(synth):
    _, rows = synth
    fig = fig_tier_bars(rows, ["energy_rmse_eV_per_atom", "force_rmse_eV_per_A"])
    axes = fig.axes
    assert len(axes) == 2
    for ax in axes:
        assert len(_gid(ax.patches, "bars")) == 6
        assert len(_gid(ax.lines, "tier-median")) == 4
    # bars follow tier / parameter order and heights are the model means
    heights = [p.get_height() for p in _gid(axes[1].patches, "bars")]
    assert heights == pytest.approx([r["force_rmse_eV_per_A"] for r in rows])
    labels = [t.get_text() for t in axes[1].get_xticklabels()]
    assert labels[0] == "CHGNet" and labels[-1] == "UMA-S-P1 †1"
    # tier-1 median line sits at the median of the two tier-1 means
    t1 = sorted(_gid(axes[1].lines, "tier-median"), key=lambda l: l.get_xdata()[0])[0]
    assert t1.get_ydata()[0] == pytest.approx(np.median([rows[0]["force_rmse_eV_per_A"],
                                                         rows[1]["force_rmse_eV_per_A"]]))


def test_tier_bars_skip_missing_values_and_draw_error_bars(synth):
    _, rows = synth
    rows = [dict(r) for r in rows]
    rows[2]["rdf_error_pct"] = None  # orb-v2 without a value: no bar, no tier-2 median
    ax = fig_tier_bars(rows, ["rdf_error_pct"]).axes[0]
    assert len(_gid(ax.patches, "bars")) == 5
    assert len(_gid(ax.lines, "tier-median")) == 3
    assert len(ax.containers) == 2  # the bars and the error bars (rdf has _unc)
    for r in rows:
        r["rdf_error_pct"] = None
    assert fig_tier_bars(rows, ["rdf_error_pct"]) is None  # nothing to draw -> no figure


def test_pareto_figure_circles_exactly_the_front(synth):
    _, rows = synth
    fig = fig_pareto(rows, "E_RPV_pct")
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    assert len([c for c in ax.collections if (c.get_gid() or "").startswith("tier")]) == 4
    circles = _gid(ax.collections, "pareto-circle")
    assert len(circles) == 1
    expected = pareto_front([r["seconds_per_step"] for r in rows], [r["E_RPV_pct"] for r in rows])
    assert len(circles[0].get_offsets()) == int(expected.sum()) >= 1
    assert len(_gid(ax.lines, "pareto-front")) == 1


def test_correlation_grid_excludes_tier4_from_external_columns(synth):
    _, rows = synth
    fig = fig_correlations(rows)
    axes = np.array(fig.axes).reshape(3, 3)
    for i in range(3):
        force_gids = {c.get_gid() for c in axes[i, 0].collections if c.get_gid()}
        f1_gids = {c.get_gid() for c in axes[i, 1].collections if c.get_gid()}
        assert force_gids == {"tier1", "tier2", "tier3", "tier4"}
        assert f1_gids == {"tier1", "tier2", "tier3"}
        texts = [t.get_text() for t in axes[i, 0].texts]
        assert any(t.startswith("r = ") and "(n=6)" in t for t in texts)
        assert any("(n=5)" in t.get_text() for t in axes[i, 1].texts)


def test_rdf_curves_reference_plus_best_and_worst_per_tier(synth):
    res, _ = synth
    fig = fig_curves(res, "rdf")
    axes = [a for a in fig.axes if a.get_visible()]
    assert len(axes) == 3  # one per material class present
    titles = {a.get_title(): a for a in axes}
    cu = titles["pure metal: bulk_Cu_300K"]
    # reference + T1 best/worst + T2 + T3 best/worst + T4
    assert len(cu.get_legend_handles_labels()[1]) == 7
    assert len(_gid(cu.lines, "reference")) == 1
    alloy = titles["alloy: Pt3Co_300K"]
    labels = alloy.get_legend_handles_labels()[1]
    assert len(labels) == 6 and not any("UMA" in l for l in labels)  # exploded run not drawn
    pfig = fig_curves(res, "pressure")
    assert len([a for a in pfig.axes if a.get_visible()]) == 2  # molecular crystal has no pressure


def test_curves_absent_gives_none(tmp_path):
    res = load_results(write_synthetic_results(tmp_path, curves=False))
    assert fig_curves(res, "vdos") is None
