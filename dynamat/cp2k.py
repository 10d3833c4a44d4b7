"""CP2K as i-PI's force client for ``dynamat reference generate --engine cp2k``.

CP2K's ``RUN_TYPE DRIVER`` connects to i-PI's unix socket ``/tmp/ipi_<HOST>`` (a prefix fixed in CP2K's
sockets.c), so the supervisor's private socket folder is made as ``/tmp/ipi_dm-XXXX`` and CP2K gets
``HOST dm-XXXX/s``. CP2K runs in the run folder (PROJECT ``cp2k``: ``cp2k.inp``, ``cp2k.out``, ``cp2k-*``);
its input is rewritten for every attempt, as the socket changes.

Default input (:data:`DEFAULT_TEMPLATE`): PBE, GTH pseudopotentials (``GTH-PBE``), DZVP-MOLOPT-SR-GTH
basis, plane-wave CUTOFF 400 Ry with REL_CUTOFF 50 Ry, OT/DIIS SCF to EPS_SCF 1e-6, Γ point only (use a
supercell of >= ~10 Å), analytical stress; D3(BJ) (``dftd3.dat``, PBE parameters) for the
``molecular crystal`` class, as in the paper. OT suits insulators and semiconductors: a metal needs a
template with smearing. ``--cp2k-input TEMPLATE`` replaces it: a CP2K input in which dynamat fills
``${DM_HOST}`` (required), ``${DM_CELL}`` (A/B/C lines), ``${DM_COORD}`` (element x y z lines, Å) and
``${DM_KINDS}`` (a &KIND block per element with the default basis and potential).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from string import Template

import ase

from dynamat import processes
from dynamat.errors import DynamatError
from dynamat.files import write_text_atomic
from dynamat.layout import CP2K_PROJECT, RunFolder

INSTALL_HINT = ("install it with `apt-get install cp2k cp2k-data` (Debian/Ubuntu) or `conda install -c conda-forge "
                "cp2k`, or set DYNAMAT_CP2K to the cp2k.psmp to use")
SCF_FAILED = "SCF run NOT converged"

D3_BJ = """    &XC
      &XC_FUNCTIONAL PBE
      &END XC_FUNCTIONAL
      &VDW_POTENTIAL
        POTENTIAL_TYPE PAIR_POTENTIAL
        &PAIR_POTENTIAL
          TYPE DFTD3(BJ)
          PARAMETER_FILE_NAME dftd3.dat
          REFERENCE_FUNCTIONAL PBE
        &END PAIR_POTENTIAL
      &END VDW_POTENTIAL
    &END XC"""
PBE = """    &XC
      &XC_FUNCTIONAL PBE
      &END XC_FUNCTIONAL
    &END XC"""

DEFAULT_TEMPLATE = """&GLOBAL
  PROJECT cp2k
  RUN_TYPE DRIVER
  PRINT_LEVEL LOW
&END GLOBAL
&MOTION
  &DRIVER
    HOST ${DM_HOST}
    PORT 0
    UNIX
  &END DRIVER
&END MOTION
&FORCE_EVAL
  METHOD QS
  STRESS_TENSOR ANALYTICAL
  &DFT
    BASIS_SET_FILE_NAME BASIS_MOLOPT
    POTENTIAL_FILE_NAME GTH_POTENTIALS
    &MGRID
      CUTOFF 400
      REL_CUTOFF 50
    &END MGRID
    &SCF
      SCF_GUESS ATOMIC
      EPS_SCF 1.0E-6
      MAX_SCF 50
      &OT
        MINIMIZER DIIS
        PRECONDITIONER FULL_SINGLE_INVERSE
      &END OT
      &OUTER_SCF
        EPS_SCF 1.0E-6
        MAX_SCF 10
      &END OUTER_SCF
    &END SCF
${DM_XC}
  &END DFT
  &SUBSYS
    &CELL
${DM_CELL}
    &END CELL
    &COORD
${DM_COORD}
    &END COORD
${DM_KINDS}
  &END SUBSYS
&END FORCE_EVAL
"""


def cp2k_executable() -> str:
    """The CP2K binary: $DYNAMAT_CP2K, else cp2k.psmp or cp2k on PATH; one line saying how to install it."""
    named = os.environ.get("DYNAMAT_CP2K")
    if named:
        path = shutil.which(named)
        if path is None:
            raise DynamatError(f"DYNAMAT_CP2K={named} is not an executable; {INSTALL_HINT}")
        return path
    for name in ("cp2k.psmp", "cp2k.ssmp", "cp2k"):
        if path := shutil.which(name):
            return path
    raise DynamatError(f"--engine cp2k needs CP2K, which is not installed (no cp2k.psmp or cp2k on PATH); {INSTALL_HINT}")


def cp2k_version(exe: str) -> str:
    """``CP2K version 2023.1`` as the binary reports it, or ``unknown``."""
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    m = re.search(r"CP2K version\s+(\S+)", out)
    return m.group(1) if m else "unknown"


def cell_lines(atoms: ase.Atoms) -> str:
    return "\n".join(f"      {ax} {v[0]:.10f} {v[1]:.10f} {v[2]:.10f}" for ax, v in zip("ABC", atoms.cell[:]))


def coord_lines(atoms: ase.Atoms) -> str:
    return "\n".join(f"      {s} {p[0]:.10f} {p[1]:.10f} {p[2]:.10f}"
                     for s, p in zip(atoms.get_chemical_symbols(), atoms.positions))


def kind_blocks(atoms: ase.Atoms, basis: str = "DZVP-MOLOPT-SR-GTH", potential: str = "GTH-PBE") -> str:
    return "\n".join(f"    &KIND {s}\n      BASIS_SET {basis}\n      POTENTIAL {potential}\n    &END KIND"
                     for s in dict.fromkeys(atoms.get_chemical_symbols()))


def render(template: str, atoms: ase.Atoms, host: str, system_class: str = "") -> str:
    """The CP2K input: ``template`` with dynamat's ``${DM_*}`` filled (others, CP2K's own, left alone)."""
    return Template(template).safe_substitute(
        DM_HOST=host, DM_CELL=cell_lines(atoms), DM_COORD=coord_lines(atoms), DM_KINDS=kind_blocks(atoms),
        DM_XC=D3_BJ if system_class == "molecular crystal" else PBE)


def input_facts(text: str) -> dict:
    """Provenance read from a CP2K input: functional, dispersion, basis, cutoff (Ry), k-points."""
    def first(pattern: str, default: str = "unknown") -> str:
        m = re.search(pattern, text, re.IGNORECASE | re.MULTILINE)
        return m.group(1) if m else default

    basis = sorted(set(re.findall(r"^\s*BASIS_SET\s+(?!FILE)(\S+)", text, re.IGNORECASE | re.MULTILINE)))
    kp = re.search(r"&KPOINTS(.*?)&END", text, re.IGNORECASE | re.DOTALL)
    scheme = first(r"^\s*SCHEME\s+(.+?)\s*$", "") if kp else ""
    return {
        "functional": first(r"&XC_FUNCTIONAL\s+(\w+)"),
        "dispersion": first(r"^\s*TYPE\s+(DFTD\S+)", "none"),
        "basis": " ".join(basis) or "unknown",
        "potential": " ".join(sorted(set(re.findall(r"^\s*POTENTIAL\s+(\S+)", text, re.IGNORECASE | re.MULTILINE))))
        or "unknown",
        "cutoff_Ry": first(r"^\s*CUTOFF\s+([\d.eE+]+)"),
        "rel_cutoff_Ry": first(r"^\s*REL_CUTOFF\s+([\d.eE+]+)"),
        "eps_scf": first(r"^\s*EPS_SCF\s+(\S+)"),
        "kpoints": scheme or "Gamma",
    }


class Cp2kClient:
    """Starts CP2K on an i-PI socket and reads what its output says (the supervisor's force client)."""

    socket_base = "/tmp"  # CP2K prepends /tmp/ipi_ to its HOST
    socket_dir_prefix = "ipi_dm-"

    def __init__(self, atoms: ase.Atoms, system_class: str = "", template: Path | None = None,
                 needs_stress: bool = False):
        self.atoms = atoms.copy()
        self.system_class = system_class
        self.template_path = template
        self.template = DEFAULT_TEMPLATE if template is None else Path(template).read_text()
        if "${DM_HOST}" not in self.template:
            raise DynamatError(f"--cp2k-input {template}: the template must connect to i-PI through HOST ${{DM_HOST}} "
                               "in &MOTION &DRIVER (with UNIX and RUN_TYPE DRIVER)")
        if not re.search(r"RUN_TYPE\s+DRIVER", self.template, re.IGNORECASE):
            raise DynamatError(f"--cp2k-input {template}: the template needs RUN_TYPE DRIVER in &GLOBAL")
        if needs_stress and not re.search(r"^\s*STRESS_TENSOR\s+(ANALYTICAL|NUMERICAL)", self.template,
                                          re.IGNORECASE | re.MULTILINE):
            # without it CP2K sends a zero virial, and i-PI's barostat would squeeze the cell
            raise DynamatError(f"--cp2k-input {template}: --ensemble npt needs the stress on every step: add "
                               "STRESS_TENSOR ANALYTICAL to &FORCE_EVAL")
        self.exe: str | None = None
        self._seen = 0  # bytes of cp2k.out already scanned for an SCF failure

    def check(self) -> None:
        self.exe = cp2k_executable()

    def input_text(self, host: str = "HOST") -> str:
        return render(self.template, self.atoms, host, self.system_class)

    def start(self, run_dir: Path, where: list, tag: str):
        sock = Path(where[where.index("--unix") + 1])
        host = str(sock).removeprefix(f"{self.socket_base}/ipi_")  # CP2K puts /tmp/ipi_ back in front
        rf = RunFolder(run_dir)
        write_text_atomic(rf.cp2k_input, self.input_text(host))
        self._seen = 0
        env = dict(os.environ)
        env.setdefault("OMP_NUM_THREADS", "1")
        return processes.start([self.exe or cp2k_executable(), "-i", rf.cp2k_input.name, "-o", rf.cp2k_output.name],
                               run_dir, rf.driver_log(tag), env=env)

    def fatal(self, run_dir: Path) -> str | None:
        """A failure no restart would cure: CP2K's SCF did not converge."""
        out = RunFolder(run_dir).cp2k_output
        try:
            with open(out, "rb") as fh:
                fh.seek(self._seen)
                new = fh.read().decode(errors="replace")
        except OSError:
            return None
        cut = new.rfind("\n") + 1  # scan whole lines only
        self._seen += len(new[:cut].encode())
        if SCF_FAILED in new[:cut]:
            return (f"CP2K's SCF did not converge ({out.name}: '{SCF_FAILED}'): raise MAX_SCF or loosen EPS_SCF in "
                    "--cp2k-input, or check the structure (atoms too close?)")
        return None

    def exit_message(self, run_dir: Path, tag: str) -> str:
        """Why CP2K stopped: its ABORT line, else the last line of its log."""
        try:
            text = RunFolder(run_dir).cp2k_output.read_text(errors="replace")
        except OSError:
            text = ""
        abort = [ln.strip(" *") for ln in text.splitlines() if "ABORT" in ln or "ERROR" in ln]
        detail = [ln.strip(" *") for ln in text.splitlines()[-40:] if ln.strip(" *") and "ABORT" not in ln
                  and "___" not in ln and "\\" not in ln and "/" not in ln]
        if abort:
            return f"CP2K aborted: {detail[0] if detail else abort[-1]} (see {CP2K_PROJECT}.out)"
        return f"CP2K: {processes.last_line(RunFolder(run_dir).driver_log(tag), 'no message')}"

    def provenance(self) -> dict:
        text = self.input_text()
        exe = self.exe or cp2k_executable()
        return {"reference_code": "CP2K", "code_version": cp2k_version(exe), **input_facts(text),
                "input_text": text, "input_template": str(self.template_path or "dynamat default")}
