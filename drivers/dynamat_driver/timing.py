"""The driver's timing file: what it served, how fast, and how it ended (JSON, whole or not at all)."""

from __future__ import annotations

import sys
import time

from . import PROG, DriverError, __version__
from .files import write_json_atomic


class TimingWriter:
    """Collects what the timing file records and writes it atomically (JSON)."""

    def __init__(self, path: str | None, every: int):
        self.path = path
        self.every = max(1, int(every))
        self.last_written_at = 0
        self.last_written_t = -float("inf")
        self.data: dict = {"driver": PROG, "version": __version__, "status": "starting", "error": None}
        self.t_start = time.perf_counter()

    def update(self, evaluator=None, stats=None, model=None, **extra) -> None:
        d = self.data
        d.update(extra)
        if model is not None:
            d["model"] = model.describe()
            d["device"] = model.device
            d["dtype"] = model.dtype
            d["versions"] = model.versions()
            if "torch" in sys.modules:
                try:
                    d["torch_threads"] = int(sys.modules["torch"].get_num_threads())
                except Exception:
                    pass
        if evaluator is not None:
            d["stress"] = evaluator.stress_summary()
            d["system"] = {k: v for k, v in evaluator.describe().items() if k in ("n_atoms", "species", "species_source", "pbc", "batched")}
            d.update(evaluator.timing.summary())
        if stats is not None:
            d["batch_size"] = stats.batch_size
            d["n_requests"] = stats.n_requests
            d["n_structures_received"] = stats.n_structures
            d["seconds_waiting_for_server"] = stats.seconds_waiting
            d["driver_seconds_per_request"] = (stats.seconds_serving / stats.n_requests) if stats.n_requests else None
        d["wall_seconds"] = time.perf_counter() - self.t_start

    #: seconds between mid-run updates at least: an update summarises every evaluation so far
    #: (medians over a list that grows by one per MD step), which every 50 steps cost ~0.1 ms per
    #: step late in an 80,000-step run
    min_interval_s = 5.0

    def maybe_write(self, n_evaluations: int, **kw) -> None:
        if self.path and n_evaluations - self.last_written_at >= self.every:
            now = time.perf_counter()
            if self.every > 1 and now - self.last_written_t < self.min_interval_s:
                return
            self.last_written_at = n_evaluations
            self.last_written_t = now
            self.update(**kw)
            self.write()

    def write(self) -> None:
        if not self.path:
            return
        try:
            write_json_atomic(self.path, self.data)
        except OSError as exc:
            raise DriverError(f"cannot write the timing file {self.path!r}: {exc.strerror}") from None
