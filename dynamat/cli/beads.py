"""``dynamat beads-convergence``: <K_cv> against the number of path-integral beads."""

from __future__ import annotations

import math
from pathlib import Path

import click

from dynamat.io.results import write_json_atomic
from dynamat.known_models import check_model_known, check_model_options
from dynamat.layout import check_file_target
from dynamat.cli.common import seed_option
from dynamat.pimd import bead_convergence
from dynamat.reference import load_system, start_atoms
from dynamat.runner import MAX_STEPS

#: as `dynamat run --beads`
MAX_BEADS = 1024


def _parse_beads(text: str) -> list[int]:
    try:
        vals = [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise click.BadParameter(f"--beads wants comma-separated integers, got {text!r}") from None
    if not vals or min(vals) < 1 or max(vals) > MAX_BEADS:
        raise click.BadParameter(f"--beads wants integers from 1 to {MAX_BEADS}, got {text!r}")
    return vals


def _finite(ctx, param, value):
    """click's FloatRange lets NaN through (every comparison with it is false), and a NaN --discard or
    --z would fail, or judge nothing, only after every MD run."""
    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"must be a finite number, got {value}")
    return value


@click.command("beads-convergence")
@click.option("--model", required=True, help="Model name as dynamat-driver knows it.")
@click.option("--system", "system", required=True, help="System name (group in the reference file).")
@click.option("--reference", type=click.Path(path_type=Path), default=None,
              help="DynaMat v1.0 reference HDF5 (initial structure) [default: as `dynamat run`].")
@click.option("--beads", "beads_text", default="1,2,4,8", show_default=True, help="Bead counts P to run.")
@click.option("--steps", type=click.IntRange(1, MAX_STEPS), default=None,
              help="MD steps per P [default: the protocol's full length].")
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs"), show_default=True)
@seed_option(12345)
@click.option("--discard", "discard_fraction", type=click.FloatRange(0, 1, max_open=True), default=0.1,
              show_default=True, callback=_finite, help="Fraction of each run dropped as equilibration.")
@click.option("--z", type=click.FloatRange(0, min_open=True), default=2.0, show_default=True, callback=_finite,
              help="Agreement threshold in standard errors.")
@click.option("--overwrite", is_flag=True, help="Replace existing beads_<P> run folders.")
@click.option("--json", "json_out", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Also write the summary here.")
@click.option("--driver-cmd", default=None, help="Driver command line from another environment.")
@click.option("--driver-arg", "driver_args", multiple=True, help="Extra driver argument (repeatable).")
def beads_convergence_command(model, system, reference, beads_text, steps, out, seed, discard_fraction, z,
                              overwrite, json_out, driver_cmd, driver_args):
    """Run MODEL on SYSTEM with P = 1, 2, 4, 8 … beads (PILE-L) and report <K_cv> against P."""
    # every argument is checked (click's types, --beads, the system) before the first run's progress line
    beads = _parse_beads(beads_text)
    if json_out is not None:
        check_file_target(json_out, "--json", ours=lambda raw: {"rows", "converged"} <= raw.keys())
    check_model_known(model, (), driver_cmd)  # a typo fails here, not in the first run folder
    check_model_options(model, driver_args)
    # path integrals run a fixed cell here, an NPT reference's (its mean cell) too
    reference, sys_entry, _ = load_system(reference, system, ensemble="nvt")
    conv = bead_convergence(
        model, sys_entry, start_atoms(reference, sys_entry), out, beads=beads, steps=steps, seed=seed,
        discard_fraction=discard_fraction, z=z, driver_args=driver_args, driver_cmd=driver_cmd,
        overwrite=overwrite, progress=lambda p: click.echo(f"  {model}/{system}: P = {p}", err=True),
    )
    click.echo(conv.table())
    if json_out:
        write_json_atomic(json_out, conv.as_dict())
