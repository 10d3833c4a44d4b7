"""Export model-level metrics in the shape of a Matbench-discovery model YAML ``md`` block.

Shape (looked up in github.com/janosh/matbench-discovery, ``tests/model-schema.yml``
definition ``MdMetrics`` at commit 01bcf5f4259fa8da128bc06053a31e5798c060e7, and
``matbench_discovery/metrics/md.py`` ``METRIC_UNITS`` / ``write_metrics_to_yaml``)::

    metrics:
      md:
        energy_rmse: 12.3   # meV/atom
        force_rmse: 85.1    # meV/Å
        rdf_error: 4.2      # %
        vdos_error: 18.7    # %
        pressure_mae: 0.81  # GPa
        pressure_error: 35.0  # % (pressure-histogram overlap error, paper Eq. 9)
        n_systems: 17       # count

The schema forbids other keys (``additionalProperties: false``; allowed besides the above:
``pred_file``, ``pred_file_url``, ``hardware``, ``run_time_sec``, ``max_rss_gb``,
``max_gpu_mem_gb``, ``adf_error``, ``pressure_wasserstein``). In particular there is no
combined score: Matbench-discovery computes it on the site from the components, so
E_RPV / L_RPV are not exported. Following ``calc_md_metrics`` there:

* means over systems skip missing values (systems without stress data);
* energy/force RMSE are converted eV -> meV and are published only when every evaluated
  system has them (a subset mean would misrepresent the model);
* values are rounded to 4 decimals; ``n_systems`` counts the systems evaluated.

dynamat additions, stated as YAML comments only (so the block stays schema-valid):
failed/exploded runs are excluded from the means and listed; ``n_systems`` counts
completed runs only. A model with no completed run is exported as ``md: not available``.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Sequence

from dynamat.metrics.matbench import MATBENCH_TABLE

__all__ = ["MD_KEYS", "export_names", "is_export", "md_block", "md_yaml", "write_matbench_export"]

#: the first characters of every ``<model>.yml`` this export writes (how a rerun knows its own files)
EXPORT_HEADER = "# dynamat export:"
COMBINED_JSON = "md_metrics.json"

#: matbench key -> (per-model column, scale, unit comment). The columns are means over systems of the
#: values computed with Matbench-discovery's own definitions (score.json ``matbench`` and
#: ``matbench_singlepoint``; :mod:`dynamat.metrics.matbench`), never dynamat's Eq. 1-12 numbers, which
#: are other quantities under similar names (Eq. 2 is sqrt(3) x its per-component force RMSE, Eq. 1 is
#: not mean-subtracted, Eq. 10 is not its Wasserstein VDOS error, Eq. 9 uses other bins).
MD_KEYS: dict[str, tuple[str, float, str]] = {
    key: (f"mb_{key}", scale, unit) for key, (_, scale, unit) in MATBENCH_TABLE.items()  # the one table
}
_ALL_SYSTEMS_REQUIRED = ("energy_rmse", "force_rmse")


def md_block(model_row: dict[str, Any]) -> dict[str, Any] | str:
    """The ``metrics.md`` mapping for one row of the per-model table (or the string
    ``"not available"`` when the model has no completed run)."""
    n_done = int(model_row.get("n_completed") or 0)
    if n_done == 0:
        return "not available"
    block: dict[str, Any] = {}
    for mb_key, (col, scale, _unit) in MD_KEYS.items():
        value = model_row.get(col)
        if value is None:
            continue
        if mb_key in _ALL_SYSTEMS_REQUIRED and int(model_row.get(f"{col}_n") or 0) < n_done:
            continue
        block[mb_key] = round(float(value) * scale, 4)
    block["n_systems"] = n_done
    return block


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", name).strip("-") or "model"


def export_names(models: Sequence[str]) -> dict[str, str]:
    """``<model>.yml`` file name of each model: its name with what a file name cannot hold made ``-``; where
    two models would share a name (``my:model`` and ``my-model``, or names alike but for case, which a
    case-blind file system holds as one), each of them gets the first 8 hex digits of its name's SHA-256
    as well, so no export overwrites another and a model's file name does not depend on the others'
    order."""
    slugs = {m: _slug(m) for m in models}
    count: dict[str, int] = {}
    for s in slugs.values():
        count[s.lower()] = count.get(s.lower(), 0) + 1
    return {m: (f"{s}-{hashlib.sha256(m.encode()).hexdigest()[:8]}" if count[s.lower()] > 1 else s) + ".yml"
            for m, s in slugs.items()}


def is_export(path: str | Path) -> bool:
    """Whether ``path`` is a ``<model>.yml`` this export wrote (it begins with :data:`EXPORT_HEADER`)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read(len(EXPORT_HEADER)) == EXPORT_HEADER
    except OSError:
        return False


def md_yaml(model_row: dict[str, Any]) -> str:
    """YAML text ``model_name`` + ``metrics: md:`` with unit comments."""
    block = md_block(model_row)
    lines = [
        EXPORT_HEADER + " Matbench-discovery-style metrics.md block (Dyna-Mat-v1.0 protocol).",
        "# Merge the metrics.md mapping into the model's YAML in matbench-discovery/models/.",
    ]
    if model_row.get("n_failed"):
        lines.append(f"# {model_row['n_failed']} run(s) failed or exploded and are excluded "
                     f"from the means: {model_row.get('failed_runs', '')}")
    dropped = [k for k in _ALL_SYSTEMS_REQUIRED
               if isinstance(block, dict) and k not in block and model_row.get(MD_KEYS[k][0]) is not None]
    if dropped:
        lines.append("# omitted (not available for every evaluated system): " + ", ".join(dropped))
    lines.append(f"model_name: {json.dumps(model_row['model'], ensure_ascii=False)}")
    lines.append("metrics:")
    if isinstance(block, str):
        lines.append(f"  md: {block}")
    else:
        lines.append("  md:")
        for key, value in block.items():
            unit = MD_KEYS[key][2] if key in MD_KEYS else "count"
            lines.append(f"    {key}: {value} # {unit}")
    return "\n".join(lines) + "\n"


def write_matbench_export(model_rows: Sequence[dict[str, Any]], outdir: str | Path) -> list[Path]:
    """One ``<model>.yml`` per model (:func:`export_names`) plus ``md_metrics.json`` (all blocks) in ``outdir``."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    paths = []
    combined = {}
    names = export_names([row["model"] for row in model_rows])
    for row in model_rows:
        p = outdir / names[row["model"]]
        p.write_text(md_yaml(row), encoding="utf-8")
        paths.append(p)
        combined[row["model"]] = {"metrics": {"md": md_block(row)}}
    pj = outdir / COMBINED_JSON
    pj.write_text(json.dumps(combined, indent=1, ensure_ascii=False), encoding="utf-8")
    paths.append(pj)
    return paths
