"""``dynamat score``: observable errors (Eq. 3-12) of a run folder or a trajectory."""

from __future__ import annotations

from pathlib import Path

import click

from dynamat.cli.common import reference_option, show_score
from dynamat.errors import DynamatError
from dynamat.layout import RunFolder, check_file_target
from dynamat.report.tables import not_a_score
from dynamat.scoring.run import score_run, write_score


@click.command()
@click.option("--system", default=None, help="System name (group in the reference file) [default: with --run, the run's "
              "own, from its run.json, scored against the reference file it was made from].")
@reference_option
@click.option("--run", "run_dir", type=click.Path(path_type=Path, exists=True, file_okay=False), default=None,
              help="A run folder left by `dynamat run`; the score goes to DIR/score.json (+ curves.npz).")
@click.option("--trajectory", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None,
              help="An extxyz MD trajectory made elsewhere.")
@click.option("--dt-fs", type=float, default=None, help="Time between the trajectory's frames, fs.")
@click.option("--model", default=None, help="Model name to record [default: from run.json].")
@click.option("--json", "json_out", type=click.Path(path_type=Path), default=None,
              help="Where to write the score, its curves going to X.curves.npz beside X.json "
                   "[default: RUN/score.json and RUN/curves.npz; with --trajectory: not written].")
def score(system, reference, run_dir, trajectory, dt_fs, model, json_out):
    """Observable errors (paper Eq. 3-12) of an MD trajectory against SYSTEM's reference."""
    if run_dir and trajectory:
        raise DynamatError("give --run DIR or --trajectory FILE, not both")
    if json_out is not None:  # an earlier score there is replaced, a file of the user's never
        check_file_target(json_out, "--json", ours=lambda raw: not_a_score(raw, json_out) is None)
    curves: dict = {}
    res = score_run(reference, system, run_dir, trajectory, dt_fs, model, curves=curves)
    target = json_out or (RunFolder(run_dir).score_json if run_dir else None)
    if target:
        write_score(res, target, curves)
        click.echo(f"wrote {target}", err=True)
    show_score(res)
