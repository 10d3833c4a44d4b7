"""Writes i-PI inputs from the templates in ``ipi_inputs/`` (one per thermostat), installed as ``dynamat.ipi_inputs``.

The generated XML and ``dynamat-driver`` share a default socket (unix, name ``dynamat``), and the
ffsocket ``<parameters>`` carry the species as an order-preserving run-length formula, so
``i-pi input.xml & dynamat-driver --model NAME`` needs nothing more.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template

import ase
import ase.io

from dynamat.layout import PREFIX, RunFolder

DEFAULT_SOCKET = "dynamat"
DEFAULT_PORT = 31415

#: i-PI thermostat mode → template file name in ipi_inputs/.
TEMPLATES = {
    "svr": "nvt_svr.xml",
    "langevin": "nvt_langevin.xml",
    # path-integral MD (dynamat.pimd): PILE-L sampling; thermostatted RPMD for centroid dynamics
    "pile_l": "pimd_pile_l.xml",
    "trpmd": "pimd_trpmd.xml",
}
#: the isothermal-isobaric template: the particle thermostat ("svr" or "langevin") is one of its values
NPT_TEMPLATE = "npt.xml"
ENSEMBLES = ("nvt", "npt")
BAROSTATS = ("isotropic", "flexible")  # i-PI's Bussi-Zykova-Parrinello and Martyna-Tuckerman-Tobias-Klein


@dataclass(frozen=True)
class MDSettings:
    """What an i-PI run needs beyond the structure. Times in fs, temperature in K."""

    thermostat: str  # i-PI thermostat mode: "svr" | "langevin"
    timestep_fs: float
    tau_fs: float
    stride: int  # MD steps between saved frames
    steps: int  # total MD steps
    temperature_K: float
    seed: int = 12345
    nbeads: int = 1
    ensemble: str = "nvt"  # "nvt" (fixed cell) or "npt" (i-PI's barostat moves the cell)
    pressure_GPa: float | None = None  # NPT: the external pressure
    barostat: str = "isotropic"  # NPT: i-PI barostat mode, one of BAROSTATS
    tau_barostat_fs: float | None = None  # NPT: the piston's time constant (and its Langevin thermostat's)

    @property
    def is_npt(self) -> bool:
        return self.ensemble == "npt"

    @property
    def last_saved_step(self) -> int:
        """The last step i-PI writes a frame for: ``steps`` rounded down to the save stride."""
        return (int(self.steps) // int(self.stride)) * int(self.stride)


def ipi_thermostat(settings: MDSettings) -> str:
    """The thermostat mode i-PI runs for ``settings``: with beads, a classical one ("svr", "langevin")
    is PILE-L (the path-integral template); "trpmd" and the rest are kept."""
    if int(settings.nbeads) > 1 and settings.thermostat in ("svr", "langevin"):
        return "pile_l"
    return settings.thermostat


def species_formula(atoms: ase.Atoms) -> str:
    """Order-preserving run-length formula ('Cu3AuCu2'); one token, safe in i-PI's INIT string."""
    return atoms.get_chemical_formula(mode="reduce")


def template_text(thermostat: str) -> str:
    try:
        name = TEMPLATES[thermostat]
    except KeyError:
        raise ValueError(
            f"no i-PI template for thermostat {thermostat!r}; known: {', '.join(TEMPLATES)}"
        ) from None
    return resources.files("dynamat.ipi_inputs").joinpath(name).read_text()


#: i-PI's ``floatformat`` for its RESTART, checkpoints and properties: 17 significant digits, so that a float64
#: survives the text (its default ``%16.8e`` keeps 9, and a resumed run then drifted from an uninterrupted one
#: of the same seed from its first step after the restart point: positions, thermostat energy, time step)
FLOAT_FORMAT = "%24.16e"


def output_flush(stride: int, safe_stride: int, checkpoint_stride: int) -> int:
    """Writes between i-PI's flushes (each an fsync) of the properties and trajectories: every write, except
    at stride 1 (every-step protocols), where they are flushed once per ``safe_stride`` steps when that
    divides the checkpoint stride: every restart point i-PI stores (at multiples of ``safe_stride``) then
    follows a flush, so a kill loses only rows and frames after the restart point, which trimming drops."""
    if stride != 1 or checkpoint_stride % safe_stride:
        return 1
    return safe_stride


def trajectory_attrs(stride: int, safe_stride: int, checkpoint_stride: int) -> str:
    """The ``<trajectory>`` format and flush attributes for a save ``stride`` (steps): i-PI's float64 binary
    frames at stride 1, extxyz otherwise."""
    flush = output_flush(stride, safe_stride, checkpoint_stride)
    return f"format='bin' cell_units='ase' flush='{flush}'" if stride == 1 else f"format='ase' flush='{flush}'"


def records_frames(xml_text: str) -> bool:
    """An input of :func:`render_input` whose frames the driver records: a classical template (it has a
    velocity trajectory) that writes no positions."""
    return "filename='vel'" in xml_text and "filename='pos'" not in xml_text


def render_input(
    settings: MDSettings,
    *,
    init_file: str | Path,
    species: str,
    mode: str = "unix",
    address: str = DEFAULT_SOCKET,
    port: int = DEFAULT_PORT,
    sockets_prefix: str | None = None,
    prefix: str = PREFIX,
    batch_size: int | None = None,
    safe_stride: int | None = None,
    checkpoint_stride: int | None = None,
    timeout_s: float = 600.0,
    verbosity: str = "low",
    record_frames: bool = False,
) -> str:
    """The i-PI XML text for one run.

    ``safe_stride`` defaults to the multiple of the output stride nearest 100 steps and the
    checkpoint to every ~1000 steps: i-PI's per-step cost then stays near its floor (shared notes on
    i-PI), and a restart that rolls back to them only repeats frames, which the readers drop by step.
    Every-step protocols (stride 1) save their frames in i-PI's ``format='bin'`` (float64, no text
    formatting: issue 25 §3, ``benchmarks/bench_every_step.py``) and flush their outputs at restart
    points only (:func:`output_flush`); other strides keep extxyz, flushed every frame.
    ``record_frames``: the driver records cell, positions, energy, forces and virial
    (``dynamat-driver --record``); i-PI writes no positions (:func:`records_frames`).
    With ``settings.nbeads > 1`` a classical thermostat ("svr", "langevin") is replaced by the
    PIMD template ("pile_l"; "trpmd" is kept), and ``batch_size`` defaults to the bead count
    (1 otherwise). ``settings.ensemble == "npt"`` renders ``npt.xml`` instead: the same particle thermostat,
    i-PI's barostat at ``settings.pressure_GPa`` (classical only).
    """
    if mode not in ("unix", "inet"):
        raise ValueError(f"socket mode must be 'unix' or 'inet', got {mode!r}")
    stride = int(settings.stride)
    nbeads = int(settings.nbeads)
    thermostat = ipi_thermostat(settings)
    if batch_size is None:
        batch_size = max(nbeads, 1)
    if settings.is_npt and nbeads > 1:
        raise ValueError("NPT runs are classical here: path integrals (--beads) need --ensemble nvt")
    # per-species quantum kinetic energies, e.g. kinetic_cv{electronvolt}(Cu), from the formula
    is_formula = re.fullmatch(r"(?:[A-Z][a-z]?\d*)+", species) is not None
    elements = list(dict.fromkeys(re.findall(r"[A-Z][a-z]?", species))) if is_formula else []
    safe = int(safe_stride or stride * max(1, 100 // stride))
    checkpoint = int(checkpoint_stride or stride * max(1, 1000 // stride))
    values = dict(
        verbosity=verbosity,
        safe_stride=safe,
        float_format=FLOAT_FORMAT,
        trajectory_attrs=trajectory_attrs(stride, safe, checkpoint),
        properties_flush=output_flush(stride, safe, checkpoint),
        positions_output="" if record_frames else (f"    <trajectory filename='pos' stride='{stride}' "
                                                   f"{trajectory_attrs(stride, safe, checkpoint)}> positions{{ase}} "
                                                   "</trajectory>\n"),
        sockets_prefix_attr=f"sockets_prefix='{sockets_prefix}'" if sockets_prefix else "",
        prefix=prefix,
        stride=stride,
        checkpoint_stride=checkpoint,
        steps=int(settings.steps),
        seed=int(settings.seed),
        mode=mode,
        address=address,
        port=int(port),
        timeout_s=float(timeout_s),
        batch_size=int(batch_size),
        species=species,
        template=Path(init_file).name,
        nbeads=int(settings.nbeads),
        init_file=Path(init_file).name,
        temperature_K=float(settings.temperature_K),
        timestep_fs=float(settings.timestep_fs),
        tau_fs=float(settings.tau_fs),
        species_kinetic="".join(f", kinetic_cv{{electronvolt}}({el})" for el in elements),
    )
    if settings.is_npt:
        values.update(thermostat=thermostat, pressure_GPa=float(settings.pressure_GPa or 0.0),
                      barostat=settings.barostat, tau_barostat_fs=float(settings.tau_barostat_fs))
        text = resources.files("dynamat.ipi_inputs").joinpath(NPT_TEMPLATE).read_text()
        return Template(text).substitute(values)
    return Template(template_text(thermostat)).substitute(values)


def write_inputs(
    atoms: ase.Atoms, settings: MDSettings, out_dir: str | Path, **kwargs
) -> Path:
    """Writes ``init.xyz`` (extxyz with cell) and ``input.xml`` into ``out_dir``; returns the XML path.

    i-PI reads the structure relative to its working directory, so i-PI runs from ``out_dir``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    init = RunFolder(out).init_xyz
    ase.io.write(init, atoms, format="extxyz")
    xml = RunFolder(out).input_xml
    xml.write_text(
        render_input(settings, init_file=init.name, species=species_formula(atoms), **kwargs)
    )
    return xml
