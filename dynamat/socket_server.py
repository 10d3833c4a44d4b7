"""A minimal i-PI-protocol server for single-point evaluations through a dynamat-driver.

``dynamat singlepoint`` must not import any MLIP package (they live in the drivers' environments),
so reference frames are sent to a driver over the same socket protocol i-PI speaks, in batches
(``batch_size`` announced in INIT, as i-PI 3.3 does), and results come back in float64.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import numpy as np

from dynamat import processes
from dynamat.engines.ipi import socket_dir
from dynamat.errors import DynamatError
# the wire format and i-PI's unit factors, from the driver that answers (numpy-only modules, so that
# both ends of the socket agree by construction and results match what i-PI itself would see)
from dynamat_driver.protocol import EXIT, FORCEREADY, GETFORCE, HAVEDATA, HDRLEN, INIT, NEEDINIT, POSDATA, READY, STATUS
from dynamat_driver.units import BOHR_PER_ANGSTROM, HARTREE_PER_EV


class DriverServer:
    """Starts a driver on a private unix socket and evaluates structures of one composition."""

    def __init__(
        self,
        model: str,
        species: str,
        n_atoms: int,
        *,
        batch_size: int = 8,
        driver_cmd: str | None = None,
        driver_args: tuple[str, ...] = (),
        log: Path | None = None,
        timeout_s: float = 300.0,
    ):
        self.n_atoms, self.batch = int(n_atoms), max(1, int(batch_size))
        self._dir = socket_dir()  # private and short whatever $TMPDIR is
        path = self._dir / "s"
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(path))
        self._listener.listen(1)
        self._listener.settimeout(0.5)
        self.log = log or self._dir / "driver.log"
        cmd = processes.driver_command(driver_cmd) + ["--model", model, "--unix", str(path), *driver_args]
        self.proc = processes.start(cmd, self._dir, self.log)
        t0 = time.monotonic()
        self.sock = None
        try:
            while self.sock is None:
                try:
                    self.sock, _ = self._listener.accept()
                except socket.timeout:
                    if self.proc.poll() is not None:
                        raise DynamatError(
                            f"the driver for {model!r} exited before connecting: "
                            f"{processes.last_line(self.log, 'no message')}"
                        ) from None
                    if time.monotonic() - t0 > timeout_s:
                        raise DynamatError(f"the driver for {model!r} did not connect in {timeout_s:.0f} s") from None
            self.sock.settimeout(None)
            self._status(NEEDINIT)
            pars = f"species: {species}" + (f", batch_size:{self.batch}" if self.batch > 1 else "")
            self._send(INIT + np.int32(0).tobytes() + np.int32(len(pars)).tobytes() + pars.encode())
        except BaseException:
            self.close()
            raise

    def _gone(self) -> DynamatError:
        """The driver's own last words: it closes the socket first and logs its error on the way out."""
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        return DynamatError(f"the driver disconnected: {processes.last_line(self.log, 'no message')}")

    def _send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError:
            raise self._gone() from None

    def _recv(self, nbytes: int) -> bytes:
        buf = bytearray()
        while len(buf) < nbytes:
            try:
                chunk = self.sock.recv(nbytes - len(buf))
            except OSError:
                chunk = b""
            if not chunk:
                raise self._gone()
            buf += chunk
        return bytes(buf)

    def _status(self, expect: bytes) -> None:
        self._send(STATUS)
        reply = self._recv(HDRLEN)
        if reply != expect:
            raise DynamatError(f"driver answered {reply.strip()!r} where {expect.strip()!r} was expected")

    def evaluate(self, cells: np.ndarray, positions: np.ndarray):
        """Energies (eV), forces (eV/Å) and stress (eV/Å³, ASE Voigt) for (M,3,3) cells and (M,N,3) positions."""
        m = len(positions)
        energies, forces, stress = np.empty(m), np.empty((m, self.n_atoms, 3)), np.empty((m, 6))
        for start in range(0, m, self.batch):
            idx = list(range(start, min(start + self.batch, m)))
            pad = idx + [idx[-1]] * (self.batch - len(idx))
            e, f, v = self._evaluate_batch(cells[pad], positions[pad])
            k = len(idx)
            energies[idx], forces[idx] = e[:k], f[:k]
            vol = np.abs(np.linalg.det(cells[idx]))
            sig = -v[:k] / vol[:, None, None]
            stress[idx] = np.stack([sig[:, 0, 0], sig[:, 1, 1], sig[:, 2, 2], sig[:, 1, 2], sig[:, 0, 2], sig[:, 0, 1]], -1)
        return energies, forces, stress

    def _evaluate_batch(self, cells: np.ndarray, positions: np.ndarray):
        n = self.n_atoms
        h = np.ascontiguousarray(np.transpose(cells, (0, 2, 1)) * BOHR_PER_ANGSTROM)  # i-PI sends column vectors
        ih = np.linalg.inv(h)
        pos = np.ascontiguousarray(positions.reshape(len(positions), -1) * BOHR_PER_ANGSTROM)
        self._status(READY)
        if self.batch == 1:
            payload = POSDATA + h[0].tobytes() + ih[0].tobytes() + np.int32(n).tobytes() + pos[0].tobytes()
        else:
            cellblock = b"".join(h[i].tobytes() + ih[i].tobytes() for i in range(self.batch))
            payload = POSDATA + np.int32(n).tobytes() + cellblock + pos.tobytes()
        self._send(payload)
        self._status(HAVEDATA)
        self._send(GETFORCE)
        if self._recv(HDRLEN) != FORCEREADY:
            raise DynamatError("driver did not answer GETFORCE with FORCEREADY")
        b = self.batch
        pots = np.frombuffer(self._recv(8 * b), np.float64)
        nat = int(np.frombuffer(self._recv(4), np.int32)[0])
        if nat != n:
            raise DynamatError(f"driver returned {nat} atoms, expected {n}")
        frc = np.frombuffer(self._recv(24 * n * b), np.float64).reshape(b, n, 3)
        vir = np.frombuffer(self._recv(72 * b), np.float64).reshape(b, 3, 3)
        for _ in range(b):
            ln = int(np.frombuffer(self._recv(4), np.int32)[0])
            if ln:
                self._recv(ln)
        ev = 1.0 / HARTREE_PER_EV
        # i-PI's virial is the transpose of the ASE-side −σV; symmetric for conservative models
        vir_ev = np.transpose(vir, (0, 2, 1)) * ev
        return pots * ev, frc * ev * BOHR_PER_ANGSTROM, vir_ev

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.sendall(EXIT)
            except OSError:
                pass
            self.sock.close()
            self.sock = None
        try:
            self.proc.wait(timeout=10)
        except Exception:
            pass
        processes.stop(self.proc, grace_s=2)
        self._listener.close()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
