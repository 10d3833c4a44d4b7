"""The files the supervisor (``dynamat``) and the driver exchange, defined once for both sides.

Standard library only: the server wing imports this module from the driver package (the driver never
imports the server wing). Every record is checked the same way on both sides: a field that is not
in its schema, a required field that is missing, or a value of the wrong type is refused
(:class:`ContractError`), by the writer before the file exists and by the reader after.

Pack folder (``dynamat-driver --pack-dir DIR``, :mod:`dynamat_driver.pack` and
:mod:`dynamat.engines.pack`):

* ``<name>.request.json`` — a run asks for a session (:data:`REQUEST_FIELDS`); the driver renames
  it ``<name>.active.json`` when it takes it;
* ``<name>.done.json`` — the driver's word on how the session ended (:data:`DONE_FIELDS`);
* ``stop`` — the supervisor asks the driver to exit once no session is left;
* ``pack.json`` — the driver's status and counters (:data:`PACK_STATUS_FIELDS`).

Run folder: ``socket.json`` — where a driver started elsewhere connects to the run's i-PI, over
TCP (:data:`SOCKET_FILE_FIELDS`); the frame record (``dynamat-driver --record FILE``, its name in
``dynamat.layout``): :data:`FRAMES_MAGIC` and the atom count, then one record per written MD step
(:func:`frame_record_floats`).
"""

from __future__ import annotations

import json
from pathlib import Path

from .files import write_json_atomic

REQUEST, ACTIVE, DONE, STOP, STATUS_FILE = ".request.json", ".active.json", ".done.json", "stop", "pack.json"
SOCKET_FILE = "socket.json"

#: The frame record's first 8 bytes; an int64 atom count N follows, then fixed-size records of
#: little-endian float64, in the units i-PI exchanges over its socket, exactly as they crossed it:
#: MD step, i-PI's cell h (9, bohr, row-major: lattice vectors as columns), positions (3N, bohr),
#: potential energy (hartree), forces (3N, hartree/bohr), virial (9, hartree).
FRAMES_MAGIC = b"DMFRAME1"
FRAMES_HEADER_BYTES = 16


def frame_record_floats(n_atoms: int) -> int:
    """float64 values per record of the frame record (step, h, positions, energy, forces, virial)."""
    return 1 + 9 + 3 * n_atoms + 1 + 3 * n_atoms + 9


class ContractError(ValueError):
    """A record that does not follow its schema."""


_NUM = (int, float)

#: field -> (accepted types, required). Exactly one of ``socket`` (a unix socket path) and ``inet``
#: (``HOST:PORT``) says where the run's i-PI listens.
REQUEST_FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {
    "run_dir": ((str,), False),  # the run served (for a reader of the folder)
    "timing_file": ((str,), True),  # the session's own timing file (dynamat_driver.timing)
    "log_file": ((str,), True),  # the session's lines go there
    "connect_timeout": (_NUM, True),  # seconds to keep retrying the connection to i-PI
    "socket": ((str,), False),
    "inet": ((str,), False),
    "stress_stride": ((int,), False),  # see dynamat-driver --stress-stride, --first-step, --beads
    "first_step": ((int,), False),
    "beads": ((int,), False),
    "template": ((str,), False),  # structure file giving the species when i-PI sends none
    "timing_every": ((int,), False),
    "server_timeout": (_NUM, False),  # seconds of server silence that end the session
    "record": ((str,), False),  # the frame record file (dynamat-driver --record); needs stress_stride
}
DONE_STATUSES = ("exit", "closed", "error")  # EXIT received, socket closed between messages, failed
DONE_FIELDS = {"status": ((str,), True), "error": ((str, type(None)), True)}
PACK_STATUSES = ("loading", "serving", "finished", "stopped")
PACK_STATUS_FIELDS = {
    "status": ((str,), True),
    "pid": ((int,), True),
    "why": ((str,), False),  # status "stopped": why the driver stopped
    "model": ((str,), False),
    "shared_model_calls": ((bool,), False),
    "sessions_served": ((int,), False),
    "sessions_now": ((int,), False),
    "model_calls": ((int,), False),
    "structures_evaluated": ((int,), False),
    "structures_per_call_mean": ((*_NUM, type(None)), False),
    "calls_by_structures": ((dict,), False),
    "evaluation_seconds": (_NUM, False),
    "wall_seconds": (_NUM, False),
    "structures_per_second": ((*_NUM, type(None)), False),
}
SOCKET_FILE_FIELDS = {
    "mode": ((str,), True),  # "inet"
    "host": ((str,), True),
    "port": ((int,), True),
    "unix": ((str,), False),  # a relay (dynamat.campaign.bridge): the i-PI unix socket it forwards to
    "driver_command": ((list,), False),  # a relay: the driver it started
    "server_host": ((str,), False),  # a relay: the host i-PI runs on
    "time": (_NUM, False),
}


def check(record: object, fields: dict, what: str) -> dict:
    """``record`` itself if it follows ``fields`` (see the module docstring), else ContractError."""
    if not isinstance(record, dict):
        raise ContractError(f"{what}: not a JSON object")
    unknown = sorted(set(record) - set(fields))
    if unknown:
        raise ContractError(f"{what}: unknown field(s) {', '.join(unknown)}")
    for key, (types, required) in fields.items():
        if key not in record:
            if required:
                raise ContractError(f"{what}: missing field {key!r}")
            continue
        value = record[key]
        # bool is an int to Python, never to this contract
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise ContractError(f"{what}: field {key!r} is {value!r}, not {'/'.join(t.__name__ for t in types)}")
    return record


def check_request(record: object) -> dict:
    check(record, REQUEST_FIELDS, "session request")
    if ("socket" in record) == ("inet" in record):
        raise ContractError("session request: give exactly one of 'socket' and 'inet'")
    return record


def check_done(record: object) -> dict:
    check(record, DONE_FIELDS, "session end record")
    if record["status"] not in DONE_STATUSES:
        raise ContractError(f"session end record: status {record['status']!r} is not one of {DONE_STATUSES}")
    return record


def check_pack_status(record: object) -> dict:
    check(record, PACK_STATUS_FIELDS, STATUS_FILE)
    if record["status"] not in PACK_STATUSES:
        raise ContractError(f"{STATUS_FILE}: status {record['status']!r} is not one of {PACK_STATUSES}")
    return record


def check_socket_file(record: object) -> dict:
    check(record, SOCKET_FILE_FIELDS, SOCKET_FILE)
    if record["mode"] != "inet" or not 0 < record["port"] < 65536:
        raise ContractError(f"{SOCKET_FILE}: wants mode 'inet' and a port in 1..65535, got {record!r}")
    return record


def read_json(path: str | Path, checker) -> dict:
    """The record at ``path``, checked; ContractError for a file that is not valid JSON (OSError passes)."""
    text = Path(path).read_text()
    try:
        record = json.loads(text)
    except ValueError as exc:
        raise ContractError(f"{Path(path).name}: not JSON ({exc})") from None
    return checker(record)


def write_socket_file(run_dir: str | Path, host: str, port: int, **relay) -> Path:
    """``run_dir/socket.json``: where a driver connects (``--inet HOST:PORT``)."""
    path = Path(run_dir) / SOCKET_FILE
    write_json_atomic(path, check_socket_file({"mode": "inet", "host": host, "port": int(port), **relay}))
    return path


def read_socket_file(run_dir: str | Path) -> dict:
    return read_json(Path(run_dir) / SOCKET_FILE, check_socket_file)
