"""The ``dynamat`` command line: inputs, run, singlepoint, score, report, models, systems, demo."""

from __future__ import annotations

import json
import sys
from importlib import resources
from pathlib import Path

import click
import numpy as np

from dynamat.errors import DynamatError



def default_reference() -> Path:
    return Path(str(resources.files("dynamat.data").joinpath("demo_reference.h5")))


class _Group(click.Group):
    """Turns DynamatError into one line on stderr and exit status 2, without a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except DynamatError as exc:
            click.echo(f"dynamat: error: {exc}", err=True)
            ctx.exit(2)


@click.group(cls=_Group)
@click.version_option(package_name="dynamat")
def cli() -> None:
    """Finite-temperature MD benchmark of foundation MLIPs (Dyna-Mat-v1.0), with i-PI as MD engine."""


reference_option = click.option(
    "--reference", "reference", type=click.Path(path_type=Path), default=None,
    help="DynaMat v1.0 reference HDF5 [default: the bundled demo file for its systems, else the file from `dynamat data download`].",
)
system_option = click.option("--system", "system", required=True, help="System name (group in the reference file).")


def resolve_reference(reference: Path | None, system: str) -> Path:
    """The reference file to use: the one given; else the bundled demo file for its systems; else the
    DynaMat v1.0 file downloaded by `dynamat data download`."""
    if reference is not None:
        return reference
    from dynamat.download import default_reference_path
    from dynamat.io.reference_h5 import list_systems

    demo = default_reference()
    if system in list_systems(demo):
        return demo
    downloaded = default_reference_path()
    if downloaded is None:
        raise DynamatError(
            f"system {system!r} is not in the bundled demo file and no DynaMat v1.0 reference is downloaded; "
            "run `dynamat data download` or pass --reference FILE"
        )
    return downloaded


def _load_system(reference: Path | None, system: str):
    from dynamat.catalogue import get_system
    from dynamat.io.reference_h5 import reference_attrs

    reference = resolve_reference(reference, system)
    attrs = reference_attrs(reference, system)
    return reference, get_system(system, attrs), attrs


def _initial_atoms(reference: Path, system: str):
    import ase

    from dynamat.io.reference_h5 import read_reference

    first = read_reference(reference, system, frames=slice(0, 1))
    return ase.Atoms(numbers=first.numbers, positions=first.positions[0], cell=first.cells[0], pbc=first.pbc)


@cli.command()
@system_option
@reference_option
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder for input.xml and init.xyz.")
@click.option("--steps", type=int, default=None, help="MD steps [default: the protocol's full length].")
@click.option("--seed", type=int, default=12345, show_default=True)
@click.option("--unix", "unix_name", default="dynamat", show_default=True, help="Unix socket name (i-PI adds /tmp/ipi_).")
@click.option("--inet", default=None, help="HOST:PORT for an inet socket instead of a unix one.")
@click.option("--batch-size", type=int, default=None, help="Structures per i-PI request [default: the bead count].")
@click.option("--beads", "nbeads", type=int, default=1, show_default=True, help="Path-integral beads; 1 is classical MD.")
def inputs(system, reference, out, steps, seed, unix_name, inet, batch_size, nbeads):
    """Write an i-PI input for SYSTEM's reference protocol, then run `i-pi input.xml & dynamat-driver`."""
    from dynamat.ipi_input import write_inputs

    reference, sys_entry, _ = _load_system(reference, system)
    kwargs = dict(mode="unix", address=unix_name)
    if inet:
        host, _, port = inet.rpartition(":")
        if not host or not port.isdigit():
            raise DynamatError(f"--inet wants HOST:PORT, got {inet!r}")
        kwargs = dict(mode="inet", address=host, port=int(port))
    xml = write_inputs(_initial_atoms(reference, system), sys_entry.md_settings(steps, seed, nbeads), out,
                       batch_size=batch_size, **kwargs)
    p = sys_entry.protocol
    click.echo(f"wrote {xml} and {xml.parent / 'init.xyz'}")
    click.echo(f"protocol {p.name}: i-PI {p.ipi_thermostat} (paper: {p.paper_thermostat}), dt {p.timestep_fs} fs, "
               f"tau {p.tau_fs} fs, frame every {p.stride} steps, {sys_entry.temperature_K} K")
    where = f"--inet {inet}" if inet else ("" if unix_name == "dynamat" else f"--unix {unix_name}")
    click.echo(f"run it:  cd {out} && i-pi input.xml & dynamat-driver --model MODEL {where}".rstrip())


def _progress_printer(label: str):
    state = {"last": -1.0}

    def show(step: int, total: int) -> None:
        frac = step / max(total, 1)
        if frac - state["last"] >= 0.05 or step >= total:
            state["last"] = frac
            click.echo(f"  {label}: step {step}/{total} ({100 * frac:.0f}%)", err=True)

    return show


def _steps(sys_entry, steps: int | None, time_ps: float | None) -> int | None:
    if steps is not None and time_ps is not None:
        raise DynamatError("give --steps or --time-ps, not both")
    if time_ps is not None:
        if time_ps <= 0:
            raise DynamatError("--time-ps must be positive")
        return int(round(time_ps * 1000.0 / sys_entry.protocol.timestep_fs))
    if steps is not None and steps <= 0:
        raise DynamatError("--steps must be positive")
    return steps


def _run(model, system, reference, out, steps, seed, overwrite, driver_cmd, driver_args, batch_size,
         time_ps=None, socket_mode="unix", host="127.0.0.1", engine="ipi", nbeads=1, protocol=None):
    from dynamat.catalogue import with_protocol
    from dynamat.runner import RunOptions, run_md

    reference, sys_entry, _ = _load_system(reference, system)
    sys_entry = with_protocol(sys_entry, protocol)
    opts = RunOptions(steps=_steps(sys_entry, steps, time_ps), seed=seed, overwrite=overwrite, driver_cmd=driver_cmd,
                      driver_args=tuple(driver_args), batch_size=batch_size, socket_mode=socket_mode, host=host,
                      engine=engine, nbeads=nbeads)
    click.echo(f"running {model} on {system} ({opts.steps or sys_entry.protocol.steps} steps) -> {out / model / system}", err=True)
    rec = run_md(model, sys_entry, _initial_atoms(reference, system), str(reference), out, opts,
                 progress=_progress_printer(f"{model}/{system}"))
    return reference, sys_entry, rec


driver_options = [
    click.option("--driver-cmd", default=None, help="Driver command line from another environment, e.g. ~/envs/mace/bin/dynamat-driver."),
    click.option("--driver-arg", "driver_args", multiple=True, help="Extra driver argument (repeatable), e.g. --driver-arg=--device=cuda."),
]


def _with(options):
    def deco(f):
        for opt in reversed(options):
            f = opt(f)
        return f
    return deco


@cli.command()
@click.option("--model", required=True, help="Model name as dynamat-driver knows it (see `dynamat models`).")
@system_option
@reference_option
@click.option("--steps", type=int, default=None, help="MD steps [default: the protocol's full length, 20 ps].")
@click.option("--time-ps", type=float, default=None, help="Simulated time in ps instead of --steps.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs"), show_default=True)
@click.option("--seed", type=int, default=12345, show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace an existing run folder (an unfinished one is resumed without it).")
@click.option("--batch-size", type=int, default=None, help="Structures per i-PI request [default: the bead count].")
@click.option("--beads", "nbeads", type=int, default=1, show_default=True,
              help="Path-integral beads (PILE-L thermostat); 1 is classical MD.")
@click.option("--socket", "socket_mode", type=click.Choice(["unix", "inet"]), default="unix", show_default=True,
              help="unix: a private socket file; inet: TCP on --host with a free port (published in socket.json).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface for an inet socket (localhost unless named).")
@click.option("--protocol", default=None,
              help="Run under another catalogue protocol, e.g. relaxed_nhc (paper Fig. S5: cell relaxation first).")
@click.option("--engine", type=click.Choice(["ipi", "ase"]), default="ipi", show_default=True,
              help="ase: ASE's Nose-Hoover chain as socket server, the paper's exact protocol for metals, alloys, TMDs, perovskites.")
@_with(driver_options)
def run(model, system, reference, steps, time_ps, out, seed, overwrite, batch_size, nbeads, socket_mode, host,
        protocol, engine, driver_cmd, driver_args):
    """Run MODEL on SYSTEM with i-PI and a dynamat-driver; leaves <out>/<model>/<system>/run.json.

    An unfinished run in the same folder is resumed from i-PI's RESTART or checkpoint."""
    _, _, rec = _run(model, system, reference, out, steps, seed, overwrite, driver_cmd, driver_args, batch_size,
                     time_ps, socket_mode, host, engine, nbeads, protocol)
    sps = rec.seconds_per_step_median
    click.echo(f"{rec.status}: {rec.steps_done} steps, "
               f"{'n/a' if sps is None else f'{sps * 1e3:.1f} ms'} per MD step -> {out / model / system}")


def _singlepoint(model, reference, system, every, max_frames, batch_size, driver_cmd, driver_args):
    import ase

    from dynamat.io.reference_h5 import read_reference
    from dynamat.ipi_input import species_formula
    from dynamat.scoring import score_singlepoint
    from dynamat.socket_server import DriverServer

    reference, sys_entry, attrs = _load_system(reference, system)
    traj = read_reference(reference, system, frames=slice(None, None, every))
    if max_frames:
        traj = traj[:max_frames]
    if traj.energies is None or traj.forces is None:
        raise DynamatError(f"system {system!r} has no energy/forces labels to compare with")
    species = species_formula(ase.Atoms(numbers=traj.numbers))
    kw = dict(driver_cmd=driver_cmd, driver_args=tuple(driver_args))
    e = np.empty(traj.n_frames)
    f = np.empty_like(traj.forces)
    with DriverServer(model, species, traj.n_atoms, batch_size=batch_size, **kw) as srv:
        chunk = max(batch_size, 16)
        for i in range(0, traj.n_frames, chunk):
            j = min(i + chunk, traj.n_frames)
            e[i:j], f[i:j], _ = srv.evaluate(traj.cells[i:j], traj.positions[i:j])
            click.echo(f"  singlepoint {model}/{system}: {j}/{traj.n_frames} frames", err=True)
    e_iso_pred = e_iso_ref = None
    iso_note = None
    ref_iso = attrs.get("isolated_atom_energies_eV")
    if ref_iso:  # reference computed with another code: reference both sides to isolated atoms (Eq. 1)
        e_iso_ref = {int(ase.Atoms(k).numbers[0]): float(v) for k, v in json.loads(ref_iso).items()}
        e_iso_pred = {}
        try:
            for z in sorted(set(traj.numbers.tolist())):
                sym = ase.Atoms(numbers=[z]).get_chemical_symbols()[0]
                with DriverServer(model, sym, 1, batch_size=1, **kw) as srv:
                    box = np.eye(3)[None] * 20.0
                    e_iso_pred[z] = float(srv.evaluate(box, np.full((1, 1, 3), 10.0))[0][0])
        except DynamatError as exc:
            e_iso_pred, e_iso_ref = None, None
            iso_note = f"isolated-atom energy unavailable for this model ({exc}); energy RMSE not referenced"
    res = score_singlepoint(traj.energies, traj.forces, e, f, traj.n_atoms, e_iso_ref=e_iso_ref,
                            e_iso_pred=e_iso_pred, numbers=traj.numbers)
    res["n_frames_singlepoint"] = traj.n_frames
    if iso_note:
        res["energy_referencing_note"] = iso_note
    return res


@cli.command()
@click.option("--model", required=True)
@system_option
@reference_option
@click.option("--every", type=int, default=1, show_default=True, help="Use every K-th reference frame.")
@click.option("--max-frames", type=int, default=None, help="Use at most this many frames.")
@click.option("--batch-size", type=int, default=8, show_default=True)
@click.option("--json", "json_out", type=click.Path(path_type=Path), default=None)
@_with(driver_options)
def singlepoint(model, system, reference, every, max_frames, batch_size, json_out, driver_cmd, driver_args):
    """Energy and force RMSE (paper Eq. 1-2) of MODEL on the labelled reference frames of SYSTEM."""
    res = _singlepoint(model, reference, system, every, max_frames, batch_size, driver_cmd, driver_args)
    res.update(model=model, system=system)
    _emit(res, json_out)


def _emit(res: dict, json_out: Path | None) -> None:
    text = json.dumps(res, indent=2, default=_jsonable) + "\n"
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        tmp = json_out.with_suffix(json_out.suffix + ".tmp")
        tmp.write_text(text)
        tmp.replace(json_out)
        click.echo(f"wrote {json_out}", err=True)
    click.echo(scorecard(res))


def _jsonable(x):
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(type(x))


SCORECARD = [
    ("energy_rmse_eV_per_atom", "E RMSE (Eq. 1)", "eV/atom"),
    ("force_rmse_eV_per_A", "F RMSE (Eq. 2)", "eV/Å"),
    ("rdf_error_pct", "E_RDF (Eq. 4)", "%"),
    ("pressure_mae_GPa", "pressure MAE (Eq. 7)", "GPa"),
    ("pressure_hist_error_pct", "E_P (Eq. 9)", "%"),
    ("vdos_error_pct", "E_VDOS (Eq. 10)", "%"),
    ("E_RPV_pct", "E_RPV (Eq. 11)", "%"),
    ("L_RPV_pct", "L_RPV (Eq. 12)", "%"),
    ("seconds_per_step", "time per MD step", "s"),
]


def scorecard(res: dict) -> str:
    """A plain-text scorecard of whatever metrics ``res`` holds."""
    head = " ".join(str(res[k]) for k in ("model", "system") if res.get(k))
    lines = [f"scorecard {head}".rstrip()]
    for key, label, unit in SCORECARD:
        if key not in res:
            continue
        val = res[key]
        if val is None:
            lines.append(f"  {label:<24} n/a")
            continue
        unc = res.get(f"{key}_unc")
        floor = res.get(f"{key}_floor")
        extra = (f" ± {unc:.3g}" if unc is not None else "") + (f"  (noise floor {floor:.3g})" if floor is not None else "")
        lines.append(f"  {label:<24} {val:.4g} {unit}{extra}")
    return "\n".join(lines)


def _score(reference, system, run_dir, trajectory, dt_fs, model):
    from dynamat.io import read_extxyz, read_reference

    reference, sys_entry, _ = _load_system(reference, system)
    ref = read_reference(reference, system)
    meta = {}
    if run_dir:
        from dynamat.pimd import read_run_trajectory  # the centroid for path-integral runs

        mlip = read_run_trajectory(run_dir)
        rj = Path(run_dir) / "run.json"
        if rj.exists():
            meta = json.loads(rj.read_text())
        proto = meta.get("protocol", {})
        burn_in_steps = proto.get("burn_in_ps", 0.0) * 1000.0 / proto.get("timestep_fs", 1.0)
        if burn_in_steps and mlip.steps is not None:  # relaxed-cell protocol: score after the burn-in
            mlip = mlip[np.flatnonzero(mlip.steps >= burn_in_steps)]
    elif trajectory:
        if not dt_fs:
            raise DynamatError("--trajectory needs --dt-fs, the time between its frames in fs")
        mlip = read_extxyz(trajectory, dt_fs)
    else:
        raise DynamatError("give --run DIR or --trajectory FILE --dt-fs X")
    if mlip.n_atoms != ref.n_atoms or (mlip.numbers != ref.numbers).any():
        raise DynamatError("the trajectory's atoms do not match the reference system's")
    if mlip.dt_fs is None:
        raise DynamatError("the trajectory has no frame interval; pass --dt-fs")
    from dynamat.scoring import score_md

    try:
        res = score_md(ref, mlip, dims=sys_entry.dims)
    except ValueError as exc:  # too short, mismatched intervals, ...: the user's input, said in one line
        raise DynamatError(f"cannot score this trajectory: {exc}") from None
    res.update(
        model=model or meta.get("model") or "unknown",
        system=system,
        system_class=sys_entry.system_class,
        status=meta.get("status", "completed"),
        seconds_per_step=meta.get("seconds_per_step_median"),
        model_seconds_per_eval=meta.get("model_seconds_per_eval_median"),
    )
    return res


@cli.command()
@system_option
@reference_option
@click.option("--run", "run_dir", type=click.Path(path_type=Path, exists=True, file_okay=False), default=None,
              help="A run folder left by `dynamat run`.")
@click.option("--trajectory", type=click.Path(path_type=Path), default=None, help="An extxyz MD trajectory made elsewhere.")
@click.option("--dt-fs", type=float, default=None, help="Time between the trajectory's frames, fs.")
@click.option("--model", default=None, help="Model name to record [default: from run.json].")
@click.option("--json", "json_out", type=click.Path(path_type=Path), default=None)
def score(system, reference, run_dir, trajectory, dt_fs, model, json_out):
    """Observable errors (paper Eq. 3-12) of an MD trajectory against SYSTEM's reference."""
    _emit(_score(reference, system, run_dir, trajectory, dt_fs, model), json_out)


@cli.command()
def systems() -> None:
    """List the system catalogue with protocols."""
    from dynamat.catalogue import get_system, system_names

    for name in system_names():
        s = get_system(name)
        p = s.protocol
        click.echo(f"{name:<30} {s.system_class:<18} {s.temperature_K:>6.0f} K  {s.dims}D  "
                   f"{p.ipi_thermostat} dt={p.timestep_fs} fs tau={p.tau_fs} fs every {p.stride}")


@cli.command()
@click.option("--model", default="chgnet", show_default=True)
@click.option("--system", default="bulkCu_300K-demo_EMT", show_default=True)
@reference_option
@click.option("--steps", type=int, default=400, show_default=True, help="MD steps (the paper's 20 ps is 80000).")
@click.option("--singlepoint-frames", type=int, default=40, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/demo"), show_default=True)
@_with(driver_options)
def demo(model, system, reference, steps, singlepoint_frames, out, driver_cmd, driver_args):
    """The main job on bundled data: single points, an i-PI MD run, and the scorecard."""
    from dynamat.io.reference_h5 import reference_n_frames

    reference = resolve_reference(reference, system)
    every = max(1, reference_n_frames(reference, system) // max(singlepoint_frames, 1))
    sp = _singlepoint(model, reference, system, every, singlepoint_frames, 8, driver_cmd, driver_args)
    _run(model, system, reference, out, steps, 12345, True, driver_cmd, driver_args, 1)
    res = _score(reference, system, out / model / system, None, None, model)
    res.update(sp)
    _emit(res, out / model / system / "score.json")


def main() -> None:
    # registered here, not at import, so `import dynamat.cli` stays light
    from dynamat.campaign import campaign_command, campaign_task_command
    from dynamat.download import data_group
    from dynamat.models_table import models_command
    from dynamat.pimd import beads_convergence_command
    from dynamat.report.cli import report_command

    cli.add_command(report_command, "report")
    cli.add_command(data_group, "data")
    cli.add_command(campaign_command, "campaign")
    cli.add_command(campaign_task_command, "campaign-task")
    cli.add_command(beads_convergence_command, "beads-convergence")
    cli.add_command(models_command, "models")
    cli(prog_name="dynamat")


if __name__ == "__main__":
    sys.exit(main())
