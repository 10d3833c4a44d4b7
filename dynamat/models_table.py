"""``dynamat models``: what a driver environment can serve, asked from that environment.

The server wing never imports a model package. It runs the driver command of an environment
(default: this environment's ``dynamat-driver``; or ``--driver-cmd`` of a model's own
environment, e.g. ``.venvs/mace/bin/dynamat-driver``) with ``--list --json`` as a subprocess, and
turns the answer into rows: name, paper tier, family, parameter count, package (pip extra),
installed (in that environment), weights (reachable without a download: in the wheel, in a
cache at PATH, a download needed, or a local path given) and source (dynamat-driver, or the
plugin package and version that registers the family; a plugin that cannot be used is a row
that says why).

Register the command with ``cli.add_command(models_command, "models")``.
"""

from __future__ import annotations

import json
import shlex
import subprocess
from typing import Any, Sequence

from dynamat import processes
from dynamat.errors import DynamatError

#: weights statuses the driver reports (adapter-level weights_status(), nothing loaded)
WEIGHTS_TEXT = {
    "in-wheel": "in wheel",
    "cached": "cached",
    "download": "needs download",
    "local": "local path",
    "missing": "local path missing",
    "none": "-",
    "unknown": "unknown",
}


def _as_argv(driver_cmd: str | Sequence[str] | None) -> list[str]:
    """The driver command, resolved as every other command resolves it (:func:`dynamat.processes.driver_command`)."""
    if driver_cmd is None or isinstance(driver_cmd, str):
        return processes.driver_command(driver_cmd)
    return list(driver_cmd)


def query_driver(driver_cmd: str | Sequence[str] | None = None, timeout: float = 120.0) -> list[dict[str, Any]]:
    """Runs ``DRIVER --list --json`` and returns its entries (one dict per registered model)."""
    argv = _as_argv(driver_cmd) + ["--list", "--json"]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise DynamatError(f"driver command not found: {argv[0]}") from None
    except subprocess.TimeoutExpired:
        raise DynamatError(f"`{shlex.join(argv)}` did not answer within {timeout:.0f} s") from None
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise DynamatError(f"`{shlex.join(argv)}` failed ({proc.returncode}): {last}")
    try:
        data = json.loads(proc.stdout)
    except ValueError:
        raise DynamatError(f"`{shlex.join(argv)}` printed no JSON (an old dynamat-driver?)") from None
    if not isinstance(data, list):
        raise DynamatError(f"`{shlex.join(argv)}` printed unexpected JSON")
    return data


def model_rows(driver_cmd: str | Sequence[str] | None = None, timeout: float = 120.0) -> list[dict[str, Any]]:
    """Rows for ``dynamat models``: name, aliases, tier, family, n_params, package (pip extra),
    env (environment group), installed, weights (status), weights_path, weights_source, options (the
    ``--model-option`` names a registered model takes; a plugin's or an older driver's: null, unknown)."""
    rows = []
    for d in query_driver(driver_cmd, timeout):
        w = d.get("weights") or {}
        rows.append(
            {
                "name": d.get("name"),
                "aliases": list(d.get("aliases") or []),
                "human_name": d.get("human_name"),
                "tier": d.get("tier"),
                "family": d.get("family"),
                "n_params": d.get("n_params"),
                "package": d.get("extra"),
                "env": d.get("env"),
                "installed": bool(d.get("installed")),
                "missing": list(d.get("missing") or []),
                "weights": w.get("status", "unknown"),
                "weights_path": w.get("path"),
                "weights_source": w.get("source") or d.get("weights_source"),
                "make_env": d.get("make_env") or "",
                "options": None if d.get("options") is None or (d.get("source") or {}).get("plugin")
                else list(d["options"]),
                "source": _source(d.get("source")),
                "plugin": bool((d.get("source") or {}).get("plugin")),
            }
        )
    return rows


def tier_key(tier) -> str:
    """A row's tier as ``--tier`` names it: ``1``-``4``, ``test``, or ``none`` (not in the paper)."""
    return "none" if tier is None else str(tier).lower()


def rows_of_tiers(rows: list[dict[str, Any]], tiers) -> list[dict[str, Any]]:
    """The rows of ``tiers`` (``--tier``, any case); a tier no model has is refused in one line naming those
    that exist, not answered with an empty table (a typo would read as 'no such models')."""
    want = {str(t).strip().lower() for t in tiers}
    have = {tier_key(r["tier"]) for r in rows}
    unknown = sorted(want - have)
    if unknown:
        order = sorted(have, key=lambda t: (not t.isdigit(), int(t) if t.isdigit() else 0, t))
        raise DynamatError(f"no model has tier {' or '.join(unknown)}; the tiers here are {', '.join(order)}")
    return [r for r in rows if tier_key(r["tier"]) in want]


def _source(src) -> str:
    """Where a model comes from: ``dynamat-driver 0.1.0``, or ``plugin PKG VERSION`` (a package that
    registers a family under the entry-point group ``dynamat.models``)."""
    if not isinstance(src, dict):
        return "dynamat-driver"
    text = f"{src.get('package') or '?'} {src.get('version') or ''}".strip()
    return f"plugin {text}" if src.get("plugin") else text


def _tier(t) -> str:
    return "-" if t is None else str(t)


def format_rows(rows: list[dict[str, Any]], paths: bool = False) -> str:
    head = ["name", "tier", "family", "params", "package", "installed", "weights", "source"]
    table = [head]
    for r in rows:
        w = WEIGHTS_TEXT.get(r["weights"], r["weights"])
        if paths and r.get("weights_path") and r["weights"] in ("cached", "in-wheel", "local", "download"):
            w = f"{w}: {r['weights_path']}"
        table.append([
            r["name"], _tier(r["tier"]), r["family"] or "-",
            f"{r['n_params']:,}" if r.get("n_params") else "-",
            r["package"] or "-", "yes" if r["installed"] else "no", w, r.get("source") or "-",
        ])
    widths = [max(len(str(row[i])) for row in table) for i in range(len(head))]
    lines = ["  ".join(str(c).ljust(wd) for c, wd in zip(row, widths)).rstrip() for row in table]
    # why a plugin cannot be used is the plugin's own error, which no column holds
    lines += [f"{r['name']}: {r['missing'][0]}" for r in rows if r.get("plugin") and not r["installed"] and r["missing"]]
    return "\n".join(lines)


__all__ = ["format_rows", "model_rows", "query_driver", "rows_of_tiers", "tier_key"]
