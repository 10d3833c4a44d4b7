"""``dynamat-driver``: serve a model's forces to i-PI over its socket protocol.

    i-pi input.xml &
    dynamat-driver --model chgnet                 # the socket of ./input.xml, else /tmp/ipi_dynamat
    dynamat-driver --model emt --unix /tmp/dm/sock --template init.xyz
    dynamat-driver --model sevennet-0 --inet node12:31415 --device cuda --timing-file t.json
    dynamat-driver --model chgnet --stress-stride 10 --first-step 0   # NVT: stress only where written
    dynamat-driver --model chgnet --pack-dir /tmp/pack   # one model for every run that asks (packed runs)
    dynamat-driver --model ase.calculators.lj:LennardJones -o sigma=2.3   # any ASE calculator
    dynamat-driver --model chgnet --dispersion d3-bj     # + DFT-D3(BJ) with PBE parameters (simple-dftd3)
    dynamat-driver --list

Every failure the user can fix is reported as one line, ``dynamat-driver: error: ...``, with a
non-zero exit status and no traceback (``--verbose`` adds the traceback of unexpected errors).
"""

from __future__ import annotations

import json
import signal
import sys
import time
import traceback

import click

from . import PROG, DriverError, __version__
from .allocator import keep_freed_memory
from .timing import TimingWriter


def _err(msg: str) -> None:
    click.echo(f"{PROG}: error: {msg}", err=True)


def _info(msg: str) -> None:
    click.echo(f"{PROG}: {msg}", err=True)


def _parse_options(pairs) -> dict[str, str]:
    out = {}
    for p in pairs:
        key, sep, value = p.partition("=")
        if not sep or not key.strip():
            raise DriverError(f"--option wants KEY=VALUE, got {p!r}")
        out[key.strip()] = value.strip()
    return out


class _Terminated(Exception):
    pass


def _on_sigterm(signum, frame):  # pragma: no cover - exercised via subprocess
    raise _Terminated()


def _where(unix: str | None, inet: str | None, template: str | None):
    """(address, template file) of the i-PI to serve: from --unix/--inet, else from the ``input.xml``
    of the working folder (what ``i-pi input.xml`` listens on), else the default unix socket."""
    from .ipi_input import input_in, read_ipi_input
    from .protocol import DEFAULT_UNIX_NAME, inet_address, unix_address

    if unix and inet:
        raise DriverError("give either --unix or --inet, not both")
    if unix or inet:
        return (inet_address(inet) if inet else unix_address(unix)), template
    found = input_in(".")
    if found is None:
        return unix_address(DEFAULT_UNIX_NAME), template
    ipi = read_ipi_input(found)
    return ipi.address, template or ipi.template


def _check_serve_options(model_name: str, device: str, dtype: str | None, stress_stride, first_step, beads,
                         record: str | None = None) -> None:
    """Bad options: one line before anything is loaded."""
    from .models import get_model_info
    from .stress import StressSchedule

    get_model_info(model_name)  # unknown model: fail before anything else
    if dtype is not None and dtype not in ("float32", "float64"):
        raise DriverError(f"--dtype must be float32 or float64, got {dtype!r}")
    if device != "cpu" and device != "cuda" and not device.startswith("cuda:"):
        raise DriverError(f"--device must be cpu or cuda, got {device!r}")
    if stress_stride is None and (first_step or beads != 1):
        raise DriverError("--first-step and --beads only matter with --stress-stride N")
    if stress_stride is not None:
        StressSchedule(stress_stride, first_step, beads)
    if record is not None and (stress_stride is None or beads != 1):  # before the model loads: said at once
        from .frames import NEEDS_SCHEDULE

        raise DriverError(NEEDS_SCHEDULE)


def _load(model_name: str, *, device: str, dtype: str | None, model_path: str | None, options: dict,
          threads: int | None, verbose: bool, load_kw: dict | None = None):
    from .models import load_model

    t0 = time.perf_counter()
    model = load_model(model_name, device=device, dtype=dtype, model_path=model_path, options=options,
                       **(load_kw or {}))
    if threads and "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(int(threads))
    if verbose:
        _info(f"loaded {model.info.human_name} on {model.device} ({model.dtype}) in {time.perf_counter() - t0:.1f} s")
    return model


def _said_done(ev, stats, verbose: bool) -> None:
    if ev is not None and ev.timing.per_evaluation:
        med = ev.timing.summary()["model_seconds_per_evaluation"]["median"]
        _info(
            f"done ({'EXIT from i-PI' if stats.reason == 'exit' else 'server closed the socket'}): "
            f"{stats.n_requests} requests, {len(ev.timing.per_evaluation)} model evaluations, "
            f"median {1e3 * med:.2f} ms per evaluation"
        )
    elif verbose:
        _info(f"done ({stats.reason}); no structure was evaluated")


def serve(
    model_name: str,
    *,
    unix: str | None,
    inet: str | None,
    template: str | None,
    model_path: str | None,
    device: str,
    dtype: str | None,
    options: dict,
    timing: TimingWriter,
    connect_timeout: float,
    batched: bool,
    threads: int | None,
    verbose: bool,
    stress_stride: int | None = None,
    first_step: int = 0,
    beads: int = 1,
    server_timeout: float | None = None,
    load_kw: dict | None = None,
    record: str | None = None,
) -> None:
    """One i-PI connection served by one loaded model, until EXIT or the server closes.
    ``load_kw``: ``load_model``'s keywords for ``--dispersion`` and the facts ``--label`` etc."""
    from .evaluator import Evaluator, read_template, resolve_system
    from .models import set_verbose
    from .protocol import DEFAULT_SERVER_TIMEOUT_S, SessionStats, connect, run_client, stderr_log
    from .stress import StressSchedule

    _check_serve_options(model_name, device, dtype, stress_stride, first_step, beads, record)
    address, template = _where(unix, inet, template)
    template_atoms = read_template(template, "--template") if template else None
    set_verbose(verbose)
    model = _load(model_name, device=device, dtype=dtype, model_path=model_path, options=options, threads=threads,
                  verbose=verbose, load_kw=load_kw)
    if template_atoms is not None:
        model.check_species(template_atoms.numbers)  # species known now: refuse uncovered elements before connecting
    timing.update(model=model, address=str(address), status="connecting")
    sock = connect(address, connect_timeout, log=_info if verbose else None)
    stats = SessionStats()
    state: dict = {}

    def on_init(params, rid, batch_size):
        system = resolve_system(params, template=template_atoms)
        # a new schedule per connection: i-PI re-sends INIT to every client it serves
        schedule = StressSchedule(stress_stride, first_step, beads) if stress_stride else None
        if state.get("evaluator") is not None:
            state["evaluator"].close()  # the previous connection's frame record
        ev = state["evaluator"] = Evaluator(model, system, batched=batched, stress_schedule=schedule, record=record)
        if verbose:
            _info(f"serving {len(system.numbers)} atoms ({system.formula}, from {system.source}), pbc "
                  f"{''.join('T' if p else 'F' for p in system.pbc)}, batch_size {batch_size}"
                  f"{' (batched model calls)' if ev.batched and batch_size > 1 else ''}")
        timing.update(evaluator=ev, stats=stats, status="running", init_parameters=params)
        return len(system.numbers), system.source

    def evaluate(cells, positions):
        ev = state["evaluator"]
        out = ev(cells, positions)
        timing.maybe_write(len(ev.timing.per_evaluation), evaluator=ev, stats=stats)
        return out

    try:
        run_client(sock, evaluate, on_init, stats=stats, log=stderr_log, verbose=verbose,
                   timeout_s=DEFAULT_SERVER_TIMEOUT_S if server_timeout is None else server_timeout)
    finally:
        timing.update(evaluator=state.get("evaluator"), stats=stats)
        if state.get("evaluator") is not None:
            state["evaluator"].close()
    timing.update(status="finished", end_reason=stats.reason)
    _said_done(state.get("evaluator"), stats, verbose)


@click.command(name=PROG, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--model", "model_name", metavar="NAME", help="Model to serve (see --list), or MODULE:CALLABLE returning an "
              "ASE calculator or a Model (dynamat_driver.models.custom; -o KEY=VALUE are its typed arguments).")
@click.option("--unix", metavar="NAME_OR_PATH", help="Unix socket: a name under /tmp/ipi_ (i-PI's default prefix), or a path containing '/'. Default: the "
              "<ffsocket> of input.xml in the working folder (and its template), else dynamat.")
@click.option("--inet", metavar="HOST:PORT", help="TCP socket of the i-PI server.")
@click.option("--template", type=click.Path(dir_okay=False), help="ASE-readable structure giving species (and pbc) when i-PI sends no 'species' parameter.")
@click.option("--model-path", type=click.Path(), help=(
    "Local checkpoint to load instead of the model's default weights. CHGNet, SevenNet, PET, orb and MatterSim "
    "files are read as data (weights-only unpickler); MACE .model, NequIP and GRACE files are code by format "
    "and run when loaded: give those only files you trust."))
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda.")
@click.option("--dtype", default=None, help="float32 or float64 (default: the model's own).")
@click.option("--option", "-o", "option_pairs", multiple=True, metavar="KEY=VALUE", help="Model option, e.g. -o k=2.0 for harmonic (repeatable).")
@click.option("--timing-file", type=click.Path(dir_okay=False), help="JSON file with model timings, written at exit and every --timing-every evaluations.")
@click.option("--timing-every", default=50, show_default=True, type=int, help="Evaluations between timing-file updates.")
@click.option("--connect-timeout", default=10.0, show_default=True, type=float, help="Seconds to keep retrying the connection while the server starts.")
@click.option("--no-batch", is_flag=True, help="Evaluate i-PI's batched requests one structure at a time.")
@click.option("--threads", type=int, default=None, help="torch CPU threads (default: torch's).")
@click.option("--stress-stride", type=int, default=None, metavar="N",
              help="NVT only (the virial must drive nothing): compute the model's stress only for MD steps that are "
              "multiples of N, i-PI's output stride of the virial; other requests get a NaN virial. Default: every request.")
@click.option("--first-step", type=int, default=0, show_default=True, metavar="S",
              help="With --stress-stride: the MD step of the first request, i.e. 0 for a fresh i-PI run, or the <step> "
              "of the RESTART/checkpoint file i-PI was started from.")
@click.option("--beads", type=int, default=1, show_default=True, metavar="P",
              help="With --stress-stride: structures per MD step (path-integral beads, however i-PI batches them).")
@click.option("--record", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="With --stress-stride N: append the frame of every written step (cell, positions, energy, forces, "
              "virial, float64 as exchanged with i-PI) to FILE (dynamat_driver.frames).")
@click.option("--pack-dir", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help="Pack mode: serve every i-PI run that writes a session request into DIR with this one loaded model, "
              "batching their structures into shared model calls where the model allows (see dynamat_driver.pack).")
@click.option("--pack-wait-ms", type=float, default=5.0, show_default=True,
              help="Pack mode: how long to wait for the other simulations' positions before a model call.")
@click.option("--pack-idle-exit", type=float, default=600.0, show_default=True,
              help="Pack mode: seconds without any session before the driver exits.")
@click.option("--dispersion", type=click.Choice(["d3-bj"]), default=None,
              help="Add a DFT-D3(BJ) dispersion correction (simple-dftd3, float64) to the model's energy, forces and "
              "stress, e.g. for PBE+D3 references (see dynamat_driver.models.dispersion).")
@click.option("--dispersion-functional", default=None, metavar="NAME",
              help="With --dispersion: the functional whose D3(BJ) parameters are used. Default: pbe.")
@click.option("--label", default=None, metavar="TEXT",
              help="A MODULE:CALLABLE model's name in reports (a models file's label); default: the spec.")
@click.option("--tier", default=None, metavar="T", help="A MODULE:CALLABLE model's tier in reports (an integer or a word).")
@click.option("--n-params", type=click.IntRange(0), default=None, help="A MODULE:CALLABLE model's parameter count.")
@click.option("--training-set", default=None, metavar="TEXT", help="A MODULE:CALLABLE model's training set, recorded.")
@click.option("--list", "list_models_flag", is_flag=True, help="List the registered models and exit.")
@click.option("--json", "as_json", is_flag=True, help="With --list: print the registry as JSON.")
@click.option("--verbose", "-v", is_flag=True, help="Log the session to stderr; tracebacks on unexpected errors.")
@click.option("--server-timeout", type=float, default=None, metavar="SECONDS",
              help="Give up, with an error, when the server sends nothing for this long (i-PI is silent while it "
              "writes or between slow steps). Default: 600.")
@click.version_option(__version__, prog_name=PROG)
def main(**opts):
    """Serve a machine-learning interatomic potential to i-PI (socket client)."""
    if opts["list_models_flag"]:
        from .models import listing, registry_table

        if opts["as_json"]:
            click.echo(json.dumps(listing(), indent=1))
        else:
            click.echo(registry_table())
        return
    sys.exit(_run_reporting(opts))


def _facts(o: dict) -> dict:
    """``--label/--tier/--n-params/--training-set``: a tier of digits is a number, as the registry's."""
    tier = o["tier"]
    if tier is not None and tier.strip().isdigit():
        tier = int(tier)
    return {"label": o["label"], "tier": tier, "n_params": o["n_params"], "training_set": o["training_set"]}


def _run(o: dict, timing: TimingWriter) -> None:
    if not o["model_name"]:
        raise DriverError("--model NAME is required (see --list)")
    if o["server_timeout"] is not None and not o["server_timeout"] > 0:
        raise DriverError(f"--server-timeout must be > 0 seconds, got {o['server_timeout']:g}")
    options = _parse_options(o["option_pairs"])
    load_kw = dict(dispersion=o["dispersion"], dispersion_functional=o["dispersion_functional"], facts=_facts(o))
    timing.update(allocator=keep_freed_memory())
    if o["pack_dir"] is None:
        serve(o["model_name"], unix=o["unix"], inet=o["inet"], template=o["template"], model_path=o["model_path"],
              device=o["device"], dtype=o["dtype"], options=options, timing=timing,
              connect_timeout=o["connect_timeout"], batched=not o["no_batch"], threads=o["threads"],
              verbose=o["verbose"], stress_stride=o["stress_stride"], first_step=o["first_step"], beads=o["beads"],
              server_timeout=o["server_timeout"], load_kw=load_kw, record=o["record"])
        return
    if o["unix"] or o["inet"] or o["template"] or o["stress_stride"] is not None or o["record"]:
        raise DriverError("--pack-dir takes sockets, templates, stress strides and frame records from its session "
                          "requests; drop --unix/--inet/--template/--stress-stride/--record")
    from .pack import serve_pack

    summary = serve_pack(o["model_name"], o["pack_dir"], device=o["device"], dtype=o["dtype"],
                         model_path=o["model_path"], options=options, threads=o["threads"],
                         batched=not o["no_batch"], wait_ms=o["pack_wait_ms"], idle_exit_s=o["pack_idle_exit"],
                         verbose=o["verbose"], info=_info, load_kw=load_kw)
    timing.update(status="finished", pack=summary)
    _info(f"pack done: {summary['sessions_served']} session(s), {summary['model_calls']} model calls, "
          f"{summary['structures_evaluated']} structures")


def _run_reporting(o: dict) -> int:
    """Runs the driver; every failure becomes one line and an exit status (0: the session ended normally)."""
    timing = TimingWriter(o["timing_file"], o["timing_every"])
    code = 0
    old = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        _run(o, timing)
    except DriverError as exc:
        _err(str(exc))
        timing.update(status="error", error=str(exc))
        code = 1
    except (KeyboardInterrupt, _Terminated) as exc:
        _info("terminated" if isinstance(exc, _Terminated) else "interrupted")
        timing.update(status="interrupted")
        code = 143 if isinstance(exc, _Terminated) else 130
    except Exception as exc:  # an unexpected failure: still one line, traceback only on request
        msg = f"unexpected {type(exc).__name__}: {exc}".replace("\n", " ")
        if o["verbose"]:
            traceback.print_exc()
        _err(msg + ("" if o["verbose"] else " (rerun with --verbose for the traceback)"))
        timing.update(status="error", error=msg)
        code = 1
    finally:
        signal.signal(signal.SIGTERM, old)
        try:
            timing.write()
        except DriverError as exc:
            _err(str(exc))
            code = code or 1
    return code


if __name__ == "__main__":  # pragma: no cover
    main()
