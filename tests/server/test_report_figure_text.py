"""Every figure's text lies inside its canvas, as saved (``bbox_inches=None``): one system, one
model or many, each figure kind. Single-system curve figures used to cut their titles at both
edges."""

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.text import Text

from dynamat.report import write_synthetic_results
from dynamat.report.external import load_external, match_external
from dynamat.report.figures import _rc, make_figures
from dynamat.report.tables import load_results, model_table

SETS = {
    "one system, six models": dict(systems=(("bulk_Cu_300K", "pure metal"),), exploded=()),
    "one molecular crystal, one model": dict(models=(("CHGNet", 1, 412_525, 1.0),),
                                             systems=(("naphthalene_300K", "molecular crystal"),),
                                             exploded=()),
    "three systems, six models": dict(),
}
DPI = 150  # save_figure's


def _outside(fig, renderer) -> list[str]:
    """Each drawn text (titles, labels, legends, notes, drawn tick labels) not inside the canvas."""
    canvas = fig.bbox
    tol = 0.5  # px
    def out(bb) -> bool:
        return bb.x0 < canvas.x0 - tol or bb.y0 < canvas.y0 - tol or bb.x1 > canvas.x1 + tol or bb.y1 > canvas.y1 + tol

    bad = []
    tick_labels = set()
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                tick_labels.update({id(tick.label1), id(tick.label2)})
            if ax.get_visible() and axis.get_visible():
                bb = axis.get_tightbbox(renderer)  # only the ticks that are drawn
                if bb is not None and out(bb):
                    bad.append(f"tick labels of {ax.get_title()!r}: {bb.bounds}")
    for t in fig.findobj(Text):
        if id(t) in tick_labels or not t.get_visible() or not t.get_text().strip():
            continue
        if t.axes is not None and not t.axes.get_visible():
            continue
        bb = t.get_window_extent(renderer)
        if out(bb):
            bad.append(f"{t.get_text()[:60]!r}: {tuple(round(v) for v in bb.extents)} in {canvas.extents}")
    return bad


@pytest.mark.parametrize("name", sorted(SETS))
def test_every_figure_text_is_inside_the_canvas(tmp_path, name):
    res = load_results(write_synthetic_results(tmp_path / "res", **SETS[name]))
    rows = model_table(res, match_external(res.models, load_external())).rows
    figs = make_figures(res, rows)
    assert {"fig3_rdf_curves", "fig5_vdos_spectra", "fig7_pareto_E_RPV"} <= set(figs)
    assert ("fig4_pressure_histograms" in figs) == (name != "one molecular crystal, one model")
    problems = {}
    with _rc():
        for stem, fig in figs.items():
            fig.set_dpi(DPI)
            canvas = FigureCanvasAgg(fig)
            canvas.draw()
            bad = _outside(fig, canvas.get_renderer())
            if bad:
                problems[stem] = bad
    assert not problems, problems
