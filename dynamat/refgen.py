"""``dynamat reference generate``: a new reference trajectory, made the way an MLIP run is made.

A reference is a run with another force client: the system's class protocol (or the overrides) goes
through the same i-PI input writer, the same supervisor (:func:`dynamat.runner.supervise`: resume after
a kill, restarts of a crashed client, progress) and the same run-folder readers as ``dynamat run``.
Engines: ``driver`` (any dynamat model, a teacher), ``ase`` (an ASE calculator ``MODULE:CALLABLE``, served
by dynamat-driver's custom-model path) and ``cp2k`` (CP2K as i-PI client, :mod:`dynamat.cp2k`).

Run folders live in ``<out>.work/<engine>/<group>`` (:func:`dynamat.layout.reference_work_dir`); the
first ``equilibrate_ps`` are run and dropped; the remaining frames are streamed into ``<out>`` in the
published layout with provenance attributes. Replica k ≥ 1 of system NAME is the group ``NAME_r<k>``;
every replica group records ``replica_of``, ``replica_index`` and its ``seed``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Callable

import ase
import ase.io
import h5py
import numpy as np

from dynamat.catalogue import NPT_BURN_IN_TAUS, get_system, refuse_barostat_knobs
from dynamat.engines.ipi_input import MDSettings
from dynamat.errors import DynamatError
from dynamat.io.ipi_output import read_properties
from dynamat.io.reference_h5 import ReferenceGroupWriter, h5_reason, replicas_in
from dynamat.io.run_folder import read_run_trajectory
from dynamat.layout import PREFIX, RunFolder, reference_work_dir
from dynamat.metrics.equilibration import kinetic_temperature_settled
from dynamat.names import check_name, model_folder, replica_name
from dynamat.runner import MAX_SEED, RunOptions, check_same_run, ensemble_of, run_seed, steps_for_time, supervise

ENGINES = ("driver", "ase", "cp2k")
STALL_TIMEOUT_DFT_S = 86400.0  # no saved frame for a day: a hung first-principles client


@dataclass
class GenerateRequest:
    engine: str  # driver | ase | cp2k
    structure: Path  # any ASE-readable file (CIF, POSCAR, extxyz); its last frame starts the MD
    name: str  # group name in ``out``
    temperature_K: float
    time_ps: float  # production time stored, ps (after equilibration)
    out: Path
    model: str | None = None  # --engine driver
    calculator: str | None = None  # --engine ase: MODULE:CALLABLE
    model_options: tuple[str, ...] = ()  # driver arguments --option=K=V
    overrides: dict = field(default_factory=dict)  # system_class, timestep_fs, tau_fs, thermostat; ensemble knobs
    stride: int | None = None  # MD steps between stored frames [default: the protocol's]
    equilibrate_ps: float = 1.0
    replicas: int = 1
    seed: int | None = None  # replica k uses seed + k; None: drawn per replica and recorded
    overwrite: bool = False
    cp2k_input: Path | None = None  # a CP2K input template (dynamat.cp2k)
    driver_cmd: str | None = None
    driver_args: tuple[str, ...] = ()


@dataclass
class GeneratedGroup:
    name: str
    replica_index: int
    seed: int
    n_frames: int
    run_dir: Path
    settled: bool
    note: str = ""


def engine_label(req: GenerateRequest) -> str:
    """The run-folder name of the force client: the model, the calculator spec or ``cp2k``."""
    if req.engine == "driver":
        return model_folder(req.model)
    if req.engine == "ase":
        return model_folder(req.calculator)
    return "cp2k"


def _check(req: GenerateRequest) -> None:
    if req.engine not in ENGINES:
        raise DynamatError(f"unknown --engine {req.engine!r}: use {', '.join(ENGINES)}")
    if req.engine == "driver" and not req.model:
        raise DynamatError("--engine driver needs --model NAME (see `dynamat models`)")
    if req.engine == "ase" and (not req.calculator or ":" not in req.calculator):
        raise DynamatError("--engine ase needs --calculator MODULE:CALLABLE returning an ASE calculator")
    if req.engine != "driver" and req.model:
        raise DynamatError(f"--model is for --engine driver, not --engine {req.engine}")
    if req.engine == "driver":
        from dynamat.known_models import check_model_known, check_model_options

        check_model_known(req.model, (), req.driver_cmd)
        check_model_options(req.model, tuple(req.driver_args) + tuple(req.model_options))
    if req.engine != "ase" and req.calculator:
        raise DynamatError(f"--calculator is for --engine ase, not --engine {req.engine}")
    if req.engine != "cp2k" and req.cp2k_input is not None:
        raise DynamatError(f"--cp2k-input is for --engine cp2k, not --engine {req.engine}")
    if not 0 < req.temperature_K < math.inf:
        raise DynamatError(f"--temperature must be a positive number of K, got {req.temperature_K}")
    if not 0 <= req.equilibrate_ps < math.inf:
        raise DynamatError(f"--equilibrate-ps must be >= 0, got {req.equilibrate_ps}")
    if req.replicas < 1:
        raise DynamatError(f"--replicas must be at least 1, got {req.replicas}")
    if req.seed is not None and req.seed + req.replicas - 1 > MAX_SEED:
        raise DynamatError(f"--seed {req.seed} + {req.replicas - 1} replicas exceeds {MAX_SEED}")
    if req.stride is not None and req.stride < 1:
        raise DynamatError(f"--stride must be at least 1, got {req.stride}")
    for k in range(req.replicas):
        check_name("system", replica_name(req.name, k))
    if req.out.suffix.lower() not in (".h5", ".hdf5"):
        raise DynamatError(f"--out must name an HDF5 file (.h5), got {req.out}")
    if req.out.is_dir():
        raise DynamatError(f"--out {req.out} is a folder; name the reference file, e.g. ref.h5")


def read_structure(path: Path) -> ase.Atoms:
    """The structure the MD starts from: the last frame of any ASE-readable file."""
    if not Path(path).is_file():
        raise DynamatError(f"structure file not found: {path}")
    try:
        atoms = ase.io.read(path, index=-1)
    except Exception as exc:  # ASE raises many kinds for an unreadable file, some with no text (assert)
        why = " ".join(str(exc).split())
        if not why:
            why = f"not a structure file ASE can read as {_ase_format(path)}"
        raise DynamatError(f"cannot read a structure from {path}: {type(exc).__name__}: {why}") from None
    if not np.isfinite(atoms.positions).all():
        bad = np.flatnonzero(~np.isfinite(atoms.positions).all(axis=1))
        raise DynamatError(f"{path}: non-finite positions (NaN or inf) of {len(bad)} atom(s), the first atom "
                           f"{int(bad[0])}: the MD cannot start from them")
    if not np.isfinite(atoms.cell.array).all():
        raise DynamatError(f"{path}: the cell holds non-finite numbers (NaN or inf): the MD cannot start from it")
    if not atoms.pbc.all() or atoms.cell.rank < 3:
        raise DynamatError(f"{path}: a reference needs a periodic cell in all three directions")
    return atoms


def _ase_format(path: Path) -> str:
    """The format ASE takes ``path`` for (from its name or content), else its suffix."""
    from ase.io.formats import filetype

    try:
        return filetype(path)
    except Exception:  # ASE cannot tell: say what the name suggests
        return Path(path).suffix.lstrip(".") or "any format it knows"


def system_for(req: GenerateRequest, atoms: ase.Atoms):
    """The System (class protocol and its sources) the generated reference runs under."""
    if "ensemble" not in req.overrides:  # no file to take a barostat from: NPT is asked for, or it is NVT
        refuse_barostat_knobs(req.overrides, " (add --ensemble npt to generate a reference at constant pressure)")
    sys_ = get_system(req.name, {"temperature_kelvin": float(req.temperature_K)}, atoms, overrides=req.overrides)
    if req.stride is not None:
        sys_ = replace(sys_, protocol=replace(sys_.protocol, stride=int(req.stride)),
                       sources={**sys_.sources, "stride": "command line (--stride)"})
    return sys_


def _steps(ps: float, timestep_fs: float, stride: int) -> int:
    """Steps for ``ps`` at ``timestep_fs``, rounded up to a multiple of ``stride`` (frames align)."""
    if ps <= 0:
        return 0
    n = int(round(ps * 1000.0 / timestep_fs))
    return -(-n // stride) * stride


def forces_output(stride: int) -> str:
    """The i-PI output element that writes forces (eV/Å) beside the template's positions: float64 binary
    frames at stride 1, as the template writes the positions of every-step protocols, else extxyz."""
    fmt = "format='bin' cell_units='ase'" if int(stride) == 1 else "format='ase'"
    return f"<trajectory filename='frc' stride='{int(stride)}' {fmt} flush='1'> forces{{ase}} </trajectory>"


def generate(req: GenerateRequest, progress_for: Callable[[str], Callable] | None = None,
             announce: Callable[[str], None] | None = None, warn: Callable[[str], None] | None = None
             ) -> list[GeneratedGroup]:
    """Runs every replica (resuming what a kill left) and stores each in ``req.out``; returns what was stored."""
    _check(req)
    atoms = read_structure(req.structure)
    system = system_for(req, atoms)
    p = system.protocol
    equil = _steps(req.equilibrate_ps, p.timestep_fs, p.stride)
    prod = steps_for_time(req.time_ps, p.timestep_fs)
    client = _client(req, system, atoms)
    kept = _stored_replicas(req, system, equil, prod, client)
    if p.ensemble == "npt" and warn and req.equilibrate_ps * 1000.0 < NPT_BURN_IN_TAUS * p.tau_barostat_fs:
        # after every refusal (a refused request stays one line); a cell still relaxing would bias the volume
        warn(f"--equilibrate-ps {req.equilibrate_ps:g} is under {NPT_BURN_IN_TAUS:g} barostat time constants "
             f"({NPT_BURN_IN_TAUS * p.tau_barostat_fs / 1000.0:g} ps): the stored frames may begin while the "
             "cell still relaxes")
    work = reference_work_dir(req.out)
    label = engine_label(req)
    done = []
    for k in range(req.replicas):
        group = replica_name(req.name, k)
        run_dir = RunFolder.of(work, label, req.name, k).path
        if k in kept:  # stored by an earlier run of this command (one killed during a later replica)
            seed, n, settled = kept[k]
            if announce:
                announce(f"{group}: already stored in {req.out} by the same request (seed {seed}); keeping it")
            done.append(GeneratedGroup(group, k, seed, n, run_dir, settled))
            continue
        # a folder holds one run, as for `dynamat run`: replica 1 of X is not a run of a system named X_r1
        check_same_run(run_dir, system.name, k or None, req.overwrite)
        seed = run_seed(run_dir, None if req.seed is None else req.seed + k, req.overwrite)
        # the catalogue's settings (ensemble and barostat included), as ``dynamat run`` builds them
        settings = system.md_settings(steps=equil + prod, seed=seed)
        opts = RunOptions(steps=settings.steps, seed=seed, overwrite=req.overwrite, driver_cmd=req.driver_cmd,
                          driver_args=tuple(req.driver_args) + tuple(req.model_options),
                          extra_outputs=forces_output(p.stride), client=client, record_frames=False,
                          # a first-principles step is dear: a crash must not roll back ~100 of them
                          safe_stride=p.stride if client is not None else None)
        if client is not None:
            # a DFT step may take longer than any fixed timeout; a crashed CP2K is seen at once by its exit
            opts.client_timeout_s, opts.stall_timeout_s = 0.0, STALL_TIMEOUT_DFT_S
        model = req.model or req.calculator or "cp2k"
        if req.overwrite or not _completed(run_dir, settings):  # --overwrite reruns, e.g. after a new template
            supervise(model, atoms, settings, run_dir, opts, system=system, reference=str(req.structure),
                      system_info=system.describe(), announce=announce,
                      progress=progress_for(group) if progress_for else None, replica=k or None)
        elif announce:
            announce(f"{group}: the run in {run_dir} is complete; storing it")
        n, settled, note, removed = _store(req, group, k, run_dir, settings, equil, system, client, atoms)
        if removed and announce:
            announce(f"{group}: replaced the earlier {req.name} set in {req.out}, removing {', '.join(removed)}")
        if note and warn:
            warn(f"{group}: {note}")
        done.append(GeneratedGroup(group, k, seed, n, run_dir, settled, note))
    return done


def _client(req: GenerateRequest, system, atoms: ase.Atoms):
    if req.engine != "cp2k":
        return None
    from dynamat.cp2k import Cp2kClient

    client = Cp2kClient(atoms, system.system_class, template=req.cp2k_input,
                        needs_stress=system.protocol.ensemble == "npt")
    client.check()  # CP2K is installed: say how to install it otherwise, before any folder is made
    return client


#: provenance attributes a stored replica need not share with the request to be kept by a rerun: the versions
#: of the codes (a rerun on another node or after an upgrade, `cp2k --version` timing out as "unknown") and the
#: paths of the files (a project folder moved); the CP2K input's text and facts, the protocol and model stay compared
_UNCOMPARED = ("dynamat_version", "ipi_version", "code_version", "structure_file", "input_template")


def _stored_replicas(req: GenerateRequest, system, equil: int, prod: int, client) -> dict[int, tuple[int, int, bool]]:
    """The replicas ``out`` already holds from this very request (replica k → seed, frames, equilibrated), kept by
    a rerun of the command (e.g. after a kill during a later replica); a group of any of the request's names
    that another request made is refused in one line unless --overwrite. Checked before any MD."""
    if not req.out.exists():
        return {}
    try:
        with h5py.File(req.out, "r") as f:
            if req.overwrite:
                return {}
            kept = {}
            for k in range(req.replicas):
                group = replica_name(req.name, k)
                if group not in f:
                    continue
                g = f[group]
                seed = g.attrs.get("seed") if req.seed is None else req.seed + k
                why = _differs(g, _expected_attrs(req, k, system, equil, prod, client, seed))
                if why:
                    raise DynamatError(f"{req.out} already holds {group}, {why}; pass --overwrite to replace the "
                                       f"{req.name} set or choose another --name")
                kept[k] = (int(seed), int(g["positions"].shape[0]), bool(g.attrs.get("equilibrated", True)))
    except OSError as exc:
        raise DynamatError(f"--out {req.out} exists and is not a readable HDF5 file ({h5_reason(exc)}); not touching "
                           "it") from None
    return kept


def _expected_attrs(req: GenerateRequest, k: int, system, equil: int, prod: int, client, seed) -> dict:
    """What replica ``k`` of ``req`` stores as attributes (seed ``seed``), and its last ``md_step``."""
    settings = system.md_settings(steps=equil + prod, seed=int(seed) if seed is not None else 0)
    attrs = {"temperature_kelvin": float(settings.temperature_K), "dt_fs": float(settings.timestep_fs * settings.stride)}
    attrs.update({key: v for key, v in _provenance(req, k, settings, equil, system, client).items()
                  if key not in _UNCOMPARED})
    attrs["last md_step"] = prod // int(settings.stride) * int(settings.stride)
    return attrs


def _differs(g: h5py.Group, want: dict) -> str:
    """Why the stored group ``g`` is not what ``want`` describes ('' when it is)."""
    if _text(g.attrs.get("generated_by")) != "dynamat reference generate":
        return "which `dynamat reference generate` did not make"
    steps = g["md_step"] if "md_step" in g else None
    have = dict(g.attrs)
    have["last md_step"] = int(steps[-1]) if steps is not None and len(steps) else None
    for key, v in want.items():
        got = have.get(key)
        got = _text(got) if isinstance(got, bytes | str) else got
        if isinstance(v, float) and got is not None and not isinstance(got, str):
            same = bool(np.isclose(float(got), v, rtol=1e-12, atol=0.0))
        else:
            same = got is not None and np.asarray(got).tolist() == np.asarray(v).tolist()
        if not same:
            shown = np.asarray(got).tolist() if got is not None and not isinstance(got, str) else got
            return f"made with {key} {shown!r} where this request has {v!r}"
    return ""


def _text(v) -> str | None:
    return v.decode() if isinstance(v, bytes) else v


def _completed(run_dir: Path, settings: MDSettings) -> bool:
    try:
        rec = json.loads(RunFolder(run_dir).run_json.read_text())
    except (OSError, ValueError):
        return False
    # a completed run of another ensemble is not this one: the supervisor then refuses it in one line
    return rec.get("status") == "completed" and rec.get("steps_requested") == settings.steps \
        and rec.get("seed") == settings.seed \
        and ensemble_of(rec.get("protocol") or {}) == ensemble_of(asdict(settings))


def _store(req, group: str, k: int, run_dir: Path, settings: MDSettings, equil: int, system, client, atoms):
    """Streams the frames after equilibration into ``group`` of ``req.out`` (written under a temporary
    name, then renamed: a kill while writing leaves no half group under the real name).

    The frames are read as ``dynamat score`` reads a run folder (:func:`read_run_trajectory`: extxyz, i-PI's
    binary frames of every-step protocols, the driver's frame record), so every form a run writes is stored."""
    traj = read_run_trajectory(run_dir, PREFIX)
    missing = [what for what, v in (("forces", traj.forces), ("potential energies", traj.energies),
                                    ("virials", traj.stress)) if v is None]
    if missing:
        raise DynamatError(f"the run in {run_dir} wrote no {' or '.join(missing)} of its frames; a reference needs "
                           "them: rerun with --overwrite")
    keep = traj.steps >= equil
    if not keep.any():
        raise DynamatError(f"the run in {run_dir} holds no frame after its {equil} equilibration steps; "
                           "rerun with --overwrite")
    temps = _equilibration_temperatures(RunFolder(run_dir, PREFIX).properties, equil)
    settled, note = True, ""
    if equil > 0 and temps is not None and len(temps) >= 4:
        settled, why = kinetic_temperature_settled(temps, settings.temperature_K, 3 * len(atoms) - 3)
        if not settled:
            note = (f"the kinetic temperature has not settled in the {req.equilibrate_ps:g} ps of equilibration "
                    f"({why}); consider a longer --equilibrate-ps")
    attrs = _provenance(req, k, settings, equil, system, client)
    attrs["equilibrated"] = bool(settled)
    tmp = f".{group}.tmp"
    removed: list[str] = []
    with h5py.File(req.out, "a") as f:
        if tmp in f:
            del f[tmp]
        if req.overwrite and k == 0:
            # the replaced set goes as a whole, the groups of a larger earlier --replicas included: left, they
            # would set the noise floor of every score against the new system (as `reference import --force`)
            removed = replicas_in(f, req.name)
            for n in removed:
                del f[n]
        w = ReferenceGroupWriter(f.create_group(tmp), traj.numbers, np.ones(3, bool))
        for j in np.flatnonzero(keep):
            w.add(positions=traj.positions[j], cell=traj.cells[j], energy=traj.energies[j], forces=traj.forces[j],
                  stress=traj.stress[j], md_step=traj.steps[j] - equil)
        n = w.finish(dt_fs=settings.timestep_fs * settings.stride, temperature_kelvin=settings.temperature_K,
                     attrs=attrs)
        if group in f:
            del f[group]
        f.move(tmp, group)
    return n, settled, note, removed


def _equilibration_temperatures(props_file: Path, equil: int) -> np.ndarray | None:
    """The kinetic temperatures (K) i-PI saved before step ``equil``, None where the properties lack them."""
    try:
        props = read_properties(props_file)
    except OSError:
        return None
    temps, steps = props.get("temperature{kelvin}"), props.get("step")
    if temps is None or steps is None:
        return None
    return temps[steps.astype(int) < equil]


def _provenance(req, k: int, settings: MDSettings, equil: int, system, client) -> dict:
    attrs = {
        "stress_unit": "eV/A^3",
        "system_class": system.system_class,
        "dims": int(system.dims),
        "replica_of": req.name,
        "replica_index": int(k),
        "seed": int(settings.seed),
        "engine": req.engine,
        "generated_by": "dynamat reference generate",
        "dynamat_version": _version("dynamat"),
        "ipi_version": _version("ipi"),
        "md_timestep_fs": float(settings.timestep_fs),
        "md_stride": int(settings.stride),
        "thermostat": settings.thermostat,
        "tau_fs": float(settings.tau_fs),
        "equilibrate_ps": float(equil * settings.timestep_fs / 1000.0),
        **_ensemble_attrs(settings),
        "structure_file": str(Path(req.structure).resolve()),
    }
    if client is not None:
        attrs.update(client.provenance())
    else:
        attrs["reference_code"] = "dynamat-driver"
        attrs["model"] = req.model or req.calculator
        if req.model_options:
            attrs["model_options"] = " ".join(req.model_options)
    return attrs


def _ensemble_attrs(settings: MDSettings) -> dict:
    """The ensemble of the stored frames: ``nvt``, or ``npt`` with its pressure (GPa), barostat and τ (fs)."""
    if settings.ensemble != "npt":
        return {"ensemble": "nvt"}
    return {"ensemble": "npt", "pressure_GPa": float(settings.pressure_GPa), "barostat": settings.barostat,
            "tau_barostat_fs": float(settings.tau_barostat_fs)}


def _version(pkg: str) -> str:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return "unknown"
