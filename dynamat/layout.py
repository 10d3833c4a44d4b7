"""The one place that names the files of a run folder and of a campaign tree.

A run folder is ``<out>/<model>/<system>`` (each name checked by :mod:`dynamat.names`, the folder proven
to lie inside ``--out``); replica k >= 1 of a ``--replicas R`` set is ``<out>/<model>/<system>_r<k>``
(:func:`dynamat.names.replica_name`: replica 0 is the single run's folder, so R = 1 changes nothing).
It holds::

    input.xml  init.xyz             the i-PI input and start structure dynamat wrote
    attempt.xml                     the input of the current attempt (socket folder filled in)
    simulation.out                  i-PI's properties, one row per saved step
    simulation.pos_<b>.extxyz       positions (bead b; b zero-padded to the digits of P), vel_<b> velocities
    simulation.frc_0.extxyz         forces (eV/Å) of a generated reference (``dynamat reference generate``;
                                    ``simulation.frc_0.bin``, float64, at stride 1)
    cp2k.inp  cp2k.out  cp2k-*      CP2K's input, output and own files when CP2K is the force client
    simulation.vel_0.bin            every-step protocols (stride 1): i-PI's float64 binary velocity frames,
    simulation.frames.f64           and the driver's frame record (cell, positions, energy, forces, virial)
    simulation.xc.extxyz / vc       centroid positions and velocities (path-integral templates)
    RESTART  simulation.chk         i-PI's soft-exit restart file and its periodic checkpoint
    last_good.chk                   a whole copy of the newest complete one (a kill mid-write cannot cost both)
    ipi.log  driver.log             the two processes' output (driver<tag>.log for further drivers)
    driver_timing.json              the driver's per-call timing (driver_timing<tag>.json)
    relax_template.xyz relax.log relax_driver.log   the relaxed-cell protocol's relaxation
    socket.json                     where a campaign's TCP bridge listens (inet jobs)
    isolated_atom_energies.json     the model's isolated-atom energies (Eq. 1 referencing)
    run.json                        what was run, with every setting and its source, and the status
    score.json  curves.npz          the score and the curves it compared
    .lock                           held while a process works in the folder

``dynamat reference generate --out ref.h5`` keeps its run folders in ``ref.h5.work/<engine>/<group>``
(:func:`reference_work_dir`), next to the file the user named.

A campaign keeps its own files under ``<out>/_campaign`` (:class:`CampaignTree`) and its report under
``<out>/report``; both names are reserved (:data:`dynamat.names.RESERVED`), so no model or system shadows them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dynamat.errors import DynamatError
from dynamat.names import model_folder, replica_name, run_dir_in

PREFIX = "simulation"  # i-PI's output prefix in every template

RUN_JSON = "run.json"
SCORE_JSON = "score.json"
CURVES_NPZ = "curves.npz"


def curves_beside(score_path: Path) -> Path:
    """The curves file that belongs to a score file: ``score.json`` -> ``curves.npz`` (a run folder),
    ``X.score.json`` or ``X.json`` -> ``X.curves.npz``. Named after the score, so that two scores
    written into one folder never overwrite each other's curves."""
    base = score_path.name[:-5] if score_path.name.endswith(".json") else score_path.name
    base = "" if base == "score" else base[:-6] if base.endswith(".score") else base
    return score_path.with_name(f"{base}.{CURVES_NPZ}" if base else CURVES_NPZ)


SOCKET_JSON = "socket.json"
INPUT_XML = "input.xml"
ATTEMPT_XML = "attempt.xml"
INIT_XYZ = "init.xyz"
IPI_LOG = "ipi.log"
ISOLATED_ATOM_ENERGIES_JSON = "isolated_atom_energies.json"
RESTART = "RESTART"
LAST_GOOD = "last_good.chk"  # our whole copy of the newest complete restart point (i-PI rewrites its own in place)
LOCK = ".lock"
CP2K_PROJECT = "cp2k"  # CP2K's PROJECT: its own files are cp2k-*
WORK_SUFFIX = ".work"
BEAD_SUMMARY = "bead_convergence.json"  # `dynamat beads-convergence`: its summary, beside its beads_<P>/ runs
BEAD_RUN_PREFIX = "beads_"

CAMPAIGN_DIR = "_campaign"
REPORT_DIR = "report"


def check_out_folder(out: str | Path, flag: str = "--out") -> Path:
    """``out``, refused in one line where it, or a folder above it, is a file: a command whose work takes
    minutes (a campaign, the demo's single points) must not find that out only when it first writes there."""
    path = Path(out)
    for p in (path, *path.parents):
        if p.exists() or p.is_symlink():
            if not p.is_dir():
                where = "is a file" if p == path else f"lies under {p}, which is a file"
                raise DynamatError(f"{flag} {path} {where}, not a folder: give a folder (it is made where missing)")
            break
    return path


def check_file_target(path: str | Path, flag: str, ours: Callable[[dict], bool] | None = None) -> Path:
    """``path``, a file a command writes only at the end of its work (a score, a summary, a reference file),
    refused now in one line where it is a folder or lies under a file, not after the minutes of work.
    ``ours``: whether a JSON object is what this command writes; a file already there is then replaced only
    where it is one (an earlier result), never a user's other file."""
    path = Path(path)
    if path.is_dir():
        raise DynamatError(f"{flag} {path} is a folder: give a file name")
    check_out_folder(path.parent, f"{flag} {path}: its folder")
    if ours is not None and path.exists() and not _json_object_is(path, ours):
        raise DynamatError(f"{flag} {path} exists and is not a file this command writes: give a new file name, or "
                           "move that file away")
    return path


def _json_object_is(path: Path, ours: Callable[[dict], bool]) -> bool:
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError):  # UnicodeDecodeError included
        return False
    return isinstance(raw, dict) and bool(ours(raw))


@dataclass(frozen=True)
class RunFolder:
    """The files of one run folder. ``RunFolder(path)`` for a folder given as such (``--run DIR``);
    :meth:`of` for ``<out>/<model>/<system>``."""

    path: Path
    prefix: str = PREFIX

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @classmethod
    def of(cls, out: str | Path, model: str, system: str, replica: int = 0) -> "RunFolder":
        """``<out>/<model>/<system>`` (``<system>_r<k>`` for replica k >= 1), resolved, both names checked,
        proven inside ``out``."""
        return cls(run_dir_in(out, ("model", model), ("system", replica_name(system, replica))))

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    # dynamat's own files
    run_json = property(lambda self: self.path / RUN_JSON)
    score_json = property(lambda self: self.path / SCORE_JSON)
    curves_npz = property(lambda self: self.path / CURVES_NPZ)
    socket_json = property(lambda self: self.path / SOCKET_JSON)
    input_xml = property(lambda self: self.path / INPUT_XML)
    attempt_xml = property(lambda self: self.path / ATTEMPT_XML)
    init_xyz = property(lambda self: self.path / INIT_XYZ)
    ipi_log = property(lambda self: self.path / IPI_LOG)
    relax_template_xyz = property(lambda self: self.path / "relax_template.xyz")
    relax_driver_log = property(lambda self: self.path / "relax_driver.log")
    relax_log = property(lambda self: self.path / "relax.log")
    isolated_atom_energies_json = property(lambda self: self.path / ISOLATED_ATOM_ENERGIES_JSON)
    lock = property(lambda self: self.path / LOCK)

    # i-PI's files
    restart = property(lambda self: self.path / RESTART)
    checkpoint = property(lambda self: self.path / f"{self.prefix}.chk")
    last_good = property(lambda self: self.path / LAST_GOOD)
    properties = property(lambda self: self.path / f"{self.prefix}.out")
    centroid_positions = property(lambda self: self.path / f"{self.prefix}.xc.extxyz")
    centroid_velocities = property(lambda self: self.path / f"{self.prefix}.vc.extxyz")
    #: the driver's frame record (dynamat_driver.frames), in place of i-PI's positions (every-step protocols)
    frame_record = property(lambda self: self.path / f"{self.prefix}.frames.f64")

    def driver_log(self, tag: str = "") -> Path:
        """``driver.log``; ``driver<tag>.log`` for the second and further drivers of one run."""
        return self.path / f"driver{tag}.log"

    def driver_timing_json(self, tag: str = "") -> Path:
        return self.path / f"driver_timing{tag}.json"

    def positions(self, bead: str | int = 0) -> Path:
        """``<prefix>.pos_<bead>.extxyz``; ``bead`` as i-PI writes it (zero-padded for P > 9: pass the string)."""
        return self.path / f"{self.prefix}.pos_{bead}.extxyz"

    def velocities(self, bead: str | int = 0) -> Path:
        return self.path / f"{self.prefix}.vel_{bead}.extxyz"

    def forces(self, bead: str | int = 0) -> Path:
        """``<prefix>.frc_<bead>.extxyz``: the forces trajectory a generated reference asks i-PI for."""
        return self.path / f"{self.prefix}.frc_{bead}.extxyz"

    cp2k_input = property(lambda self: self.path / f"{CP2K_PROJECT}.inp")
    cp2k_output = property(lambda self: self.path / f"{CP2K_PROJECT}.out")

    def binary_frames(self, what: str, bead: str | int = 0) -> Path:
        """``<prefix>.<what>_<bead>.bin``: i-PI's ``format='bin'`` trajectory (``what``: ``pos``, ``vel`` or ``frc``)."""
        return self.path / f"{self.prefix}.{what}_{bead}.bin"

    def trajectory(self, what: str, bead: str | int = 0) -> Path:
        """The trajectory file of ``what`` (``pos``, ``vel`` or ``frc``) a run holds: i-PI's binary frames when present
        (every-step protocols), else its extxyz (every other run, and folders written before the binary)."""
        binary = self.binary_frames(what, bead)
        return binary if binary.exists() else self.path / f"{self.prefix}.{what}_{bead}.extxyz"

    def restart_candidates(self) -> list[Path]:
        """Where a restart point may be: RESTART, the checkpoint, our last-good copy, then the copies i-PI
        keeps when a new process rewrites them (``#RESTART#0#``)."""
        return ([self.restart, self.checkpoint, self.last_good] + sorted(self.path.glob(f"#{RESTART}#*#"))
                + sorted(self.path.glob(f"#{self.prefix}.chk#*#")))

    def own_files(self) -> list[Path]:
        """What a run writes into its folder (dynamat, i-PI under our prefix, the driver): the only files a
        start again in place removes; anything else there (a user's notes) is left alone."""
        patterns = (RUN_JSON, f".{RUN_JSON}.*.tmp", INPUT_XML, INIT_XYZ, ATTEMPT_XML, SOCKET_JSON, IPI_LOG, "driver*.log",
                    "driver_timing*.json", "relax_template.xyz", "relax_driver.log", "relax.log",
                    ISOLATED_ATOM_ENERGIES_JSON, f"{CP2K_PROJECT}.inp", f"{CP2K_PROJECT}.out", f"{CP2K_PROJECT}-*",
                    RESTART, LAST_GOOD, f".{LAST_GOOD}.*.tmp", f"{self.prefix}.*",
                    f"#{RESTART}#*#", f"#{self.prefix}.*#*#")
        return [p for pattern in patterns for p in self.path.glob(pattern) if p.is_file() and not p.is_symlink()]


def reference_work_dir(out: str | Path) -> Path:
    """Where ``dynamat reference generate --out ref.h5`` keeps its run folders: ``ref.h5.work`` beside it."""
    out = Path(out)
    return out.with_name(out.name + WORK_SUFFIX)


@dataclass(frozen=True)
class CampaignTree:
    """A campaign's ``--out``: a run folder per pair, the campaign's own files under ``_campaign``, the report."""

    out: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "out", Path(self.out))

    def run(self, model: str, system: str, replica: int = 0) -> RunFolder:
        return RunFolder.of(self.out, model, system, replica)

    dir = property(lambda self: self.out / CAMPAIGN_DIR)
    logs = property(lambda self: self.dir / "logs")
    report = property(lambda self: self.out / REPORT_DIR)
    submissions_json = property(lambda self: self.dir / "submissions.json")
    last_campaign_json = property(lambda self: self.dir / "last_campaign.json")

    # a model's files are named by its run folder's name (MODULE@CALLABLE for MODULE:CALLABLE)
    def state_json(self, model: str, system: str) -> Path:
        return self.dir / "state" / model_folder(model) / f"{system}.json"

    def pair_lock(self, model: str, system: str) -> Path:
        return self.dir / "locks" / f"{model_folder(model)}__{system}.lock"

    def pair_log(self, model: str, system: str) -> Path:
        return self.logs / f"{model_folder(model)}__{system}.log"

    def pack_log(self, model: str, task: int) -> Path:
        """The shared driver's log of a packed task."""
        return self.logs / f"pack-{model_folder(model)}-task{task}.log"

    def pack_task_log(self, model: str, task: int) -> Path:
        """The campaign-task process's own output for a packed task (local executor)."""
        return self.logs / f"{model_folder(model)}__pack{task}.log"

    def job_list(self, stamp: str) -> Path:
        return self.dir / f"jobs-{stamp}.tsv"

    def array_script(self, stamp: str) -> Path:
        return self.dir / f"array-{stamp}.sbatch"
