"""`dynamat data download/path` against a real local HTTP server (127.0.0.1, no internet)."""

from __future__ import annotations

import hashlib
import io
import socket
import tempfile
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from published_layout import write_published_file

from dynamat import download as dl
from dynamat.cli.data import data_group
from dynamat.download import REFERENCE_FILENAME, default_reference_path, part_path
from dynamat.errors import DynamatError

from conftest import assert_one_line_error


def _h5_bytes(fill) -> bytes:
    """The bytes of an HDF5 file written by ``fill(path)``."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.h5"
        fill(path)
        return path.read_bytes()


#: a reference in the published layout, 1.3 MB (the broken transfer below cuts it at 1 MB)
PAYLOAD = _h5_bytes(lambda p: write_published_file(p, n_frames=300))
PAYLOAD_MD5 = hashlib.md5(PAYLOAD).hexdigest()
HTML = b"<html><body>Access denied</body></html>"  # 39 bytes: a mirror's error page, served as 200


def _without_positions(path):
    write_published_file(path, names=["bulkCu_300K-Artrith_VASP"], n_frames=20)
    with h5py.File(path, "a") as f:
        del f["bulkCu_300K-Artrith_VASP"]["positions"]


def _external_positions(path):
    write_published_file(path, names=["bulkCu_300K-Artrith_VASP"], n_frames=20)
    with h5py.File(path, "a") as f:
        del f["bulkCu_300K-Artrith_VASP"]["positions"]
        f["bulkCu_300K-Artrith_VASP"]["positions"] = h5py.ExternalLink("/elsewhere/other.h5", "/x")


#: what else the server hands out as 200, and what the refusal must say
NOT_REFERENCES = {
    "/page.html": (HTML, "not an HDF5 file (39 bytes starting b'<html>"),
    "/plain.h5": (_h5_bytes(lambda p: h5py.File(p, "w").create_dataset("x", data=np.arange(3)).file.close()),
                  "holds no system group"),
    "/nopositions.h5": (_h5_bytes(_without_positions), "lacks dataset(s) positions"),
    "/linked.h5": (_h5_bytes(_external_positions), "external link to /elsewhere/other.h5:/x"),
}
TIMEOUT = 5.0  # seconds, for every client socket operation
MAX_REQUESTS = 20  # a guard against request loops


@dataclass
class ServerState:
    break_after: int | None = None  # first request: send this many bytes, then drop the connection
    ignore_range: bool = False
    requests: list[tuple[str, str | None, int]] = field(default_factory=list)  # (path, Range, status)
    lock: threading.Lock = field(default_factory=threading.Lock)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # one request per connection

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        state: ServerState = self.server.state
        rng = self.headers.get("Range")
        with state.lock:
            first = not state.requests
            n = len(state.requests)
        if n < MAX_REQUESTS and self.path in NOT_REFERENCES:
            return self._answer(200, rng, NOT_REFERENCES[self.path][0])
        if n >= MAX_REQUESTS or self.path != "/file.h5":
            return self._answer(404, rng, b"not found")
        start = 0
        if rng and not state.ignore_range:
            spec = rng.strip().removeprefix("bytes=")
            start = int(spec.split("-")[0])
            if start >= len(PAYLOAD):
                return self._answer(416, rng, b"", extra={"Content-Range": f"bytes */{len(PAYLOAD)}"})
        body = PAYLOAD[start:]
        status = 206 if start else 200
        extra = {"Accept-Ranges": "none" if state.ignore_range else "bytes"}
        if status == 206:
            extra["Content-Range"] = f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}"
        cut = state.break_after if first else None
        self._answer(status, rng, body, extra=extra, cut=cut)

    def _answer(self, status, rng, body, extra=None, cut=None):
        with self.server.state.lock:
            self.server.state.requests.append((self.path, rng, status))
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body if cut is None else body[:cut])
        self.wfile.flush()
        self.close_connection = True


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.state = ServerState()
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
        assert not thread.is_alive()


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("DYNAMAT_CACHE", str(folder))
    return folder


def url_of(httpd, path="/file.h5") -> str:
    host, port = httpd.server_address[:2]
    return f"http://{host}:{port}{path}"


def run_cli(*args: str):
    return CliRunner().invoke(data_group, list(args), catch_exceptions=False)


def fetch(httpd, *extra: str):
    return run_cli("download", "--url", url_of(httpd), "--md5", PAYLOAD_MD5, "--timeout", str(TIMEOUT), *extra)


# ------------------------------------------------------------------------------------------ CLI tests


def test_full_download_into_cache(server, cache):
    res = fetch(server)
    assert res.exit_code == 0, res.output
    final = cache / REFERENCE_FILENAME
    assert res.stdout.strip() == str(final)
    assert final.read_bytes() == PAYLOAD
    assert not part_path(final).exists()
    assert "100.0%" in res.stderr and "/s" in res.stderr  # plain progress lines (not a TTY)
    assert "\r" not in res.stderr
    assert [r[1] for r in server.state.requests] == [None]
    assert default_reference_path() == final
    path = run_cli("path")
    assert path.exit_code == 0 and path.stdout.strip() == str(final)


def test_broken_transfer_resumes_from_part(server, cache):
    cut = 1_000_003
    server.state.break_after = cut
    final = cache / REFERENCE_FILENAME
    first = fetch(server)
    assert_one_line_error(first, "interrupted", "rerun", after_progress=True)
    assert not final.exists()
    assert part_path(final).stat().st_size == cut
    assert default_reference_path() is None

    second = fetch(server)
    assert second.exit_code == 0, second.output
    assert [r[1:] for r in server.state.requests] == [(None, 200), (f"bytes={cut}-", 206)]
    assert final.read_bytes() == PAYLOAD
    assert not part_path(final).exists()
    assert "resuming" in second.stderr


def test_server_ignoring_range_restarts(server, cache):
    server.state.ignore_range = True
    final = cache / REFERENCE_FILENAME
    cache.mkdir()
    stale = b"stale bytes that are not a prefix of the file" * 100
    part_path(final).write_bytes(stale)
    res = fetch(server)
    assert res.exit_code == 0, res.output
    assert [r[1:] for r in server.state.requests] == [(f"bytes={len(stale)}-", 200)]
    assert "ignored the Range" in res.stderr
    assert final.read_bytes() == PAYLOAD
    assert not part_path(final).exists()


def test_part_past_the_end_gets_416_then_fresh(server, cache):
    final = cache / REFERENCE_FILENAME
    cache.mkdir()
    part_path(final).write_bytes(PAYLOAD + b"extra")
    res = fetch(server)
    assert res.exit_code == 0, res.output
    assert [r[2] for r in server.state.requests] == [416, 200]
    assert final.read_bytes() == PAYLOAD


def test_wrong_checksum_leaves_nothing(server, cache):
    res = run_cli("download", "--url", url_of(server), "--md5", "0" * 32, "--timeout", str(TIMEOUT))
    assert_one_line_error(res, "checksum mismatch", "0" * 32, PAYLOAD_MD5, after_progress=True)
    final = cache / REFERENCE_FILENAME
    assert not final.exists()
    assert not part_path(final).exists()
    assert default_reference_path() is None
    assert_one_line_error(run_cli("path"), "dynamat data download")


def test_existing_good_file_is_not_fetched_again(server, cache):
    assert fetch(server).exit_code == 0
    assert len(server.state.requests) == 1
    again = fetch(server)
    assert again.exit_code == 0, again.output
    assert "already present" in again.stderr
    assert len(server.state.requests) == 1
    forced = fetch(server, "--force")
    assert forced.exit_code == 0, forced.output
    assert len(server.state.requests) == 2
    assert (cache / REFERENCE_FILENAME).read_bytes() == PAYLOAD


def test_existing_bad_file_is_replaced(server, cache):
    final = cache / REFERENCE_FILENAME
    cache.mkdir()
    final.write_bytes(b"corrupt")
    res = fetch(server)
    assert res.exit_code == 0, res.output
    assert len(server.state.requests) == 1
    assert final.read_bytes() == PAYLOAD


def test_http_404_is_one_line(server, cache):
    res = run_cli("download", "--url", url_of(server, "/nope.h5"), "--timeout", str(TIMEOUT))
    assert_one_line_error(res, "HTTP 404", "/nope.h5", after_progress=True)
    assert list(cache.iterdir()) == []  # no .part, no final file


def test_unreachable_host_is_one_line(cache):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    res = run_cli("download", "--url", f"http://127.0.0.1:{port}/file.h5", "--timeout", str(TIMEOUT))
    assert_one_line_error(res, "cannot reach", after_progress=True)


def test_unwritable_cache_is_one_line(server, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("DYNAMAT_CACHE", str(blocker / "cache"))
    res = fetch(server)
    assert_one_line_error(res, "cannot write", "DYNAMAT_CACHE", after_progress=True)
    assert server.state.requests == []


def test_md5_none_skips_check_with_warning(server, tmp_path):
    dest = tmp_path / "custom" / "ref.h5"
    res = run_cli("download", "--url", url_of(server), "--md5", "none", "--dest", str(dest),
                  "--timeout", str(TIMEOUT))
    assert res.exit_code == 0, res.output
    assert "warning" in res.stderr and "not be checked" in res.stderr
    assert dest.read_bytes() == PAYLOAD


@pytest.mark.parametrize("path", sorted(NOT_REFERENCES))
def test_what_is_no_reference_file_is_not_kept(server, tmp_path, path):
    """`--md5 none` still checks that an HDF5 reference in the published layout arrived; what is not
    one is deleted and never replaces an earlier good file, even with --force."""
    dest = tmp_path / "ref.h5"
    get = lambda *extra: run_cli("download", "--url", url_of(server, path), "--md5", "none", "--dest", str(dest),  # noqa: E731
                                 "--timeout", str(TIMEOUT), *extra)
    assert_one_line_error(get(), path, "no DynaMat reference file", NOT_REFERENCES[path][1], "deleted", after_progress=True)
    assert not dest.exists() and not part_path(dest).exists()
    good = run_cli("download", "--url", url_of(server), "--md5", "none", "--dest", str(dest), "--timeout", str(TIMEOUT))
    assert good.exit_code == 0, good.output
    assert_one_line_error(get("--force"), NOT_REFERENCES[path][1], f"{dest} is unchanged", after_progress=True)
    assert dest.read_bytes() == PAYLOAD and not part_path(dest).exists()


def test_a_kept_file_that_is_no_reference_is_fetched_again(server, tmp_path):
    """A page kept by an earlier version under `--md5 none` is not taken as the reference."""
    dest = tmp_path / "ref.h5"
    dest.write_bytes(HTML)
    res = run_cli("download", "--url", url_of(server), "--md5", "none", "--dest", str(dest), "--timeout", str(TIMEOUT))
    assert res.exit_code == 0, res.output
    assert "no reference file" in res.stderr and "fetching again" in res.stderr
    assert dest.read_bytes() == PAYLOAD


def test_bad_md5_option_is_a_usage_error(server, cache):
    res = run_cli("download", "--url", url_of(server), "--md5", "xyz")
    assert res.exit_code == 2
    assert "md5" in res.stderr
    assert server.state.requests == []


def test_default_cache_location(monkeypatch, tmp_path):
    monkeypatch.delenv("DYNAMAT_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert dl.reference_cache_path() == tmp_path / ".cache" / "dynamat" / REFERENCE_FILENAME
    assert default_reference_path() is None


# ----------------------------------------------------------------------------------- function tests


def test_download_function_and_errors(server, tmp_path):
    dest = tmp_path / "f.h5"
    seen = []
    out = dl.download(url_of(server), dest, PAYLOAD_MD5, progress=lambda d, t, finished=False: seen.append((d, t, finished)),
                      timeout=TIMEOUT)
    assert out == dest and dest.read_bytes() == PAYLOAD
    assert seen[0] == (0, len(PAYLOAD), False) and seen[-1] == (len(PAYLOAD), len(PAYLOAD), True)
    with pytest.raises(DynamatError, match="HTTP 404"):
        dl.download(url_of(server, "/missing"), tmp_path / "g.h5", None, timeout=TIMEOUT)


def test_pure_helpers():
    assert dl.normalize_md5("none") is None and dl.normalize_md5("NONE") is None
    assert dl.normalize_md5("09D32104888B9639599A15D3ECB124CB") == dl.REFERENCE_MD5
    with pytest.raises(ValueError):
        dl.normalize_md5("1234")
    assert dl.parse_content_range("bytes 10-19/20") == (10, 19, 20)
    assert dl.parse_content_range("bytes 10-19/*") == (10, 19, None)
    assert dl.parse_content_range("junk") is None and dl.parse_content_range(None) is None
    assert dl.format_progress(512 * 1024, 1024 * 1024, 2 * 1024 * 1024) == "512.0 KiB / 1.0 MiB   50.0%  2.0 MiB/s"
    assert dl.REFERENCE_URL == "https://figshare.com/ndownloader/files/66309926"


def test_progress_plain_and_tty():
    ticks = iter([0.0, 1.0, 2.0, 10.0, 11.0])
    plain = io.StringIO()
    p = dl.Progress(plain, tty=False, every_s=5.0, clock=lambda: next(ticks))
    for done in (0, 10, 20, 30):
        p(done, 40)
    p(40, 40, finished=True)
    lines = plain.getvalue().splitlines()
    assert len(lines) == 3 and lines[-1].strip().startswith("40 B / 40 B  100.0%")  # 0 s, 10 s, final
    tty = io.StringIO()
    p = dl.Progress(tty, tty=True, every_s=0.0, clock=iter([0.0, 1.0]).__next__)
    p(0, 100)
    p(100, 100, finished=True)
    assert tty.getvalue().count("\r") == 2 and tty.getvalue().endswith("\n")
