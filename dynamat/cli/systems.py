"""``dynamat systems``: the system catalogue with protocols."""

from __future__ import annotations

import click

from dynamat.catalogue import get_system, system_names


@click.command()
def systems() -> None:
    """List the system catalogue with protocols."""
    for name in system_names():
        s = get_system(name)
        p = s.protocol
        click.echo(f"{name:<30} {s.system_class:<18} {s.temperature_K:>6.0f} K  {s.dims}D  "
                   f"{p.ipi_thermostat} dt={p.timestep_fs} fs tau={p.tau_fs} fs every {p.stride}")
