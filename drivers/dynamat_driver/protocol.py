"""The i-PI socket protocol, client side (what ``i-pi-py_driver`` does, without importing i-PI).

Messages are 12-byte upper-case headers, followed by raw native-endian binary data:

* ``STATUS``  → the client answers ``NEEDINIT`` (until INIT came), ``HAVEDATA`` (forces computed
  and not yet collected) or ``READY``. i-PI may ask several times before sending INIT.
* ``INIT``    int32 replica id, int32 length, that many bytes of parameter text. i-PI sends its
  ffsocket ``<parameters>`` as flat text (``' species : Cu3Au , template : init.xyz , '``) and
  announces batching by appending ``batch_size:N``. ASE's socket server sends one zero byte.
* ``POSDATA`` single: h (9 float64, lattice vectors as columns, bohr), h⁻¹ (9 float64), int32
  nat, 3·nat float64 positions (bohr). Batched (batch_size N > 1): int32 nat, then N × (h, h⁻¹)
  = 18·N float64, then N × 3·nat float64 positions. A partial batch is padded by i-PI by
  repeating its last structure; every slot must still be answered.
* ``GETFORCE`` → ``FORCEREADY``, then single: float64 energy (hartree), int32 nat, 3·nat float64
  forces (hartree/bohr), 9 float64 virial (hartree), int32 length + extra string; batched:
  N float64 energies, int32 nat, N × 3·nat forces, N × 9 virials, then N × (int32 length + extra).
* ``EXIT``    the client quits. i-PI closing the socket is treated the same way.

In i-PI's default consolidated mode, POSDATA and GETFORCE arrive in one packet; the client
computes on POSDATA and answers on GETFORCE, so it works with and without consolidation.

The server's word is not trusted with the driver's memory or time: every announced size is bounded
before anything is allocated (the atom count by the structure the driver serves once INIT told it,
:data:`MAX_ATOMS` before that; the INIT text by :data:`MAX_INIT_BYTES`; the batch by
:data:`MAX_BATCH`), the receive buffer grows only as bytes actually arrive, a server silent for
longer than the session's ``timeout_s`` (:data:`DEFAULT_SERVER_TIMEOUT_S`) ends it, and so does a
connection closed in the middle of a message. Each of these is a :class:`DriverError` (one line,
non-zero exit); a connection closed between messages, or EXIT, is the normal end.
"""

from __future__ import annotations

import errno
import socket
import struct
import sys
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from . import DriverError

HDRLEN = 12
#: atoms per structure accepted before INIT said which structure is served (24 bytes per atom per
#: structure for positions); after INIT the served structure's own count is the bound
MAX_ATOMS = 1_000_000
#: structures per batched request (i-PI batches beads or replicas: tens, not thousands)
MAX_BATCH = 4096
#: bytes of INIT parameter text (i-PI sends its short ``<parameters>`` text)
MAX_INIT_BYTES = 1 << 20
#: seconds the driver waits for the server's next message before it gives up. Generous: i-PI is
#: legitimately silent while it writes a checkpoint or between steps of a slow run
DEFAULT_SERVER_TIMEOUT_S = 600.0
DEFAULT_SOCKETS_PREFIX = "/tmp/ipi_"
DEFAULT_UNIX_NAME = "dynamat"


def _msg(text: str) -> bytes:
    return text.upper().ljust(HDRLEN).encode()


STATUS, NEEDINIT, READY, HAVEDATA = _msg("status"), _msg("needinit"), _msg("ready"), _msg("havedata")
INIT, POSDATA, GETFORCE, FORCEREADY, EXIT = (
    _msg("init"),
    _msg("posdata"),
    _msg("getforce"),
    _msg("forceready"),
    _msg("exit"),
)

_I32 = np.dtype(np.int32)
_F64 = np.dtype(np.float64)
_INT32 = struct.Struct("=i")  # native byte order, as i-PI writes it


class ServerClosed(Exception):
    """The server closed the connection."""


# --------------------------------------------------------------------------------------------
# INIT parameters
# --------------------------------------------------------------------------------------------


def parse_init_string(text: str | bytes) -> dict[str, str]:
    """Parses i-PI's flat INIT parameter text into a dict of stripped strings.

    ``' species : Cu3Au , template : init.xyz , batch_size:4'`` →
    ``{'species': 'Cu3Au', 'template': 'init.xyz', 'batch_size': '4'}``. Entries are split on
    commas, then on the first colon; entries without a colon are kept under their text with an
    empty value. Braces (a literal ``{...}`` dict text) and NUL bytes (ASE's server) are ignored.
    """
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode("utf-8", errors="replace")
    text = text.replace("\x00", "").strip().strip("{}")
    out: dict[str, str] = {}
    for token in text.split(","):
        key, sep, value = token.partition(":")
        key = key.strip().strip("'\"")
        if not key:
            continue
        out[key] = value.strip().strip("'\"") if sep else ""
    return out


def batch_size_from(params: dict[str, str]) -> int:
    raw = params.get("batch_size", "1") or "1"
    try:
        n = int(raw)
    except ValueError:
        raise DriverError(f"i-PI sent a batch_size that is not an integer: {raw!r}") from None
    if not 1 <= n <= MAX_BATCH:
        raise DriverError(f"i-PI sent batch_size {n}; it must be between 1 and {MAX_BATCH}")
    return n


# --------------------------------------------------------------------------------------------
# addresses and connection
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Address:
    mode: str  # "unix" | "inet"
    path: str = ""  # unix
    host: str = ""  # inet
    port: int = 0  # inet

    def __str__(self) -> str:
        return f"unix:{self.path}" if self.mode == "unix" else f"inet:{self.host}:{self.port}"


def unix_address(name_or_path: str = DEFAULT_UNIX_NAME, prefix: str = DEFAULT_SOCKETS_PREFIX) -> Address:
    """A unix socket: a bare name goes under ``prefix`` (i-PI's ``sockets_prefix``, default
    ``/tmp/ipi_``); a name containing '/' is used as the full path."""
    if not name_or_path:
        raise DriverError("empty unix socket name")
    path = name_or_path if "/" in name_or_path else prefix + name_or_path
    return Address("unix", path=path)


def inet_address(spec: str) -> Address:
    """``HOST:PORT`` (also ``[v6addr]:PORT``) → Address."""
    host, sep, port = spec.rpartition(":")
    if not sep or not host:
        raise DriverError(f"--inet wants HOST:PORT, got {spec!r}")
    host = host.strip("[]")
    try:
        iport = int(port)
    except ValueError:
        raise DriverError(f"--inet wants HOST:PORT with an integer port, got {spec!r}") from None
    if not 0 < iport < 65536:
        raise DriverError(f"port {iport} out of range")
    return Address("inet", host=host, port=iport)


_RETRY_ERRNOS = {errno.ENOENT, errno.ECONNREFUSED, errno.EAGAIN, errno.ECONNRESET, errno.ETIMEDOUT}


def connect(address: Address, timeout_s: float = 10.0, log: Callable[[str], None] | None = None) -> socket.socket:
    """Connects to i-PI, retrying for up to ``timeout_s`` seconds while the server comes up."""
    deadline = time.monotonic() + max(0.0, timeout_s)
    delay = 0.05
    last: Exception | None = None
    tries = 0
    while True:
        tries += 1
        if address.mode == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            target: object = address.path
        else:
            try:
                infos = socket.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM)
            except socket.gaierror as exc:
                raise DriverError(f"cannot resolve host {address.host!r}: {exc.strerror}") from None
            family, _, _, _, target = infos[0]
            sock = socket.socket(family, socket.SOCK_STREAM)
            # i-PI's small messages suffer badly from Nagle's algorithm
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.connect(target)
            if log:
                log(f"connected to {address}" + (f" after {tries} tries" if tries > 1 else ""))
            return sock
        except OSError as exc:
            sock.close()
            last = exc
            if exc.errno not in _RETRY_ERRNOS and not isinstance(exc, (ConnectionRefusedError, FileNotFoundError)):
                break
            if time.monotonic() + delay > deadline:
                break
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)
    reason = last.strerror if isinstance(last, OSError) and last.strerror else str(last)
    raise DriverError(
        f"cannot reach the i-PI server at {address} within {timeout_s:g} s ({reason}); "
        "is i-PI running with a matching <ffsocket> address?"
    )


# --------------------------------------------------------------------------------------------
# the client loop
# --------------------------------------------------------------------------------------------

#: evaluate(cells, positions) -> [(energy, forces (nat,3), virial (3,3), extra str), ...]; all
#: in i-PI atomic units; cells are i-PI's h (columns, bohr), positions (nat, 3) in bohr.
EvaluateFn = Callable[[Sequence[np.ndarray], Sequence[np.ndarray]], list]
#: on_init(params, replica_id, batch_size) is called on INIT; it may return ``(n_atoms, what)``, the
#: atom count of the structure served and where it comes from, which then bounds every POSDATA.
InitFn = Callable[[dict, int, int], "tuple[int, str] | None"]


class _Conn:
    """Buffered exact-size reads from the socket.

    One ``recv_into`` takes whatever the server has sent so far into a reusable buffer, and the
    fields are parsed from there: i-PI's consolidated STATUS + POSDATA + GETFORCE usually arrive
    in one read instead of one system call per field (six per MD step before; measured in
    benchmarks/bench_md_overhead.py). The buffer grows with the bytes that arrive, never to a size
    the server only announced, and a read waits at most ``timeout_s`` (None: for ever)."""

    def __init__(self, sock: socket.socket, timeout_s: float | None = None):
        self.sock = sock
        self.timeout_s = timeout_s
        sock.settimeout(timeout_s)
        self.buf = bytearray(1 << 16)
        self.lo = 0  # first unread byte
        self.hi = 0  # end of the bytes received

    def silent(self) -> DriverError:
        return DriverError(
            f"the server sent nothing for {self.timeout_s:g} s (--server-timeout); is i-PI still running?"
        )

    def _need(self, nbytes: int, at_message_start: bool = False) -> None:
        if self.hi - self.lo >= nbytes:
            return
        if self.lo + nbytes > len(self.buf):  # move the unread bytes to the front
            pending = bytes(self.buf[self.lo : self.hi])
            self.buf[: len(pending)] = pending
            self.lo, self.hi = 0, len(pending)
        while self.hi - self.lo < nbytes:
            if self.hi == len(self.buf):  # full: at most double, for bytes that are arriving
                self.buf.extend(bytes(min(len(self.buf), self.lo + nbytes - len(self.buf))))
            view = memoryview(self.buf)[self.hi :]
            try:
                n = self.sock.recv_into(view)
            except (ConnectionResetError, BrokenPipeError):
                n = 0
            except socket.timeout:
                raise self.silent() from None
            finally:
                view.release()
            if n == 0:
                if at_message_start and self.hi == self.lo:
                    raise ServerClosed("at message start")
                raise DriverError("the server closed the connection in the middle of a message")
            self.hi += n

    def recv_bytes(self, nbytes: int, *, at_message_start: bool = False) -> bytes:
        self._need(nbytes, at_message_start)
        out = bytes(self.buf[self.lo : self.lo + nbytes])
        self.lo += nbytes
        return out

    def recv_array(self, dtype: np.dtype, count: int) -> np.ndarray:
        nbytes = dtype.itemsize * count
        self._need(nbytes)
        out = np.frombuffer(self.buf, dtype=dtype, count=count, offset=self.lo).copy()
        self.lo += nbytes
        return out

    def recv_int(self) -> int:
        self._need(4)
        (value,) = _INT32.unpack_from(self.buf, self.lo)
        self.lo += 4
        return value

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            raise ServerClosed("while sending") from None
        except socket.timeout:
            raise DriverError(f"the server took nothing for {self.timeout_s:g} s (--server-timeout)") from None


def _extra_bytes(extra) -> bytes:
    if not extra:
        return b""
    return extra.encode("utf-8") if isinstance(extra, str) else bytes(extra)


def _check_result(res, nat: int) -> tuple[float, np.ndarray, np.ndarray, bytes]:
    pot, forces, vir, extra = res
    f = np.ascontiguousarray(forces, dtype=np.float64).reshape(-1)
    if f.size != 3 * nat:
        raise DriverError(f"model returned {f.size // 3} forces for {nat} atoms")
    v = np.ascontiguousarray(vir, dtype=np.float64).reshape(-1)
    if v.size != 9:
        raise DriverError("model returned a virial without 9 components")
    return float(pot), f, v, _extra_bytes(extra)


def pack_reply(results: list, nat: int, batched: bool) -> bytes:
    """FORCEREADY and the force payload, single or batched layout."""
    checked = [_check_result(r, nat) for r in results]
    nat_b = np.int32(nat).tobytes()
    if not batched:
        pot, f, v, x = checked[0]
        return b"".join(
            (FORCEREADY, np.float64(pot).tobytes(), nat_b, f.tobytes(), v.tobytes(), np.int32(len(x)).tobytes(), x)
        )
    parts = [FORCEREADY, np.array([c[0] for c in checked], np.float64).tobytes(), nat_b]
    parts.append(np.concatenate([c[1] for c in checked]).tobytes())
    parts.append(np.concatenate([c[2] for c in checked]).tobytes())
    for c in checked:
        parts.append(np.int32(len(c[3])).tobytes())
        parts.append(c[3])
    return b"".join(parts)


@dataclass
class SessionStats:
    n_requests: int = 0  # POSDATA messages
    n_structures: int = 0  # structures received (padding included)
    batch_size: int = 1
    n_atoms: int = 0
    replica_id: int = -1
    init_params: dict | None = None
    reason: str = ""  # "exit" | "closed"
    seconds_waiting: float = 0.0  # blocked waiting for the next POSDATA
    seconds_serving: float = 0.0  # POSDATA received → forces ready (conversion + model)


class ClientSession:
    """One i-PI connection, client side: answers STATUS, INIT, POSDATA, GETFORCE and EXIT.

    The session does not evaluate anything itself: after POSDATA, :attr:`pending` holds the
    ``(cells, positions)`` received, and whoever evaluates (one model per connection in
    :func:`run_client`, or a pack of connections sharing one model in :mod:`dynamat_driver.pack`)
    hands the results back with :meth:`set_results`. A STATUS or GETFORCE that arrives while the
    request is pending is answered as soon as the results are set, as a busy client would.
    """

    def __init__(self, sock: socket.socket, on_init: InitFn | None = None, *, stats: SessionStats | None = None,
                 say: Callable[[str], None] | None = None, timeout_s: float | None = DEFAULT_SERVER_TIMEOUT_S):
        self.sock = sock
        self.conn = _Conn(sock, timeout_s)
        #: (atom count, where it comes from) of the structure served, once INIT told it
        self.expected_atoms: tuple[int, str] | None = None
        self.on_init = on_init
        self.stats = stats if stats is not None else SessionStats()
        self.say = say
        self.initialised = False
        self.batch_n = 1
        self.nat = -1
        self.pending: tuple[list, list] | None = None  # (cells, positions) waiting for results
        self.results: list | None = None  # computed, not yet collected by GETFORCE
        self._getforce_waiting = False
        self._status_waiting = False
        self.done = ""  # "exit" | "closed" once the session has ended
        self._t_wait0 = time.perf_counter()
        self._t_pos = 0.0

    def buffered(self) -> bool:
        """A whole message header is already read from the socket (no system call needed)."""
        return self.conn.hi - self.conn.lo >= HDRLEN

    def _status(self) -> bytes:
        return HAVEDATA if self.results is not None else (READY if self.initialised else NEEDINIT)

    def step(self) -> None:
        """Reads and handles one message; blocks until it is complete. Sets :attr:`done` at the end."""
        try:
            header = self.conn.recv_bytes(HDRLEN, at_message_start=True)
            if header == STATUS:
                if self.pending is not None:
                    self._status_waiting = True
                else:
                    self.conn.send(self._status())
            elif header == POSDATA:
                self._read_positions()
            elif header == GETFORCE:
                if self.results is not None:
                    self._send_forces()
                elif self.pending is not None:
                    self._getforce_waiting = True
                else:
                    raise DriverError("i-PI asked for forces before sending positions")
            elif header == INIT:
                self._read_init()
            elif header == EXIT:
                self.done = self.stats.reason = "exit"
                if self.say:
                    self.say("EXIT received from i-PI")
            else:
                raise DriverError(f"unexpected message from the server: {header!r}")
        except ServerClosed as exc:
            self.done = self.stats.reason = "closed"
            if self.say:
                self.say(f"the server closed the connection ({exc})")

    def _read_init(self) -> None:
        st = self.stats
        rid = self.conn.recv_int()
        length = self.conn.recv_int()
        if not 0 <= length <= MAX_INIT_BYTES:
            raise DriverError(f"i-PI announced {length} bytes of INIT parameters; at most {MAX_INIT_BYTES} are accepted")
        text = self.conn.recv_bytes(length) if length > 0 else b""
        params = parse_init_string(text)
        self.batch_n = batch_size_from(params)
        st.batch_size = self.batch_n
        st.replica_id = rid
        st.init_params = params
        if self.say:
            self.say(f"INIT replica {rid}: {text!r} → batch_size {self.batch_n}")
        if self.on_init is not None:
            self.expected_atoms = self.on_init(params, rid, self.batch_n) or self.expected_atoms
        self.initialised = True
        self._t_wait0 = time.perf_counter()

    def _read_positions(self) -> None:
        if not self.initialised:
            raise DriverError("i-PI sent POSDATA before INIT")
        if self.pending is not None or self.results is not None:
            raise DriverError("i-PI sent new positions before collecting the forces")
        self._t_pos = time.perf_counter()
        self.stats.seconds_waiting += self._t_pos - self._t_wait0
        conn, batch_n = self.conn, self.batch_n
        if batch_n > 1:
            n = self._atom_count(conn.recv_int())
            cellbuf = conn.recv_array(_F64, 18 * batch_n).reshape(batch_n, 2, 3, 3)
            posbuf = conn.recv_array(_F64, 3 * n * batch_n).reshape(batch_n, n, 3)
            cells = [cellbuf[i, 0] for i in range(batch_n)]
            positions = [posbuf[i] for i in range(batch_n)]
        else:
            hh = conn.recv_array(_F64, 18).reshape(2, 3, 3)
            n = self._atom_count(conn.recv_int())
            cells = [hh[0]]
            positions = [conn.recv_array(_F64, 3 * n).reshape(n, 3)]
        if self.nat < 0:
            self.nat = n
            self.stats.n_atoms = n
        elif n != self.nat:
            raise DriverError(f"the number of atoms changed during the run ({self.nat} → {n})")
        self.pending = (cells, positions)

    def _atom_count(self, n: int) -> int:
        """The atom count POSDATA announces, refused before anything is allocated for it unless it
        is the served structure's (or, before that is known, within :data:`MAX_ATOMS`)."""
        if self.expected_atoms is not None:
            want, what = self.expected_atoms
            if n != want:
                raise DriverError(f"i-PI sent {n} atoms but the structure ({what}) has {want}")
        elif not 1 <= n <= MAX_ATOMS:
            raise DriverError(f"i-PI announced {n} atoms; a structure must have 1 to {MAX_ATOMS}")
        return n

    def set_results(self, results: list) -> None:
        """The (energy, forces, virial, extra) of each pending structure, in atomic units."""
        cells, _ = self.pending
        if len(results) != len(cells):
            raise DriverError(f"evaluator returned {len(results)} results for {len(cells)} structures")
        self.results = results
        self.pending = None
        st = self.stats
        st.n_requests += 1
        st.n_structures += len(cells)
        st.seconds_serving += time.perf_counter() - self._t_pos
        try:
            if self._status_waiting:
                self._status_waiting = False
                self.conn.send(HAVEDATA)
            if self._getforce_waiting:
                self._send_forces()
        except ServerClosed as exc:
            self.done = st.reason = "closed"
            if self.say:
                self.say(f"the server closed the connection ({exc})")

    def _send_forces(self) -> None:
        self.conn.send(pack_reply(self.results, self.nat, self.batch_n > 1))
        self.results = None
        self._getforce_waiting = False
        self._t_wait0 = time.perf_counter()

    def close(self, graceful: bool = False) -> None:
        if graceful:
            _close_gracefully(self.sock)
        try:
            self.sock.close()
        except OSError:
            pass


def run_client(
    sock: socket.socket,
    evaluate: EvaluateFn,
    on_init: InitFn | None = None,
    *,
    stats: SessionStats | None = None,
    log: Callable[[str], None] | None = None,
    verbose: bool = False,
    timeout_s: float | None = DEFAULT_SERVER_TIMEOUT_S,
) -> SessionStats:
    """Serves i-PI on a connected socket until EXIT or until the server closes the socket.

    ``evaluate`` gets lists of cells (i-PI's h, bohr) and positions ((nat, 3), bohr) — one item,
    or batch_size items in batched mode — and returns one (energy, forces, virial, extra) per
    item, in atomic units. Errors from ``evaluate``/``on_init`` propagate (the caller reports
    them); a server that closes the connection between messages ends the loop normally, one
    that closes it mid-message, sends an impossible size or stays silent for ``timeout_s``
    seconds raises :class:`DriverError`.
    """
    session = ClientSession(sock, on_init, stats=stats, say=log if (log and verbose) else None, timeout_s=timeout_s)
    try:
        while not session.done:
            session.step()
            if session.pending is not None:
                session.set_results(evaluate(*session.pending))
        return session.stats
    except BaseException:
        session.close(graceful=True)
        raise
    finally:
        session.close()


def _close_gracefully(sock: socket.socket, linger_s: float = 0.5) -> None:
    """Closes after an error so that the server sees an orderly end of stream (FIN), not a reset.

    Closing a socket with unread input makes the kernel send RST; i-PI's poll thread dies on
    the resulting ConnectionResetError and the run hangs, whereas on a clean end of stream i-PI
    drops the client, re-queues its request and waits for another client.
    """
    try:
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(0.05)
        deadline = time.monotonic() + linger_s
        while time.monotonic() < deadline:
            try:
                if not sock.recv(1 << 16):
                    break
            except socket.timeout:
                break
    except OSError:
        pass


def stderr_log(msg: str) -> None:
    print(f"dynamat-driver: {msg}", file=sys.stderr, flush=True)
