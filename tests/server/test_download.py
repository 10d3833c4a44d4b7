"""`dynamat data download/path` against a real local HTTP server (127.0.0.1, no internet)."""

from __future__ import annotations

import hashlib
import io
import random
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner

from dynamat import download as dl
from dynamat.cli.data import data_group
from dynamat.download import REFERENCE_FILENAME, default_reference_path, part_path
from dynamat.errors import DynamatError

from conftest import assert_one_line_error

PAYLOAD = random.Random(20260629).randbytes(3 * 1024 * 1024 + 12345)
PAYLOAD_MD5 = hashlib.md5(PAYLOAD).hexdigest()
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
