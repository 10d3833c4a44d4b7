"""Options and output helpers shared by the command modules."""

from __future__ import annotations

from pathlib import Path

import click

from dynamat.io.results import write_json_atomic
from dynamat.scoring.card import scorecard

reference_option = click.option(
    "--reference", "reference", type=click.Path(path_type=Path), default=None,
    help="DynaMat v1.0 reference HDF5 [default: the bundled demo file for its systems, else the file from `dynamat data download`].",
)
system_option = click.option("--system", "system", required=True, help="System name (group in the reference file).")

driver_options = [
    click.option("--driver-cmd", default=None, help="Driver command line from another environment, e.g. ~/envs/mace/bin/dynamat-driver."),
    click.option("--driver-arg", "driver_args", multiple=True, help="Extra driver argument (repeatable), e.g. --driver-arg=--device=cuda."),
]


def with_options(options):
    def deco(f):
        for opt in reversed(options):
            f = opt(f)
        return f
    return deco


def progress_printer(label: str):
    """A progress callback (step, total) that prints every 5 % to stderr."""
    state = {"last": -1.0}

    def show(step: int, total: int) -> None:
        frac = step / max(total, 1)
        if frac - state["last"] >= 0.05 or step >= total:
            state["last"] = frac
            click.echo(f"  {label}: step {step}/{total} ({100 * frac:.0f}%)", err=True)

    return show


def emit(res: dict, json_out: Path | None) -> None:
    """Writes ``res`` to ``json_out`` (atomically) when given and prints its scorecard."""
    if json_out:
        write_json_atomic(json_out, res)
        click.echo(f"wrote {json_out}", err=True)
    click.echo(scorecard(res))
