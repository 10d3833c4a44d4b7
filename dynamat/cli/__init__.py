"""The ``dynamat`` command line: one thin module per command group, the only place that imports click.

Each module turns options into a call of the library and prints the result; the work lives in
:mod:`dynamat.reference`, :mod:`dynamat.runner`, :mod:`dynamat.singlepoint`, :mod:`dynamat.scoring`,
:mod:`dynamat.campaign`, :mod:`dynamat.pimd` and :mod:`dynamat.report`.
"""

from __future__ import annotations

import sys

import click

from dynamat.cli.errors import OneLineGroup, refuse_empty_values


@click.group(cls=OneLineGroup)
@click.version_option(package_name="dynamat")
def cli() -> None:
    """Finite-temperature MD benchmark of foundation MLIPs (Dyna-Mat-v1.0), with i-PI as MD engine."""


def _register() -> None:
    from dynamat.cli import beads, campaign, data, demo, inputs, models, reference, report, run, score, singlepoint, systems

    for cmd in (inputs.inputs, run.run, singlepoint.singlepoint, score.score, systems.systems, demo.demo,
                report.report_command, data.data_group, campaign.campaign_command, campaign.campaign_task_command,
                beads.beads_convergence_command, models.models_command,
                reference.reference_group):
        refuse_empty_values(cmd)
        cli.add_command(cmd)


_register()


def main() -> None:
    cli(prog_name="dynamat")


if __name__ == "__main__":
    sys.exit(main())
