"""``dynamat systems``: the catalogue, or every system of a reference file, with where each value came from."""

from __future__ import annotations

import json
from pathlib import Path

import click

from dynamat.cli.common import label_gap
from dynamat.errors import DynamatError


def _entry(reference: Path | None, name: str) -> dict:
    from dynamat.catalogue import get_system
    from dynamat.io.reference_h5 import reference_labels, reference_replicas
    from dynamat.reference import load_system

    try:
        if reference is None:
            return get_system(name).as_dict()
        # as a run sees it: with the mean cell an NPT trajectory's runs start in, and its stored ensemble
        d = load_system(reference, name)[1].as_dict()
        d["labels"] = reference_labels(reference, name)
        n = len(reference_replicas(reference, name))
        if n > 1:  # further trajectories <name>_r<k>: the noise floor is replica against replica
            d["reference_replicas"] = n
        return d
    except DynamatError as exc:
        return {"name": name, "error": str(exc)}


def _line(d: dict) -> str:
    if "error" in d:
        return f"{d['name']:<30} error: {d['error']}"
    p, src = d["protocol"], d["sources"]
    frames = f", frames {d['reference_dt_fs']:g} fs apart" if d.get("reference_dt_fs") else ""
    labels = d.get("labels")
    lab = ""
    if labels is not None:
        have = [k for k in ("energy", "forces", "stress") if labels[k]]
        lab = "  labels: " + (" ".join(have) if have else "none")
        lab += label_gap(labels)
    if d.get("reference_replicas"):
        lab += f"  {d['reference_replicas']} trajectories"
    if d.get("start_cell"):
        sc = d["start_cell"]
        lab += (f"  variable cell (volumes spread {100 * sc['frame_volume_rel_sd']:.2g} %): runs start in its mean cell")
        if sc.get("reference_pressure_se_GPa") is not None and p.get("ensemble") != "npt":
            lab += (f"; its frames' mean pressure {sc['reference_pressure_GPa']:.3g} ± "
                    f"{sc['reference_pressure_se_GPa']:.2g} GPa (--ensemble npt --pressure-GPa that runs its ensemble)")
    if p.get("ensemble") == "npt":
        lab += (f"  NPT at {p['pressure_GPa']:g} GPa ({p['barostat']} barostat, tau {p['tau_barostat_fs']:g} fs): "
                f"{src['ensemble']}")
    knob_src = {k: src[k] for k in ("timestep_fs", "tau_fs", "thermostat", "stride")}
    knobs = (f"protocol {p['name']}: {src['protocol']}" if len(set(knob_src.values())) == 1
             else f"protocol {p['name']}: {src['protocol']}; " + "; ".join(f"{k}: {v}" for k, v in knob_src.items()))
    return (f"{d['name']:<30} {d['class']:<18} {d['temperature_K']:>6g} K  {d['dims']}D  "
            f"{p['thermostat']} dt={p['timestep_fs']:g} fs tau={p['tau_fs']:g} fs every {p['stride']}{frames}{lab}\n"
            f"    class: {src['class']}; dims: {src['dims']}; temperature: {src['temperature_K']}; {knobs}")


@click.command()
@click.option("--reference", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None,
              help="A reference HDF5 (e.g. the public DynaMat v1.0 file): list every system in it [default: the catalogue].")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of objects instead of text.")
def systems(reference: Path | None, as_json: bool) -> None:
    """List systems with class, dims, temperature and MD protocol, and where each value came from
    (catalogue, reference file, inferred from name/composition/geometry, or default)."""
    from dynamat.catalogue import system_names
    from dynamat.io.reference_h5 import list_systems

    names = list_systems(reference) if reference is not None else system_names()
    entries = [_entry(reference, n) for n in names]
    if as_json:
        click.echo(json.dumps(entries, indent=2))
        return
    for d in entries:
        click.echo(_line(d))
