"""``dynamat models``: the models a driver environment can serve."""

from __future__ import annotations

import json

import click

from dynamat.models_table import format_rows, model_rows, rows_of_tiers


@click.command("models")
@click.option("--driver-cmd", default=None,
              help="Driver command of the environment to ask, e.g. .venvs/mace/bin/dynamat-driver (default: this environment's).")
@click.option("--tier", "tiers", multiple=True, help="Only these paper tiers (1-4, test, none); repeatable.")
@click.option("--installed", "only_installed", is_flag=True, help="Only models whose packages are installed there.")
@click.option("--paths", is_flag=True, help="Show where the weights are (or would be cached).")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
def models_command(driver_cmd, tiers, only_installed, paths, as_json):
    """List the models a driver environment can serve: paper tier, family, size, package,
    whether it is installed there and whether its weights are reachable without a download."""
    rows = model_rows(driver_cmd)
    if tiers:
        rows = rows_of_tiers(rows, tiers)
    if only_installed:
        rows = [r for r in rows if r["installed"]]
    if as_json:
        click.echo(json.dumps(rows, indent=1))
    else:
        click.echo(format_rows(rows, paths=paths))
