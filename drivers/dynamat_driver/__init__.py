"""dynamat-driver: the client wing of dynamat, an i-PI socket client serving MLIP forces.

It imports only numpy, ase, click and the chosen model's own package (lazily), never i-PI nor
the server wing (``dynamat``), so it can run inside a model's own virtual environment.

Public API (stable for the server wing):

* :func:`dynamat_driver.models.list_models`, :func:`~dynamat_driver.models.get_model_info`,
  :func:`~dynamat_driver.models.model_info_dict`, :func:`~dynamat_driver.models.load_model`
* :class:`dynamat_driver.evaluator.Evaluator`, :func:`~dynamat_driver.evaluator.parse_species`
* :func:`dynamat_driver.protocol.run_client`, :func:`~dynamat_driver.protocol.parse_init_string`,
  and the wire format (message headers) that :mod:`dynamat.socket_server` speaks too
* :mod:`dynamat_driver.units` (i-PI's unit factors) and :mod:`dynamat_driver.contract` (the files
  the supervisor and the driver exchange); with ``protocol`` these are numpy/stdlib-only modules the
  server wing may import
"""

__version__ = "0.1.0"
PROG = "dynamat-driver"


class DriverError(Exception):
    """An error the driver reports as one line (``dynamat-driver: error: ...``), no traceback."""


__all__ = ["DriverError", "PROG", "__version__"]
