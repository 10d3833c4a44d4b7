"""Packed runs: one driver process, one model, many i-PI simulations (``dynamat-driver --pack-dir DIR``).

A small cell leaves a GPU mostly idle, and every solo run pays its own model load. In pack mode the
driver loads the model once and serves every simulation that asks for it:

* **Sessions come as files** (names and fields in :mod:`dynamat_driver.contract`, shared with the
  supervisor). A run that wants the pack writes ``DIR/<name>.request.json`` (``socket`` or ``inet``,
  ``timing_file``, ``log_file``, optional ``stress_stride``/``first_step``/``beads``, ``record``, ``template``,
  ``server_timeout``). The driver connects to that i-PI, renames the file ``<name>.active.json``
  and, when the session ends, writes ``<name>.done.json`` (``status`` exit | closed | error, and
  ``error``) and the session's own timing file. A request off the schema is answered with an error
  record and removed; a session whose server is silent for ``server_timeout`` seconds is ended. Sessions come and go independently: a run that is
  restarted from its RESTART just writes a new request.
* **Structures are gathered and evaluated in one model call.** When one simulation's positions
  arrive, the driver waits (at most ``--pack-wait-ms``) until every other connected simulation has
  sent its own, then evaluates all of them in one ``calculate_batch`` — structures of different
  sizes and species in one graph batch — and answers each i-PI. Requests that need the model's
  stress and requests that do not are two calls.
* **Only where it is exact.** Cross-simulation calls need a model that batches and keeps no state
  between calls (``can_batch`` and no ``prepare`` of its own: CHGNet, SevenNet, MACE, orb,
  MatterSim, fairchem, PET). Other models (ASE's EMT keeps a neighbour list, the harmonic model a
  reference structure) get one model instance per session in the same process: still one process
  and one socket loop, but no shared call.
* **Ends** when ``DIR/stop`` exists and no session is left, after ``--pack-idle-exit`` seconds
  without any session, or on SIGTERM. ``DIR/pack.json`` says what the pack did (sessions, model
  calls, structures per call).
"""

from __future__ import annotations

import os
import selectors
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import DriverError
from .contract import (ACTIVE, DONE, REQUEST, STATUS_FILE, STOP, ContractError, check_done, check_pack_status,
                       check_request, read_json)
from .files import write_json_atomic
from .protocol import DEFAULT_SERVER_TIMEOUT_S, ClientSession, SessionStats, connect, inet_address, unix_address


def shares_calls(model) -> bool:
    """Whether structures of different simulations may share one call of this model: it batches,
    and its result depends on the structure alone (no reference structure kept by ``prepare``)."""
    return bool(getattr(model, "can_batch", False)) and not getattr(model, "keeps_reference", True)


@dataclass
class PackSession:
    name: str
    request: dict
    session: ClientSession | None = None
    evaluator: object | None = None  # an Evaluator, made on INIT
    model: object | None = None  # the shared model, or this session's own
    timing: object | None = None  # a TimingWriter for the session's own timing file
    stats: SessionStats = field(default_factory=SessionStats)
    error: str | None = None
    last_heard: float = 0.0  # time.monotonic() of the server's last message

    def log(self, msg: str) -> None:
        path = self.request.get("log_file")
        if not path:
            return
        try:
            with open(path, "a") as fh:
                fh.write(f"dynamat-driver: {msg}\n")
        except OSError:
            pass


class Pack:
    """The pack's state: sessions by name, the shared model, counters for ``pack.json``."""

    def __init__(self, pack_dir: Path, load, *, wait_s: float, batched: bool, verbose: bool, info):
        self.dir = pack_dir
        self.load = load  # () -> a loaded model
        self.model = load()
        self.shared = batched and shares_calls(self.model)
        self.wait_s = wait_s
        self.batched = batched
        self.verbose = verbose
        self.info = info  # one-line logger (stderr)
        self.sel = selectors.DefaultSelector()
        self.sessions: dict[str, PackSession] = {}
        self.n_sessions_served = 0
        self.n_model_calls = 0
        self.n_structures = 0
        self.calls_by_size: dict[int, int] = {}
        self.t_start = time.perf_counter()
        self.evaluation_seconds = 0.0  # model calls (and, per session, the unit conversion)
        self.ppid = os.getppid()  # the supervising process: the pack ends with it

    # -- sessions -------------------------------------------------------------------------
    def scan(self) -> None:
        try:
            names = sorted(p.name for p in os.scandir(self.dir) if p.name.endswith(REQUEST))
        except OSError:
            return
        for fname in names:
            name = fname[: -len(REQUEST)]
            path = self.dir / fname
            try:
                request = read_json(path, check_request)
                os.replace(path, self.dir / f"{name}{ACTIVE}")
            except (OSError, ContractError) as exc:
                self._write_done(name, "error", f"unreadable request: {exc}")
                try:
                    path.unlink()  # answered: never read again
                except OSError:
                    pass
                continue
            self.open(name, request)

    def open(self, name: str, request: dict) -> None:
        from .stress import StressSchedule
        from .timing import TimingWriter

        ps = PackSession(name, request)
        self.sessions[name] = ps
        try:
            stride = request.get("stress_stride")
            schedule_args = None
            if stride:
                schedule_args = (int(stride), int(request.get("first_step") or 0), int(request.get("beads") or 1))
                StressSchedule(*schedule_args)  # bad values: this session fails now, in one line
            ps.timing = TimingWriter(request.get("timing_file"), int(request.get("timing_every") or 50))
            ps.model = self.model if self.shared or not self.sessions_using_shared_model() else self.load()
            ps.timing.update(model=ps.model, status="connecting", pack=str(self.dir))
            address = inet_address(request["inet"]) if request.get("inet") else unix_address(request["socket"])
            sock = connect(address, float(request.get("connect_timeout") or 60.0))
        except (DriverError, KeyError, TypeError, ValueError) as exc:
            self.fail(ps, f"cannot start the session: {exc}")
            return

        def on_init(params, rid, batch_size, ps=ps, schedule_args=schedule_args):
            from .evaluator import Evaluator, read_template, resolve_system

            template = read_template(request["template"], "template") if request.get("template") else None
            system = resolve_system(params, template=template)
            schedule = StressSchedule(*schedule_args) if schedule_args else None
            ps.evaluator = Evaluator(ps.model, system, batched=self.batched, stress_schedule=schedule,
                                     record=request.get("record"))
            ps.timing.update(evaluator=ps.evaluator, stats=ps.stats, status="running", init_parameters=params)
            if self.verbose:
                self.info(f"pack: session {name}: {len(system.numbers)} atoms ({system.formula})")
            return len(system.numbers), system.source

        timeout = request.get("server_timeout", DEFAULT_SERVER_TIMEOUT_S)
        ps.session = ClientSession(sock, on_init, stats=ps.stats, timeout_s=timeout)
        ps.last_heard = time.monotonic()
        self.sel.register(sock, selectors.EVENT_READ, ps)
        self.n_sessions_served += 1
        how = (f"one model shared by {self.n_sessions_served} session(s) so far, structures batched across them"
               if self.shared else "this session's own model instance, in the pack's process")
        ps.log(f"serving from the pack in {self.dir}: {how}")

    def _write_done(self, name: str, status: str, error: str | None) -> None:
        write_json_atomic(self.dir / f"{name}{DONE}", check_done({"status": status, "error": error}))

    def write_status(self, status: str, **extra) -> None:
        write_status(self.dir, status, **extra, **self.summary())

    def sessions_using_shared_model(self) -> bool:
        return any(s.model is self.model for s in self.sessions.values())

    def fail(self, ps: PackSession, msg: str) -> None:
        ps.error = msg.replace("\n", " ")
        ps.log(f"error: {ps.error}")
        self.close(ps, graceful=True)

    def close(self, ps: PackSession, graceful: bool = False) -> None:
        if ps.session is not None:
            try:
                self.sel.unregister(ps.session.sock)
            except (KeyError, ValueError):
                pass
            ps.session.close(graceful=graceful)
        if ps.evaluator is not None:
            ps.evaluator.close()
        status = "error" if ps.error else (ps.stats.reason or "closed")
        if ps.timing is not None:
            ps.timing.update(evaluator=ps.evaluator, stats=ps.stats, status="error" if ps.error else "finished",
                             error=ps.error, end_reason=ps.stats.reason, pack=self.summary())
            try:
                ps.timing.write()
            except DriverError as exc:
                ps.log(f"error: {exc}")
        self._write_done(ps.name, status, ps.error)
        try:
            (self.dir / f"{ps.name}{ACTIVE}").unlink()
        except OSError:
            pass
        self.sessions.pop(ps.name, None)

    # -- evaluation -----------------------------------------------------------------------
    def evaluate(self, ready: list[PackSession]) -> None:
        if not self.shared:  # one model per session: its own calls, one after the other
            for ps in ready:
                n = len(ps.session.pending[0])
                t0 = time.perf_counter()
                if self._guarded(ps, lambda ps=ps: ps.session.set_results(ps.evaluator(*ps.session.pending))):
                    self._count(n, time.perf_counter() - t0)
                    self._answered(ps)
            return
        begun = []
        for ps in ready:
            try:
                begun.append((ps, ps.evaluator.begin(*ps.session.pending)))
            except DriverError as exc:
                self.fail(ps, str(exc))
        for want in (True, False):
            group = [(ps, req) for ps, req in begun if req.stress == want]
            if group:
                self._shared_call(group, want)

    def _shared_call(self, group, stress: bool) -> None:
        model = self.model
        atoms = [a for _, req in group for a in req.atoms]
        kw = {} if stress or not getattr(model, "skips_stress", False) else {"stress": False}
        t0 = time.perf_counter()
        try:
            results = model.calculate_batch(atoms, **kw)
        except Exception as exc:  # a model failure ends these sessions, not the pack
            for ps, _ in group:
                self.fail(ps, f"model {model.name!r} failed: {type(exc).__name__}: {exc}")
            return
        dt = time.perf_counter() - t0
        self._count(len(atoms), dt)
        start = 0
        for ps, req in group:
            n = len(req.atoms)
            mine = results[start : start + n]
            start += n
            ps.evaluator.timing.add(n, dt * n / len(atoms), len(atoms) > 1, stress=stress or not kw)
            if self._guarded(ps, lambda ps=ps, req=req, mine=mine: ps.session.set_results(ps.evaluator.finish(req, mine))):
                self._answered(ps)

    def _count(self, n_structures: int, seconds: float) -> None:
        self.n_model_calls += 1
        self.n_structures += n_structures
        self.calls_by_size[n_structures] = self.calls_by_size.get(n_structures, 0) + 1
        self.evaluation_seconds += seconds

    def _guarded(self, ps: PackSession, action) -> bool:
        """Runs ``action`` for one session; a failure ends that session (said in its log), not the pack."""
        try:
            action()
            return True
        except DriverError as exc:
            self.fail(ps, str(exc))
        except Exception as exc:
            self.fail(ps, f"unexpected {type(exc).__name__}: {exc}")
        return False

    def _answered(self, ps: PackSession) -> None:
        ps.last_heard = time.monotonic()  # the server's silence counts from our answer
        ps.timing.maybe_write(len(ps.evaluator.timing.per_evaluation), evaluator=ps.evaluator, stats=ps.stats)
        if ps.session.done:
            self.close(ps)

    def summary(self) -> dict:
        wall = time.perf_counter() - self.t_start
        return {
            "model": self.model.name,
            "shared_model_calls": self.shared,
            "sessions_served": self.n_sessions_served,
            "sessions_now": len(self.sessions),
            "model_calls": self.n_model_calls,
            "structures_evaluated": self.n_structures,
            "structures_per_call_mean": (self.n_structures / self.n_model_calls) if self.n_model_calls else None,
            "calls_by_structures": {str(k): v for k, v in sorted(self.calls_by_size.items())},
            "evaluation_seconds": self.evaluation_seconds,
            "wall_seconds": wall,
            "structures_per_second": self.n_structures / wall if wall > 0 else None,
        }

    # -- the loop ---------------------------------------------------------------------------
    def end_silent(self, now: float) -> None:
        """Ends the sessions whose server sent nothing for their timeout while nothing was asked of us."""
        for ps in list(self.sessions.values()):
            s = ps.session
            if s is not None and s.pending is None and now - ps.last_heard > s.conn.timeout_s:
                self.fail(ps, s.conn.silent().args[0])

    def read(self, ps: PackSession) -> None:
        ps.last_heard = time.monotonic()

        def messages(s=ps.session):
            s.step()
            while s.buffered() and not s.done and s.pending is None:
                s.step()

        if self._guarded(ps, messages) and ps.session.done:
            self.close(ps)

    def run(self, idle_exit_s: float, scan_every_s: float = 0.2) -> None:
        next_scan = 0.0
        next_status = 0.0
        idle_since = time.monotonic()
        first_pending: float | None = None
        while True:
            now = time.monotonic()
            if now >= next_scan:
                if os.getppid() != self.ppid:
                    raise DriverError("the process that started the pack is gone")
                self.scan()
                next_scan = now + scan_every_s
            if now >= next_status:
                self.write_status("serving")
                self.end_silent(now)
                next_status = now + 5.0
            for ps in [ps for ps in self.sessions.values() if ps.session is not None]:
                # messages already read from the socket (i-PI's GETFORCE comes with its POSDATA)
                # never make the socket readable again: handle them first
                if ps.session.pending is None and ps.session.buffered() and not ps.session.done:
                    self.read(ps)
            live = [ps for ps in self.sessions.values() if ps.session is not None and not ps.session.done]
            pending = [ps for ps in live if ps.session.pending is not None]
            if pending:
                first_pending = first_pending or now
                # simulations that will send positions soon: initialised, nothing in flight
                coming = [ps for ps in live if ps.session.initialised and ps.session.pending is None
                          and ps.session.results is None]
                if not coming or not self.shared or now - first_pending >= self.wait_s:
                    self.evaluate(pending)
                    first_pending = None
                    continue
            if not self.sessions:
                if (self.dir / STOP).exists() or now - idle_since > idle_exit_s:
                    self.scan()  # a request written just now is still served
                    if not self.sessions:
                        break
            else:
                idle_since = now
            timeout = next_scan - now
            if first_pending is not None:
                timeout = min(timeout, first_pending + self.wait_s - now)
            events = self.sel.select(timeout=max(0.0, timeout)) if self.sel.get_map() else time.sleep(max(0.0, timeout))
            for key, _ in events or ():
                self.read(key.data)

    def shutdown(self, why: str) -> None:
        for ps in list(self.sessions.values()):
            ps.error = ps.error or why
            self.close(ps, graceful=True)
        self.write_status("stopped", why=why)


def write_status(pack_dir: Path, status: str, **extra) -> None:
    """``pack.json``: who serves the folder (the supervisor's stale-folder clean-up reads the pid) and counters."""
    write_json_atomic(pack_dir / STATUS_FILE, check_pack_status({"status": status, "pid": os.getpid(), **extra}))


def serve_pack(model_name: str, pack_dir: str, *, device: str, dtype: str | None, model_path: str | None,
               options: dict, threads: int | None, batched: bool, wait_ms: float, idle_exit_s: float,
               verbose: bool, info, load_kw: dict | None = None) -> dict:
    """Serves every session requested in ``pack_dir`` with one loaded model; returns the summary.
    ``load_kw``: ``load_model``'s keywords for ``--dispersion`` and the facts ``--label`` etc."""
    import sys

    from .models import get_model_info, load_model, set_verbose

    get_model_info(model_name)
    d = Path(pack_dir)
    if not d.is_dir():
        raise DriverError(f"--pack-dir {pack_dir!r} is not a folder")
    if wait_ms < 0 or idle_exit_s <= 0:
        raise DriverError("--pack-wait-ms must be >= 0 and --pack-idle-exit > 0")
    set_verbose(verbose)

    def load():
        m = load_model(model_name, device=device, dtype=dtype, model_path=model_path, options=options,
                       **(load_kw or {}))
        if threads and "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(int(threads))
        return m

    # who serves this folder, before a model load that can take minutes (a first download): the
    # supervisor's stale-folder clean-up leaves a folder alone while its pid lives
    write_status(d, "loading")
    pack = Pack(d, load, wait_s=wait_ms / 1e3, batched=batched, verbose=verbose, info=info)
    if verbose:
        info(f"pack: {model_name} loaded; {'one model call per gathered set' if pack.shared else 'one model per session'}")
    why = "the pack driver stopped"
    try:
        pack.run(idle_exit_s)
        why = ""
    finally:
        if why or pack.sessions:
            pack.shutdown(why or "the pack driver stopped")
        else:
            pack.write_status("finished")
    return pack.summary()


__all__ = ["Pack", "serve_pack", "shares_calls"]
