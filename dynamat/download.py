"""Fetch the public DynaMat v1.0 reference trajectories into a local cache.

The file is published on figshare (file 66309926) and listed with its md5 in Matbench-discovery's
``data-files.yml``. :func:`download` streams it into ``<dest>.part`` (resuming a broken transfer with
an HTTP Range request), checks the md5 and that it is an HDF5 reference in the published layout, and
only then renames it onto ``dest`` atomically, so the final path either holds a verified file or what
it held before. The transfer is standard library only (urllib); the layout check reads with h5py.

Command line: ``dynamat data download [--url URL] [--md5 HEX|none] [--dest PATH] [--force]`` and
``dynamat data path``.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import socket
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, TextIO

from dynamat.errors import DynamatError

FIGSHARE_FILE_ID = 66309926
REFERENCE_FILENAME = "2026-06-29-dynamat-v1.0-reference-trajectories.h5"
REFERENCE_MD5 = "09d32104888b9639599a15d3ecb124cb"
REFERENCE_URL = f"https://figshare.com/ndownloader/files/{FIGSHARE_FILE_ID}"

CACHE_ENV = "DYNAMAT_CACHE"
PART_SUFFIX = ".part"
CHUNK_SIZE = 1 << 20
DEFAULT_TIMEOUT_S = 60.0
USER_AGENT = "dynamat (+https://github.com/; python urllib)"

_MD5_RE = re.compile(r"^[0-9a-fA-F]{32}$")
_CONTENT_RANGE_RE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)

ProgressFn = Callable[..., None]
LogFn = Callable[[str], None]


# --------------------------------------------------------------------------------------------- paths


def cache_dir() -> Path:
    """The cache folder: ``$DYNAMAT_CACHE`` if set and non-empty, else ``~/.cache/dynamat``."""
    env = os.environ.get(CACHE_ENV, "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "dynamat"


def reference_cache_path() -> Path:
    """Where ``dynamat data download`` puts the reference file by default (it may not exist)."""
    return cache_dir() / REFERENCE_FILENAME


def default_reference_path() -> Path | None:
    """The downloaded DynaMat v1.0 reference file if it is in the cache, else None.

    Only verified files are ever renamed onto this path, so presence is taken as validity
    (the file is several GB; it is not re-hashed on every call).
    """
    path = reference_cache_path()
    return path if path.is_file() else None


def part_path(dest: Path) -> Path:
    """The partial-download file next to ``dest``."""
    dest = Path(dest)
    return dest.with_name(dest.name + PART_SUFFIX)


# ------------------------------------------------------------------------------------ pure helpers


def normalize_md5(value: str | None) -> str | None:
    """A lower-case 32-hex md5, or None for ``none`` (skip the check). Raises ValueError otherwise."""
    if value is None:
        return None
    value = value.strip()
    if value.lower() in ("none", "skip", ""):
        return None
    if not _MD5_RE.match(value):
        raise ValueError(f"not an md5 checksum (32 hex digits) or 'none': {value!r}")
    return value.lower()


def file_md5(path: Path, chunk_size: int = CHUNK_SIZE) -> str:
    h = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk_size), b""):
            h.update(block)
    return h.hexdigest()


def parse_content_range(value: str | None) -> tuple[int, int, int | None] | None:
    """``bytes START-END/TOTAL`` -> (start, end, total or None); None when absent or malformed."""
    if not value:
        return None
    m = _CONTENT_RANGE_RE.match(value)
    if not m:
        return None
    total = None if m.group(3) == "*" else int(m.group(3))
    return int(m.group(1)), int(m.group(2)), total


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


def format_progress(done: int, total: int | None, rate: float | None) -> str:
    """``12.0 MiB / 48.0 MiB  25.0%  3.1 MiB/s`` (total or rate left out when unknown)."""
    text = format_bytes(done)
    if total:
        text += f" / {format_bytes(total)}  {100.0 * done / total:5.1f}%"
    if rate is not None:
        text += f"  {format_bytes(rate)}/s"
    return text


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


# ---------------------------------------------------------------------------------------- progress


class Progress:
    """Progress on a stream: one rewritten line on a TTY, else a plain line every ``every_s`` seconds.

    Called as ``progress(done, total, finished=False)``; ``done`` counts bytes of the whole file
    (resumed bytes included); the rate counts only the bytes fetched in this session.
    """

    def __init__(self, stream: TextIO | None = None, tty: bool | None = None,
                 every_s: float | None = None, clock: Callable[[], float] = time.monotonic):
        self.stream = stream if stream is not None else sys.stderr
        if tty is None:
            isatty = getattr(self.stream, "isatty", None)
            tty = bool(isatty and isatty())
        self.tty = tty
        self.every_s = every_s if every_s is not None else (0.2 if tty else 5.0)
        self.clock = clock
        self._t0: float | None = None
        self._start_bytes = 0
        self._last = float("-inf")
        self._width = 0

    def __call__(self, done: int, total: int | None, finished: bool = False) -> None:
        now = self.clock()
        if self._t0 is None:
            self._t0, self._start_bytes = now, done
        if not finished and now - self._last < self.every_s:
            return
        self._last = now
        elapsed = now - self._t0
        rate = (done - self._start_bytes) / elapsed if elapsed > 0 else None
        line = "  " + format_progress(done, total, rate)
        if self.tty:
            pad = " " * max(0, self._width - len(line))
            self._width = len(line)
            self.stream.write("\r" + line + pad + ("\n" if finished else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


# ---------------------------------------------------------------------------------------- download


def _open(url: str, offset: int, timeout: float):
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"})
    if offset > 0:
        req.add_header("Range", f"bytes={offset}-")
    try:
        return urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset > 0:
            exc.close()
            return None  # the .part is no prefix the server knows: caller starts afresh
        exc.close()
        raise DynamatError(f"download failed: HTTP {exc.code} {_one_line(exc.reason)} for {url}") from None
    except urllib.error.URLError as exc:
        raise DynamatError(f"download failed: cannot reach {url}: {_one_line(exc.reason)}") from None
    except (OSError, http.client.HTTPException) as exc:
        raise DynamatError(f"download failed: cannot reach {url}: {_one_line(exc) or type(exc).__name__}") from None


def _write_error(path: Path, exc: OSError) -> DynamatError:
    why = exc.strerror or _one_line(exc) or type(exc).__name__
    return DynamatError(f"cannot write {path}: {why} (set ${CACHE_ENV} or pass --dest)")


def download(url: str, dest: Path, md5: str | None = REFERENCE_MD5, *, progress: ProgressFn | None = None,
             force: bool = False, timeout: float = DEFAULT_TIMEOUT_S, chunk_size: int = CHUNK_SIZE,
             log: LogFn | None = None) -> Path:
    """Fetch ``url`` to ``dest`` and return ``dest``.

    * ``dest`` already present: kept without a request when its md5 matches (or ``md5`` is None),
      unless ``force``; a present file with a wrong md5 is deleted and fetched again. With ``force``
      the old file stays until a verified new one replaces it.
    * A ``dest.part`` left by a broken transfer is resumed with ``Range: bytes=N-``; a server that
      answers 200 (ignores Range) or 416, or a 206 starting elsewhere, restarts from byte 0.
    * The md5 is checked on the complete ``.part`` before ``os.replace`` onto ``dest``; on a mismatch
      the ``.part`` is deleted and nothing is left at ``dest``.
    * So is the layout (an HDF5 file whose systems pass the reference readers' checks): a mirror's
      error page that arrives with ``md5=None`` is deleted, and an earlier file at ``dest`` stays.
    * An interrupted transfer keeps the ``.part`` so that a rerun resumes.

    Raises DynamatError (one line) for network and HTTP errors, short transfers, checksum mismatch
    and unwritable destinations.
    """
    dest = Path(dest).expanduser()
    md5 = normalize_md5(md5)
    part = part_path(dest)
    say = log or (lambda _msg: None)

    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _write_error(dest.parent, exc) from None

    if dest.is_file() and not force:
        if md5 is None:
            problem = _not_a_reference(dest)
            if not problem:
                say(f"{dest} already present (checksum not checked); use --force to fetch again")
                return dest
            say(f"{dest} is no reference file ({problem}); fetching again")
        if file_md5(dest) == md5:
            say(f"{dest} already present, md5 ok")
            return dest
        say(f"{dest} has a wrong md5; removing it and fetching again")
        _unlink(dest)
    if force:
        _unlink(part)

    for _attempt in range(3):  # 2nd/3rd only after the server refused to resume (200/416/odd 206)
        offset = part.stat().st_size if part.is_file() else 0
        resp = _open(url, offset, timeout)
        if resp is None:  # 416
            say(f"server refused to resume from byte {offset}; starting afresh")
            _unlink(part)
            continue
        with resp:
            status = getattr(resp, "status", None) or resp.getcode()
            length = resp.headers.get("Content-Length")
            length = int(length) if length and length.isdigit() else None
            if offset > 0 and status == 206:
                crange = parse_content_range(resp.headers.get("Content-Range"))
                if crange is None or crange[0] != offset:
                    say(f"server resumed at an unexpected position ({resp.headers.get('Content-Range')}); "
                        "starting afresh")
                    _unlink(part)
                    continue
                total = crange[2] if crange[2] is not None else (offset + length if length is not None else None)
                say(f"resuming {dest.name} from {format_bytes(offset)}")
            elif status in (200, 203) or (offset == 0 and status == 206):
                if offset > 0:
                    say("server ignored the Range request; downloading from the start")
                offset = 0
                crange = parse_content_range(resp.headers.get("Content-Range")) if status == 206 else None
                total = crange[2] if crange else length
            else:
                raise DynamatError(f"download failed: unexpected HTTP {status} for {url}")
            _fetch(resp, part, offset, total, url, timeout, chunk_size, progress)
        break
    else:
        raise DynamatError(f"download failed: {url} does not resume and a fresh start was refused")

    got = file_md5(part)
    if md5 is not None and got != md5:
        _unlink(part)
        raise DynamatError(f"checksum mismatch for {url}: expected md5 {md5}, got {got}; "
                           "the download was deleted (check --url/--md5)")
    problem = _not_a_reference(part)
    if problem:
        _unlink(part)
        kept = f"; {dest} is unchanged" if dest.is_file() else ""
        raise DynamatError(f"{url} sent no DynaMat reference file: {problem}; the download was deleted{kept}")
    try:
        os.replace(part, dest)
    except OSError as exc:
        raise _write_error(dest, exc) from None
    say(f"md5 {got} ok" if md5 is not None else f"md5 {got} (not checked)")
    return dest


def _not_a_reference(path: Path) -> str:
    """Why ``path`` is not a reference file in the published layout, or "" when it is one."""
    from dynamat.io.reference_h5 import check_reference_file

    try:
        check_reference_file(path)
    except DynamatError as exc:
        return _one_line(str(exc).replace(f"{path}: ", "").replace(str(path), "it"))
    return ""


def _fetch(resp, part: Path, offset: int, total: int | None, url: str, timeout: float,
           chunk_size: int, progress: ProgressFn | None) -> None:
    """Stream ``resp`` into ``part`` (appending from ``offset``, else truncating)."""
    done = offset
    try:
        fh = open(part, "ab" if offset > 0 else "wb")
    except OSError as exc:
        raise _write_error(part, exc) from None
    with fh:
        if progress:
            progress(done, total)
        while True:
            try:
                block = resp.read(chunk_size)
            except (OSError, http.client.HTTPException, socket.timeout) as exc:
                _flush(fh, part)
                raise DynamatError(
                    f"download interrupted after {format_bytes(done)} ({_one_line(exc) or type(exc).__name__}); "
                    f"rerun to resume from {part}") from None
            if not block:
                break
            try:
                fh.write(block)
            except OSError as exc:
                raise _write_error(part, exc) from None
            done += len(block)
            if progress:
                progress(done, total)
        _flush(fh, part)
    if total is not None and done != total:
        if done > total:
            _unlink(part)
            raise DynamatError(f"download failed: {url} sent {done} bytes, more than the {total} announced")
        raise DynamatError(f"download interrupted at {format_bytes(done)} of {format_bytes(total)}; "
                           f"rerun to resume from {part}")
    if progress:
        progress(done, total if total is not None else done, finished=True)


def _flush(fh, part: Path) -> None:
    try:
        fh.flush()
        os.fsync(fh.fileno())
    except OSError as exc:
        raise _write_error(part, exc) from None


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise _write_error(path, exc) from None
