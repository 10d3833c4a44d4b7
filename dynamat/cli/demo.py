"""``dynamat demo``: the main job on bundled data: single points, an i-PI MD run, the scorecard."""

from __future__ import annotations

from pathlib import Path

import click

from dynamat.cli.common import driver_options, progress_printer, reference_option, with_options
from dynamat.io.reference_h5 import reference_n_frames
from dynamat.reference import resolve_reference
from dynamat.runner import RunOptions, run_system
from dynamat.scoring.card import scorecard
from dynamat.layout import RunFolder
from dynamat.scoring.run import score_run, write_score
from dynamat.singlepoint import run_singlepoint


@click.command()
@click.option("--model", default="chgnet", show_default=True)
@click.option("--system", default="bulkCu_300K-demo_EMT", show_default=True)
@reference_option
@click.option("--steps", type=click.IntRange(1, 1_000_000), default=400, show_default=True, help="MD steps (the paper's 20 ps is 80000).")
@click.option("--singlepoint-frames", type=click.IntRange(min=1), default=40, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/demo"), show_default=True)
@with_options(driver_options)
def demo(model, system, reference, steps, singlepoint_frames, out, driver_cmd, driver_args):
    """The main job on bundled data: single points, an i-PI MD run, and the scorecard."""
    reference = resolve_reference(reference, system)
    every = max(1, reference_n_frames(reference, system) // max(singlepoint_frames, 1))
    sp = run_singlepoint(model, reference, system, every, singlepoint_frames, 8, driver_cmd, driver_args,
                         progress=lambda j, n: click.echo(f"  singlepoint {model}/{system}: {j}/{n} frames", err=True))
    opts = RunOptions(steps=steps, seed=12345, overwrite=True, driver_cmd=driver_cmd, driver_args=tuple(driver_args),
                      batch_size=1)  # the demo reproduces its numbers
    run_system(model, system, reference, out, opts, progress=progress_printer(f"{model}/{system}"),
               isolated_energies_eV=sp.get("isolated_atom_energies_model_eV"),
               announce=lambda m: click.echo(m, err=True))
    curves: dict = {}
    rf = RunFolder.of(out, model, system)
    res = score_run(reference, system, rf.path, model=model, curves=curves)
    res.update(sp)
    write_score(res, rf.score_json, curves)
    click.echo(f"wrote {rf.score_json}", err=True)
    click.echo(scorecard(res))
