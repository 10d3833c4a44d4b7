"""MD engines, chosen through one table. Each takes the same arguments and runs one attempt:

``engine(model, run_dir, resume_from, settings, opts, samples, progress, lock_fd, *, initial)``

(``model`` is what the driver's ``--model`` gets: ``RunOptions.served``.)

- ``ipi``: i-PI as socket server (:mod:`dynamat.engines.ipi`), any thermostat and bead count,
  resumable from RESTART; inputs from :mod:`dynamat.engines.ipi_input`.
- ``ase``: ASE's Nosé–Hoover chain as socket server (:mod:`dynamat.engines.ase_nhc`), the paper's
  exact MLIP protocol for inorganic systems; not resumable.

The relaxed-cell protocol's relaxation (:mod:`dynamat.engines.relax`) runs before either.
Adding an engine: a module here with a function of that signature, and one line in ``ENGINES``.
"""

from __future__ import annotations

from dynamat import processes
from dynamat.engines import ipi
from dynamat.engines.ase_nhc import run_ase_nhc
from dynamat.errors import DynamatError


def _ase(model, run_dir, resume_from, settings, opts, samples, progress, lock_fd=None, *, initial):
    if resume_from is not None:
        raise DynamatError("an --engine ase run cannot be resumed (ASE MD keeps no restart file); pass --overwrite")
    try:
        run_ase_nhc(model, initial, settings, run_dir, processes.driver_command(opts.driver_cmd) + list(opts.driver_args),
                    samples, progress, timeout_s=opts.stall_timeout_s, prefix=ipi.PREFIX,
                    max_temperature_K=opts.max_temperature_factor * settings.temperature_K)
    except DynamatError as exc:
        if "exploded" in str(exc) or "non-finite" in str(exc):
            raise ipi.Exploded(str(exc).removeprefix("MD exploded: ")) from None
        raise


def _ipi(model, run_dir, resume_from, settings, opts, samples, progress, lock_fd=None, *, initial=None):
    ipi.run_attempt(model, run_dir, resume_from, settings, opts, samples, progress, lock_fd)


ENGINES = {"ipi": _ipi, "ase": _ase}
