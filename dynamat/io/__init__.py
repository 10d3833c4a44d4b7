"""Readers and writers. Everything returns or takes :class:`dynamat.trajectory.Trajectory`."""

from dynamat.io.extxyz import read_extxyz
from dynamat.io.ipi_output import read_ipi_run
from dynamat.io.reference_h5 import (
    list_systems,
    read_reference,
    reference_attrs,
    write_reference,
)

__all__ = [
    "list_systems",
    "read_extxyz",
    "read_ipi_run",
    "read_reference",
    "reference_attrs",
    "write_reference",
]
