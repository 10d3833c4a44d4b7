"""dynamat: finite-temperature benchmarking of foundation MLIPs (Dyna-Mat-v1.0).

Server wing: i-PI inputs, run supervision, readers, metrics and reports. The client wing
(force drivers) is the separate package ``dynamat_driver`` and never imports this one.
"""

__version__ = "0.1.0"
