"""Figures analogous to the Dyna-Mat-v1.0 paper (Fig. 2-7, S6a, S13-S16).

Every builder returns a :class:`matplotlib.figure.Figure` (or None when there is nothing
to draw) built without pyplot, so nothing here touches global backend state and the
figures render headless (Agg) when saved. Artists carry ``gid`` tags so tests and callers
can find them: ``"bars"`` (bar patches), ``"tier-median"`` (dashed median lines),
``"pareto-circle"`` (circles around Pareto-optimal points), ``"pareto-front"`` (step
line), ``"reference"`` (reference curve), ``"tier<t>"`` (scatter of one tier).

Conventions
-----------
* Models are ordered by tier, then parameter count (paper Fig. 2), untiered models last.
* Failed/exploded runs are excluded from every value drawn; a model with failures gets
  a dagger and the count in its tick label, and a footnote says so.
* Error bars are drawn where the tables carry ``<key>_unc``.
* Outliers in correlation panels: points whose residual from the least-squares line
  exceeds both 1.5 standard deviations of the residuals and 10 % of the y range (needs
  at least 4 points); only those are named, as in the paper's Fig. 6.
* Correlations against external metrics exclude Tier 4 by default (the paper does so
  because Tier-4 models are not on the Matbench-discovery leaderboard).
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .external import EXTERNAL_METRICS
from .pareto import as_float_array, pareto_front, pareto_staircase, pearson_r
from .tables import METRIC_BY_KEY, OBSERVABLE_KEYS, Results, _class_order, tier_key, tier_label

__all__ = [
    "FIGURE_SPECS",
    "TIER_COLORS",
    "build_figures",
    "fig_correlations",
    "fig_curves",
    "fig_pareto",
    "fig_tier_bars",
    "save_figure",
]

TIER_COLORS = {1: "#4C72B0", 2: "#DD8452", 3: "#55A868", 4: "#C44E52", "test": "#937860", None: "#8C8C8C"}
EXTERNAL_LABELS = {key: (label, "") for key, (label, _) in EXTERNAL_METRICS.items()}  # the one table

_RC = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 7,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
}


def _color(tier: int | None) -> str:
    return TIER_COLORS.get(tier, TIER_COLORS[None])


def _dark(tier: int | None, f: float = 0.6) -> tuple[float, float, float]:
    from matplotlib.colors import to_rgb

    return tuple(f * c for c in to_rgb(_color(tier)))


def _new_figure(width: float, height: float) -> Figure:
    import matplotlib as mpl

    with mpl.rc_context(_RC):
        fig = Figure(figsize=(width, height), layout="constrained")
    return fig


def _rc():
    import matplotlib as mpl

    return mpl.rc_context(_RC)


def _label_for(key: str) -> str:
    if key in METRIC_BY_KEY:
        return METRIC_BY_KEY[key].axis_label
    if key in EXTERNAL_LABELS:
        return EXTERNAL_LABELS[key][0]
    return key


def _val(row: dict[str, Any], key: str) -> float:
    v = row.get(key)
    return math.nan if v is None else float(v)


def _footnote(fig: Figure, parts: Sequence[str], color: str = "#444") -> None:
    """Footnote below everything; supxlabel so that constrained layout makes room."""
    parts = [p for p in parts if p]
    if parts:
        fig.supxlabel("\n".join(parts), x=0.01, ha="left", fontsize=7, color=color)


def _name(row: dict[str, Any]) -> str:
    """Model name, with a dagger and count when some of its runs failed."""
    n = int(row.get("n_failed") or 0)
    return f"{row['model']} †{n}" if n else row["model"]


def _named(row: dict[str, Any]) -> str:
    """:func:`_name` with the model's label when it says more than the name, e.g. "my-lj: LJ (fitted)"."""
    label = row.get("model_label")
    if not label or label.lower().replace("-", " ") == str(row["model"]).lower().replace("-", " "):
        return _name(row)
    return f"{_name(row)}: {label}"


def _failure_note(model_rows: Sequence[dict[str, Any]]) -> str:
    n = sum(int(r.get("n_failed") or 0) for r in model_rows)
    return (f"† {n} run(s) failed or exploded: excluded from the values shown (see tables)."
            if n else "")


# ----------------------------------------------------------------------------- bar charts
def _finite(v: Any) -> bool:
    return v is not None and math.isfinite(float(v))


def fig_tier_bars(model_rows: Sequence[dict[str, Any]], keys: Sequence[str],
                  title: str | None = None, logy: bool | None = None) -> Figure | None:
    """Per-model bars of ``keys`` (one panel each) grouped by tier, tier medians dashed.

    ``model_rows`` are rows of the per-model table (already in model order).
    ``logy=None`` picks a log axis when the largest value exceeds 20x the median.
    Returns None when no model has any of the values.
    """
    rows = list(model_rows)
    if not any(_finite(r.get(k)) for r in rows for k in keys):
        return None  # nothing to draw
    tiers = [r.get("tier") for r in rows]
    # x positions with a gap between tiers
    xs, x, prev = [], 0.0, object()
    for t in tiers:
        if xs and t != prev:
            x += 0.7
        xs.append(x)
        x += 1.0
        prev = t
    xs_arr = np.array(xs)
    width = max(4.0, 0.42 * len(rows) + 1.8)
    with _rc():
        fig = _new_figure(width, 2.5 * len(keys) + 0.9)
        axes = fig.subplots(len(keys), 1, sharex=True, squeeze=False)[:, 0]
        for ax, key in zip(axes, keys):
            vals = np.array([_val(r, key) for r in rows])
            uncs = np.array([_val(r, f"{key}_unc") for r in rows])
            ok = np.isfinite(vals)
            colors = [_color(t) for t in tiers]
            bars = ax.bar(xs_arr[ok], vals[ok], width=0.8,
                          color=[c for c, o in zip(colors, ok) if o], edgecolor="black",
                          linewidth=0.4, zorder=2)
            for p in bars.patches:
                p.set_gid("bars")
            eb = ok & np.isfinite(uncs)
            if eb.any():
                ax.errorbar(xs_arr[eb], vals[eb], yerr=uncs[eb], fmt="none", ecolor="black",
                            elinewidth=0.8, capsize=2, zorder=3)
            rep = np.array([_val(r, f"{key}_replica_unc") for r in rows])
            er = ok & np.isfinite(rep)
            if er.any():  # replicas: their standard error, offset beside the bootstrap one
                ax.errorbar(xs_arr[er] + 0.18, vals[er], yerr=rep[er], fmt="none", ecolor="#c0392b",
                            elinewidth=0.8, capsize=2, zorder=3, gid="replica-errorbar")
            for xi in xs_arr[~ok]:
                ax.text(xi, 0, "n/a", ha="center", va="bottom", fontsize=6, color="#666",
                        rotation=90)
            positive = vals[ok & (vals > 0)]
            use_log = logy if logy is not None else bool(
                positive.size >= 2 and positive.max() > 20 * np.median(positive))
            if use_log and positive.size:
                ax.set_yscale("log")
            elif not (vals[ok] < 0).any():
                ax.set_ylim(bottom=0)
            # tier medians (dashed), spanning each tier's group of bars
            for t in dict.fromkeys(tiers):
                sel = np.array([tt == t for tt in tiers]) & ok
                if not sel.any():
                    continue
                med = float(np.median(vals[sel]))
                grp = xs_arr[np.array([tt == t for tt in tiers])]
                (line,) = ax.plot([grp.min() - 0.48, grp.max() + 0.48], [med, med], ls="--",
                                  lw=1.5, color=_dark(t), zorder=4)
                line.set_gid("tier-median")
            ax.set_ylabel(_label_for(key))
            ax.grid(axis="y", lw=0.3, alpha=0.6, zorder=0)
            ax.set_xlim(xs_arr.min() - 0.7, xs_arr.max() + 0.7)
            # tier names above the groups
            for t in dict.fromkeys(tiers):
                grp = xs_arr[np.array([tt == t for tt in tiers])]
                ax.text(grp.mean(), 1.0, tier_label(t), transform=ax.get_xaxis_transform(),
                        ha="center", va="bottom", fontsize=8, color=_color(t), fontweight="bold")
        labels = []
        for r in rows:
            lab = r["model"]
            if r.get("n_failed"):
                lab += f" †{r['n_failed']}"
            labels.append(lab)
        axes[-1].set_xticks(xs_arr, labels, rotation=45, ha="right", rotation_mode="anchor")
        if title:
            fig.suptitle(title, fontsize=10)
        replicas = any(_finite(r.get(f"{k}_replica_unc")) for r in rows for k in keys)
        _footnote(fig, ["Dashed lines: tier medians of the model means."
                        + (" Error bars: black bootstrap, red replica spread (SD/√R)." if replicas else ""),
                        _failure_note(rows)])
    return fig


# ----------------------------------------------------------------------------- curves
_CURVE_SPECS = {
    "rdf": dict(metric="rdf_error_pct", x="rdf_r", ref="rdf_ref", mlip="rdf_mlip",
                xlabel="r (Å)", ylabel="g(r)", fmt="{:.1f}%"),
    "vdos": dict(metric="vdos_error_pct", x="vdos_nu_THz", ref="vdos_ref", mlip="vdos_mlip",
                 xlabel="ν (THz)", ylabel="normalised VDOS", fmt="{:.1f}%"),
    "pressure": dict(metric="pressure_mae_GPa", x=None, ref="p_ref_GPa", mlip="p_mlip_GPa",
                     xlabel="P (GPa)", ylabel="probability density", fmt="{:.2f} GPa"),
}


def _load_curves(path: str | None, names: Iterable[str]) -> dict[str, np.ndarray] | None:
    if not path:
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {n: np.asarray(npz[n], dtype=float) for n in names if n in npz.files}
    except (OSError, ValueError):
        return None


def _select_curve_runs(results: Results, kind: str):
    """Per class: the worst system (highest mean error over completed models) among
    systems with curves, and per tier its best and worst completed model."""
    spec = _CURVE_SPECS[kind]
    metric = spec["metric"]
    needed = [n for n in (spec["x"], spec["ref"], spec["mlip"]) if n]
    chosen = []
    for cls in _class_order(results.rows):
        runs = [r for r in results.completed if r["system_class"] == cls
                and r.get(metric) is not None and r.get("curves_path")]
        if not runs:
            continue
        by_sys: dict[str, list] = {}
        for r in runs:
            by_sys.setdefault(r["system"], []).append(r)
        system = max(by_sys, key=lambda s: (np.mean([r[metric] for r in by_sys[s]]), s))
        sel = []
        srows = by_sys[system]
        for t in sorted({r["tier"] for r in srows}, key=tier_key):
            trows = sorted((r for r in srows if r["tier"] == t), key=lambda r: (r[metric], r["model"]))
            picks = [(trows[0], "best")] + ([(trows[-1], "worst")] if len(trows) > 1 else [])
            for r, role in picks:
                data = _load_curves(r["curves_path"], needed)
                if data and all(n in data for n in needed):
                    sel.append((r, role, data))
        if sel:
            chosen.append((cls, system, sel))
    return chosen


def _curve_label(r: dict[str, Any], spec: dict[str, Any]) -> str:
    t = r.get("tier")
    tier = f"T{t}" if isinstance(t, int) else tier_label(t)
    return f"{r['model']} ({tier}): {spec['fmt'].format(r[spec['metric']])}"


def fig_curves(results: Results, kind: str) -> Figure | None:
    """Reference vs best (solid) / worst (dashed) model per tier on the worst system of
    each material class: g(r) (Fig. 3b-f), VDOS (Fig. 5b-f) or pressure histograms
    (Fig. 4b-e). None when no curves.npz provides the arrays."""
    spec = _CURVE_SPECS[kind]
    chosen = _select_curve_runs(results, kind)
    if not chosen:
        return None
    n = len(chosen)
    ncols = 2 if n == 4 else min(3, n)
    nrows = math.ceil(n / ncols)
    with _rc():
        fig = _new_figure(4.3 * ncols, 4.1 * nrows)
        axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
        for ax in axes[n:]:
            ax.set_visible(False)
        for ax, (cls, system, sel) in zip(axes, chosen):
            ref_data = sel[0][2]
            if kind == "pressure":
                samples = [ref_data[spec["ref"]]] + [d[spec["mlip"]] for _, _, d in sel]
                allp = np.concatenate([s[np.isfinite(s)] for s in samples])
                lo, hi = np.percentile(allp, [0.5, 99.5]) if allp.size else (0, 1)
                if hi <= lo:
                    lo, hi = lo - 0.5, hi + 0.5
                edges = np.linspace(lo, hi, 41)
                ax.hist(ref_data[spec["ref"]], bins=edges, density=True, color="#bbbbbb",
                        label="reference", gid="reference")
                for r, role, d in sel:
                    ax.hist(d[spec["mlip"]], bins=edges, density=True, histtype="step",
                            color=_color(r["tier"]), lw=1.4, ls="-" if role == "best" else "--",
                            label=_curve_label(r, spec))
            else:
                (ref_line,) = ax.plot(ref_data[spec["x"]], ref_data[spec["ref"]], color="black",
                                      lw=2.0, label="reference", zorder=5)
                ref_line.set_gid("reference")
                for r, role, d in sel:
                    ax.plot(d[spec["x"]], d[spec["mlip"]], color=_color(r["tier"]), lw=1.2,
                            ls="-" if role == "best" else "--",
                            label=_curve_label(r, spec))
                if kind == "rdf":
                    ax.axhline(1.0, color="#999", lw=0.5, zorder=0)
                    r_ax, g_ax = ref_data[spec["x"]], ref_data[spec["ref"]]
                    nz = np.flatnonzero(g_ax > 0.05)
                    if nz.size:  # skip the empty core region r < first neighbour shell
                        ax.set_xlim(max(0.0, 0.85 * r_ax[nz[0]]), r_ax[-1])
            ax.set_title(f"{cls}: {system}")
            ax.set_xlabel(spec["xlabel"])
            ax.set_ylabel(spec["ylabel"])
            ax.legend(frameon=False, fontsize=6.5, loc="upper center", ncols=2,
                      bbox_to_anchor=(0.5, -0.2), handlelength=2.2, columnspacing=1.0)
        fig.suptitle({"rdf": "g(r): reference vs best (solid) / worst (dashed) model per tier",
                      "vdos": "VDOS: reference vs best (solid) / worst (dashed) model per tier",
                      "pressure": "Pressure histograms: reference (grey) vs best (solid) / "
                                  "worst (dashed) model per tier"}[kind], fontsize=10)
    return fig


# ----------------------------------------------------------------------------- correlations
def _outliers(x: np.ndarray, y: np.ndarray, z: float = 1.5, rel: float = 0.1) -> np.ndarray:
    ok = np.isfinite(x) & np.isfinite(y)
    out = np.zeros(x.shape, dtype=bool)
    if ok.sum() < 4 or np.ptp(x[ok]) == 0:
        return out
    b, a = np.polyfit(x[ok], y[ok], 1)
    res = y - (a + b * x)
    # large relative to the scatter about the line *and* to the spread of y, so that a
    # near-perfect correlation does not get its tiny residuals labelled as outliers
    threshold = max(z * float(np.std(res[ok])), rel * float(np.ptp(y[ok])))
    if threshold == 0:
        return out
    out[ok] = np.abs(res[ok]) > threshold
    return out


def fig_correlations(model_rows: Sequence[dict[str, Any]],
                     y_keys: Sequence[str] = OBSERVABLE_KEYS,
                     x_keys: Sequence[str] = ("force_rmse_eV_per_A", "f1", "kappa_srme"),
                     external_keys: Sequence[str] = ("f1", "kappa_srme"),
                     exclude_tiers_external: Sequence[int] = (4,)) -> Figure:
    """Fig. 6: each observable error (rows) against force RMSE, F1 and κ_SRME (columns),
    Pearson r (and n) in the top-left corner, outliers named."""
    rows = list(model_rows)
    with _rc():
        fig = _new_figure(3.3 * len(x_keys), 2.8 * len(y_keys))
        axes = fig.subplots(len(y_keys), len(x_keys), squeeze=False)
        to_label = []
        for i, yk in enumerate(y_keys):
            for j, xk in enumerate(x_keys):
                ax = axes[i, j]
                use = [r for r in rows
                       if not (xk in external_keys and r.get("tier") in exclude_tiers_external)]
                x = as_float_array([r.get(xk) for r in use])
                y = as_float_array([r.get(yk) for r in use])
                xu = as_float_array([r.get(f"{xk}_unc") for r in use])
                yu = as_float_array([r.get(f"{yk}_unc") for r in use])
                ok = np.isfinite(x) & np.isfinite(y)
                tiers = [r.get("tier") for r in use]
                for t in dict.fromkeys(tiers):
                    sel = ok & np.array([tt == t for tt in tiers])
                    if sel.any():
                        ax.scatter(x[sel], y[sel], s=22, color=_color(t), edgecolor="black",
                                   linewidth=0.4, zorder=3, label=tier_label(t), gid=f"tier{t}")
                eb = ok & (np.isfinite(xu) | np.isfinite(yu))
                if eb.any():
                    ax.errorbar(x[eb], y[eb], xerr=np.where(np.isfinite(xu), xu, 0)[eb],
                                yerr=np.where(np.isfinite(yu), yu, 0)[eb], fmt="none",
                                ecolor="#555", elinewidth=0.6, zorder=2)
                r, n = pearson_r(x, y)
                txt = f"r = {r:.2f} (n={n})" if math.isfinite(r) else f"r = n/a (n={n})"
                ax.text(0.03, 0.97, txt, transform=ax.transAxes, ha="left", va="top",
                        fontsize=8, fontweight="bold", zorder=6,
                        bbox=dict(boxstyle="round,pad=0.2", fc="white", ec="none", alpha=0.8))
                ax.margins(x=0.08, y=0.18)
                out_idx = np.flatnonzero(_outliers(x, y))
                if out_idx.size:
                    to_label.append((ax, x[out_idx], y[out_idx], [_name(use[k]) for k in out_idx],
                                     (x[ok], y[ok])))
                if not ok.any():
                    ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center",
                            va="center", color="#888")
                ax.set_xlabel(_label_for(xk))
                if j == 0:
                    ax.set_ylabel(_label_for(yk))
                ax.grid(lw=0.3, alpha=0.5)
        handles = [Line2D([], [], marker="o", ls="", color=_color(t), markeredgecolor="black",
                          markeredgewidth=0.4, label=tier_label(t))
                   for t in dict.fromkeys(r.get("tier") for r in rows)]
        fig.legend(handles=handles, loc="outside upper center", ncols=len(handles), frameon=False)
        _footnote(fig, [
            ("External-metric panels exclude tier(s) "
             + ", ".join(str(t) for t in exclude_tiers_external)
             + " (not on the Matbench-discovery leaderboard).") if exclude_tiers_external else "",
            "Named points: outliers (|residual from the least-squares line| > 1.5 SD of the "
            "residuals and > 10% of the y range).",
            _failure_note(rows)])
        if to_label:
            renderer = _renderer(fig)
            for ax, lx, ly, names, obstacles in to_label:
                _place_labels(fig, ax, lx, ly, names, [False] * len(names), renderer, obstacles)
    return fig


# ----------------------------------------------------------------------------- Pareto
_LABEL_OFFSETS = [(5, 4), (5, -11), (-5, 4), (-5, -11), (6, 12), (6, -19), (-6, 12), (-6, -19),
                  (12, -3), (-12, -3), (8, 20), (8, -27), (-8, 20), (-8, -27)]


def _renderer(fig: Figure):
    """Run the (constrained) layout once and return an Agg renderer for text extents."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    fig.draw_without_rendering()  # fixes the constrained layout, so transData is final
    return canvas.get_renderer()


def _place_labels(fig: Figure, ax, xs, ys, texts, bold, renderer=None, obstacles=None) -> None:
    """Greedy label placement: try a few offsets around each point and keep the first
    whose text box overlaps no marker and no earlier label and stays inside the axes.
    ``obstacles`` = (x, y) of further markers to avoid. Labels are kept out of the
    layout, so placing them does not move the axes."""
    renderer = renderer or _renderer(fig)
    ox, oy = obstacles if obstacles is not None else (xs, ys)
    pts = ax.transData.transform(np.column_stack([np.concatenate([xs, ox]),
                                                  np.concatenate([ys, oy])]))
    pts = pts[np.isfinite(pts).all(axis=1)]
    taken = [(x - 5, y - 5, x + 5, y + 5) for x, y in pts]
    axbox = ax.get_window_extent(renderer)

    def free(b) -> bool:
        if b.x0 < axbox.x0 or b.x1 > axbox.x1 or b.y0 < axbox.y0 or b.y1 > axbox.y1:
            return False
        return not any(b.x0 < t[2] and b.x1 > t[0] and b.y0 < t[3] and b.y1 > t[1] for t in taken)

    for i in np.argsort(xs, kind="stable"):
        ann = None
        for dx, dy in _LABEL_OFFSETS:
            if ann is not None:
                ann.remove()
            ann = ax.annotate(texts[i], (xs[i], ys[i]), xytext=(dx, dy), textcoords="offset points",
                              fontsize=6.5, fontweight="bold" if bold[i] else "normal",
                              ha="left" if dx >= 0 else "right", va="bottom", zorder=5)
            ann.set_in_layout(False)
            b = ann.get_window_extent(renderer)
            if free(b):
                break
        else:  # nothing free: fall back to the default position
            ann.remove()
            ann = ax.annotate(texts[i], (xs[i], ys[i]), xytext=_LABEL_OFFSETS[0],
                              textcoords="offset points", fontsize=6.5,
                              fontweight="bold" if bold[i] else "normal", zorder=5)
            ann.set_in_layout(False)
            b = ann.get_window_extent(renderer)
        taken.append((b.x0, b.y0, b.x1, b.y1))

def fig_pareto(model_rows: Sequence[dict[str, Any]], error_key: str = "E_RPV_pct",
               cost_key: str = "seconds_per_step", title: str | None = None) -> Figure:
    """Fig. 7 / S13-S16: error vs time per MD step (log x), colours by tier,
    Pareto-optimal models circled in black, front drawn as a step line."""
    rows = list(model_rows)
    c = as_float_array([r.get(cost_key) for r in rows])
    e = as_float_array([r.get(error_key) for r in rows])
    cu = as_float_array([r.get(f"{cost_key}_unc") for r in rows])
    eu = as_float_array([r.get(f"{error_key}_unc") for r in rows])
    replicas = any(r.get(f"{error_key}_replica_unc") is not None for r in rows)
    sources: dict[str, list[str]] = {}
    if replicas:  # the larger of the bootstrap and the replica uncertainty, named in the footnote
        from dynamat.scoring.replicas import larger_uncertainty

        picked = [larger_uncertainty(r, error_key) for r in rows]
        eu = as_float_array([u for u, _ in picked])
        for r, (_, src) in zip(rows, picked):
            if src:
                sources.setdefault(src, []).append(r["model"])
    ok = np.isfinite(c) & np.isfinite(e) & (c > 0)
    front = pareto_front(np.where(ok, c, np.nan), e)
    tiers = [r.get("tier") for r in rows]
    with _rc():
        fig = _new_figure(6.2, 4.4)
        ax = fig.subplots()
        for t in dict.fromkeys(tiers):
            sel = ok & np.array([tt == t for tt in tiers])
            if sel.any():
                ax.scatter(c[sel], e[sel], s=36, color=_color(t), edgecolor="black",
                           linewidth=0.4, zorder=3, label=tier_label(t), gid=f"tier{t}")
        eb = ok & (np.isfinite(cu) | np.isfinite(eu))
        if eb.any():
            ax.errorbar(c[eb], e[eb], xerr=np.where(np.isfinite(cu), cu, 0)[eb],
                        yerr=np.where(np.isfinite(eu), eu, 0)[eb], fmt="none", ecolor="#555",
                        elinewidth=0.6, zorder=2)
        if front.any():
            ax.scatter(c[front], e[front], s=190, facecolors="none", edgecolors="black",
                       linewidths=1.4, zorder=4, gid="pareto-circle")
            sx, sy = pareto_staircase(np.where(ok, c, np.nan), e)
            (line,) = ax.step(sx, sy, where="post", color="black", lw=0.8, alpha=0.6, zorder=1)
            line.set_gid("pareto-front")
        if ok.any():
            ax.set_xscale("log")
            lo, hi = c[ok].min(), c[ok].max()
            pad = 1.6 if hi / lo < 10 else 1.3
            ax.set_xlim(lo / pad, hi * pad * 1.4)
            ylo, yhi = e[ok].min(), e[ok].max()
            span = (yhi - ylo) or max(abs(yhi), 1.0)
            ax.set_ylim(ylo - 0.08 * span, yhi + 0.12 * span)
            idx = np.flatnonzero(ok)
            _place_labels(fig, ax, c[idx], e[idx], [_named(rows[k]) for k in idx],
                          [bool(front[k]) for k in idx])
        else:
            ax.text(0.5, 0.5, "no models with both cost and error", transform=ax.transAxes,
                    ha="center", va="center", color="#888")
        ax.set_xlabel(_label_for(cost_key) + " (log scale)")
        ax.set_ylabel(_label_for(error_key))
        ax.grid(lw=0.3, alpha=0.5, which="both")
        handles = [Line2D([], [], marker="o", ls="", color=_color(t), markeredgecolor="black",
                          markeredgewidth=0.4, label=tier_label(t)) for t in dict.fromkeys(tiers)]
        handles.append(Line2D([], [], marker="o", ls="", markerfacecolor="none",
                              markeredgecolor="black", markersize=10, label="Pareto-optimal"))
        ax.legend(handles=handles, frameon=False, loc="upper right")
        if title:
            ax.set_title(title)
        missing = [rows[k]["model"] for k in np.flatnonzero(~ok)]
        _footnote(fig, ["not shown (no cost or error): " + ", ".join(missing) if missing else "",
                        ("Error bars: the larger of the bootstrap and the replica uncertainty — "
                         + "; ".join(f"{src}: {', '.join(ms)}" for src, ms in sorted(sources.items())))
                        if sources else "",
                        _failure_note(rows)])
    return fig


# ----------------------------------------------------------------------------- driver
#: (file stem, caption) of every figure build_figures can produce, in page order
FIGURE_SPECS: list[tuple[str, str]] = [
    ("fig2_energy_force_rmse", "Fig. 2 analogue: mean energy and force RMSE per model, "
     "grouped by tier and ordered by parameter count; dashed lines are tier medians."),
    ("fig3a_rdf_error", "Fig. 3(a) analogue: mean RDF error per model; tier medians dashed."),
    ("fig3_rdf_curves", "Fig. 3(b-f) analogue: g(r) of the worst system of each class, "
     "reference vs best/worst model of each tier."),
    ("fig4a_pressure_mae", "Fig. 4(a) analogue: mean pressure MAE (systems with reference "
     "pressure only); tier medians dashed."),
    ("fig4_pressure_histograms", "Fig. 4(b-e) analogue: pressure histograms of the worst "
     "system of each class."),
    ("figS6a_pressure_hist_error", "Fig. S6(a) analogue: mean pressure-histogram error E_P."),
    ("fig5a_vdos_error", "Fig. 5(a) analogue: mean VDOS error per model; tier medians dashed."),
    ("fig5_vdos_spectra", "Fig. 5(b-f) analogue: VDOS of the worst system of each class."),
    ("fig6_correlations", "Fig. 6 analogue: observable errors vs force RMSE, Matbench-discovery "
     "F1 and κ_SRME, Pearson r in each corner, outliers named."),
    ("fig7_pareto_E_RPV", "Fig. 7 analogue: Pareto front of the combined error (Eq. 11) vs time "
     "per MD step; Pareto-optimal models circled."),
    ("figS13_pareto_L_RPV", "Fig. S13 analogue: Pareto front of the Lehmer error (Eq. 12)."),
    ("figS14_pareto_rdf", "Fig. S14 analogue: Pareto front of the RDF error."),
    ("figS15_pareto_pressure_hist", "Fig. S15 analogue: Pareto front of the pressure-histogram "
     "error."),
    ("figS16_pareto_vdos", "Fig. S16 analogue: Pareto front of the VDOS error."),
]


def save_figure(fig: Figure, outdir: Path, stem: str, formats: Sequence[str] = ("png", "pdf"),
                dpi: int = 150) -> list[Path]:
    outdir.mkdir(parents=True, exist_ok=True)
    paths = []
    with _rc():
        for ext in formats:
            p = outdir / f"{stem}.{ext}"
            fig.savefig(p, dpi=dpi)
            paths.append(p)
    return paths


def _overflow_px(text, renderer, width: float, pad: float) -> float:
    """How much narrower ``text`` must get to lie inside a canvas ``width`` px wide: a centred text
    shrinks on both sides, so it needs twice its larger overflow."""
    bb = text.get_window_extent(renderer)
    left, right = max(0.0, pad - bb.x0), max(0.0, bb.x1 - (width - pad))
    ha = text.get_horizontalalignment()
    return {"left": right, "right": left}.get(ha, 2 * max(left, right)) if left or right else 0.0


def fit_to_canvas(fig: Figure, pad_px: float = 3.0, rounds: int = 3) -> None:
    """Re-wraps the figure's titles and notes that the layout left sticking out of the canvas, then
    lays it out again. A one-panel figure is narrower than its suptitle, which constrained layout
    cannot shrink; wrapping is measured rather than counted in characters, since widths depend on
    the font."""
    for _ in range(rounds):
        fig.draw_without_rendering()
        renderer = fig._get_renderer()
        texts = [t for t in (fig._suptitle, fig._supxlabel, fig._supylabel, *fig.texts,
                             *(ax.title for ax in fig.axes if ax.get_visible())) if t is not None]
        changed = False
        for t in texts:
            excess = _overflow_px(t, renderer, fig.bbox.width, pad_px) if t.get_text() else 0.0
            if excess <= 0:
                continue
            lines = t.get_text().split("\n")
            share = 1.0 - excess / t.get_window_extent(renderer).width
            chars = max(8, int(max(map(len, lines)) * share * 0.95))
            t.set_text("\n".join(textwrap.fill(line, chars) for line in lines))
            changed = True
        if not changed:
            return


def make_figures(results: Results, model_rows: Sequence[dict[str, Any]]) -> dict[str, Figure]:
    """All figures that have data, keyed by FIGURE_SPECS stem."""
    rows = list(model_rows)
    builders = {
        "fig2_energy_force_rmse": lambda: fig_tier_bars(
            rows, ["energy_rmse_eV_per_atom", "force_rmse_eV_per_A"]),
        "fig3a_rdf_error": lambda: fig_tier_bars(rows, ["rdf_error_pct"]),
        "fig3_rdf_curves": lambda: fig_curves(results, "rdf"),
        "fig4a_pressure_mae": lambda: fig_tier_bars(rows, ["pressure_mae_GPa"]),
        "fig4_pressure_histograms": lambda: fig_curves(results, "pressure"),
        "figS6a_pressure_hist_error": lambda: fig_tier_bars(rows, ["pressure_hist_error_pct"]),
        "fig5a_vdos_error": lambda: fig_tier_bars(rows, ["vdos_error_pct"]),
        "fig5_vdos_spectra": lambda: fig_curves(results, "vdos"),
        "fig6_correlations": lambda: fig_correlations(rows),
        "fig7_pareto_E_RPV": lambda: fig_pareto(rows, "E_RPV_pct"),
        "figS13_pareto_L_RPV": lambda: fig_pareto(rows, "L_RPV_pct"),
        "figS14_pareto_rdf": lambda: fig_pareto(rows, "rdf_error_pct"),
        "figS15_pareto_pressure_hist": lambda: fig_pareto(rows, "pressure_hist_error_pct"),
        "figS16_pareto_vdos": lambda: fig_pareto(rows, "vdos_error_pct"),
    }
    figs = {}
    for stem, _ in FIGURE_SPECS:
        fig = builders[stem]()
        if fig is not None:
            with _rc():
                fit_to_canvas(fig)
            figs[stem] = fig
    return figs


def build_figures(results: Results, model_rows: Sequence[dict[str, Any]], outdir: str | Path,
                  formats: Sequence[str] = ("png", "pdf")) -> dict[str, list[Path]]:
    """Build and save every figure; returns {stem: [paths]}."""
    outdir = Path(outdir)
    saved = {}
    for stem, fig in make_figures(results, model_rows).items():
        saved[stem] = save_figure(fig, outdir, stem, formats)
    return saved
