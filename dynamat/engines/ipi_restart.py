"""i-PI restart points and outputs in a run folder: which restart file can be trusted, a last-good
copy that a kill cannot leave half-written, and outputs trimmed back to the restart step.

i-PI rewrites its checkpoint (``<prefix>.chk``) and its soft-exit ``RESTART`` in place (after its
first write in a process it truncates the file and writes it again), so a kill at the wrong moment
leaves the only restart point half-written. The supervisor therefore copies every complete one it
sees to :data:`LAST_GOOD` (temporary file, then ``os.replace``: the copy is always whole).
"""

from __future__ import annotations

import os
import re
import struct
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

from dynamat.errors import DynamatError
from dynamat.files import write_bytes_atomic
from dynamat_driver.contract import FRAMES_HEADER_BYTES, FRAMES_MAGIC, frame_record_floats
from dynamat.layout import LAST_GOOD  # our atomic copy of the newest complete restart point i-PI wrote

_STEP = re.compile(rb"Step:\s*(\d+)")


def checkpoint_step(path: Path | None) -> int | None:
    """The MD step an i-PI restart file resumes from, or None when it is not a complete one (a file cut
    short by a kill does not parse; the checkpoint i-PI writes before its first step has no ``<step>``)."""
    if path is None:
        return None
    try:
        return _step_of(path.read_bytes())
    except OSError:
        return None


class LastGoodKeeper:
    """Watches ``sources`` (RESTART, the checkpoint) and copies each new complete one to ``LAST_GOOD``."""

    def __init__(self, run_dir: Path, sources: tuple[str, ...]):
        self.run_dir = run_dir
        self.sources = sources
        self.seen: dict[str, tuple[int, int]] = {}
        self.best = checkpoint_step(run_dir / LAST_GOOD)

    def check(self) -> None:
        for name in self.sources:
            path = self.run_dir / name
            try:
                st = path.stat()
            except OSError:
                continue
            sig = (st.st_mtime_ns, st.st_size)
            if self.seen.get(name) == sig:
                continue
            try:
                data = path.read_bytes()
            except OSError:
                continue
            step = _step_of(data)
            if step is None:
                continue  # being written: looked at again on the next poll
            self.seen[name] = sig
            if self.best is None or step >= self.best:
                write_bytes_atomic(self.run_dir / LAST_GOOD, data, fsync=True)
                self.best = step


def _step_of(data: bytes) -> int | None:
    try:
        root = ET.fromstring(data)
    except ET.ParseError:
        return None
    node = root.find("step") if root.tag == "simulation" else None
    try:
        return int(node.text.strip())  # type: ignore[union-attr]
    except (AttributeError, TypeError, ValueError):
        return None


def trim_outputs(run_dir: Path, prefix: str, step: int) -> list[str]:
    """Cuts every i-PI output (``<prefix>.*``: properties and trajectories, every bead) back to its frames
    at or before ``step``, the restart point i-PI is about to resume from: i-PI appends from the next
    frame on, so any reader (ASE, OVITO, MDAnalysis) then sees each step once. A trimmed copy replaces
    the file atomically; a frame at or before ``step`` is never dropped, a file of unknown form never
    touched. Returns the names of the files trimmed."""
    _check_outputs_reach(run_dir, prefix, step)
    trimmed = []
    for path in sorted(run_dir.glob(f"{prefix}.*")):
        if not path.is_file() or path.suffix in (".chk", ".trim"):
            continue
        keep = _keep_bytes(path, step)
        if keep is not None and keep < path.stat().st_size:
            _copy_head(path, keep)
            trimmed.append(path.name)
    return trimmed


def _frame_steps(path: Path) -> list[int] | None:
    """The MD steps of the complete frames of an output (properties, (ext)xyz, i-PI binary, the driver's
    frame record), up to the first that is not one (an empty file: none); None: not such a file."""
    with open(path, "rb") as fh:
        frames = _frames_of(path, fh)
        return None if frames is None else [s for s, _ in frames if s is not None]


def _frames_of(path: Path, fh) -> Iterator[tuple[int | None, int]] | None:
    """The frame reader of ``path``'s format, yielding (MD step or None for a header line, offset after the
    frame); None for a file of unknown form, never read further."""
    if path.suffix == ".bin":
        return _bin_frames(fh)
    if fh.read(len(FRAMES_MAGIC)) == FRAMES_MAGIC:
        return _record_frames(fh)
    fh.seek(0)
    first = fh.readline()
    fh.seek(0)
    if first.startswith(b"#"):
        return _property_rows(fh) if b"--> step" in first else None
    if first.strip().isdigit():
        return _xyz_frames(fh)
    return None if first else iter(())


def _check_outputs_reach(run_dir: Path, prefix: str, step: int) -> None:
    """Every output (properties, trajectories, the driver's frame record) holds its frames up to the restart
    point ``step``, with
    no gap: i-PI appends after that step, so a file cut short (or blanked, or overwritten) before it would
    leave a hole in the trajectory that no reader sees. Refused in one line, the folder untouched."""
    for path in sorted(run_dir.glob(f"{prefix}.*")):
        if not path.is_file() or path.suffix in (".chk", ".trim"):
            continue
        steps = _frame_steps(path)
        if steps is None:
            continue
        kept = [s for s in steps if s <= step]
        stride = kept[1] - kept[0] if len(kept) >= 2 else None
        # the good part ends at the first gap: a row or frame lost in the middle ends it there
        gap = next((k for k in range(1, len(kept)) if kept[k] - kept[k - 1] != stride), len(kept))
        whole = bool(kept) and kept[0] == 0 and (stride is None or stride > 0 and gap == len(kept)
                                                 and kept[-1] + stride > step)
        if not whole:
            last = f"its frames end at step {kept[gap - 1]}" if kept else "it holds no complete frame"
            raise DynamatError(f"{path} is damaged: {last}, before the restart point at step {step} it must "
                               "reach to resume without a gap; restore it, or --overwrite to start again")


def _keep_bytes(path: Path, step: int) -> int | None:
    """How many leading bytes of ``path`` hold its frames at or before ``step`` (and its header); None: not
    a file we read."""
    with open(path, "rb") as fh:
        frames = _frames_of(path, fh)
        if frames is None:
            return None
        keep = 0
        for s, end in frames:
            if s is None and not end:  # not a frame: a file of unknown form if it is the first
                return keep or None
            if s is not None and s > step:
                break
            keep = end
        return keep


def _property_rows(fh) -> Iterator[tuple[int | None, int]]:
    """(MD step, or None for a header or blank line; offset after it) of each complete line of a properties
    file, up to the first row cut short by a kill or not starting with a number."""
    for line in iter(fh.readline, b""):
        if not line.endswith(b"\n"):
            return
        step = None
        if not line.startswith(b"#") and line.strip():
            try:
                step = int(float(line.split()[0]))
            except ValueError:
                return
        yield step, fh.tell()


def _xyz_frames(fh) -> Iterator[tuple[int | None, int]]:
    """(MD step from the comment's ``Step: n``, offset after the frame) of each complete (ext)xyz frame,
    up to the first cut short; a frame that is not one (no atom count, no step) yields (None, 0) and ends."""
    while True:
        count = fh.readline()
        if not count.strip():
            return
        try:
            n = int(count)
        except ValueError:
            yield None, 0
            return
        m = _STEP.search(fh.readline())
        if m is None:
            yield None, 0
            return
        lines = [fh.readline() for _ in range(n)]
        if n and not lines[-1].endswith(b"\n"):
            return
        yield int(m.group(1)), fh.tell()


def _bin_frames(fh) -> Iterator[tuple[int | None, int]]:
    """(MD step from the title's ``Step: n``, offset after the frame) of each complete i-PI binary frame
    (fixed size, :func:`dynamat.io.ipi_output.bin_frame_layout`); a layout not read yields (None, 0)."""
    from dynamat.io.ipi_output import read_bin_layout

    try:
        _, size, title_at = read_bin_layout(fh)
    except ValueError:
        yield None, 0
        return
    total = fh.seek(0, 2)
    at = 0
    while at + size <= total:
        fh.seek(at + title_at)
        m = _STEP.search(fh.read(size - title_at).decode("utf-32-le", errors="replace").encode())
        if m is None:
            return
        at += size
        yield int(m.group(1)), at


def _record_frames(fh) -> Iterator[tuple[int | None, int]]:
    """The driver's frame record (:mod:`dynamat_driver.frames`): its header as (None, header bytes), then
    (MD step, offset after it) of each complete record (each starts with its step, float64)."""
    fh.seek(8)
    n = int.from_bytes(fh.read(8), "little", signed=True)
    if n <= 0:
        yield None, 0
        return
    yield None, FRAMES_HEADER_BYTES
    size = 8 * frame_record_floats(n)
    total = fh.seek(0, 2)
    at = FRAMES_HEADER_BYTES
    while at + size <= total:
        fh.seek(at)
        step = struct.unpack("<d", fh.read(8))[0]
        at += size
        yield int(step), at


def _copy_head(path: Path, nbytes: int) -> None:
    tmp = path.with_name(path.name + ".trim")
    with open(path, "rb") as src, open(tmp, "wb") as dst:
        left = nbytes
        while left:
            chunk = src.read(min(left, 1 << 20))
            if not chunk:
                break
            dst.write(chunk)
            left -= len(chunk)
        dst.flush()
        os.fsync(dst.fileno())
    os.replace(tmp, path)


def is_damaged(path: Path) -> bool:
    """``path`` exists but is not a complete i-PI XML file (cut short, or not i-PI's)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return False
    except OSError:
        return True
    try:
        return ET.fromstring(data).tag != "simulation"
    except ET.ParseError:
        return True
