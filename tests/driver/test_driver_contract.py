"""One contract between the supervisor and the driver (issue 20 §3): the files they exchange.

Each record is written by one side's real code and read by the other side's real code: the server's
pack session request by the driver's pack loop, the driver's session end record and ``pack.json``
by the server's pack session and pack driver, ``socket.json`` by its one reader. A record with a
field outside its schema, or without a required one, is refused by the writer and by the reader.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

import pytest

from dynamat.engines.pack import PackDriver, PackSession, session_request
from dynamat_driver import contract
from dynamat_driver.contract import ContractError


@pytest.fixture
def pack_dir(tmp_path):
    d = tmp_path / "pack"
    d.mkdir()
    return d


def _driver_pack(pack_dir: Path):
    """The driver's pack loop (real model: ASE's EMT), not started: its ``scan`` reads requests."""
    from dynamat_driver.models import load_model
    from dynamat_driver.pack import Pack

    return Pack(pack_dir, lambda: load_model("emt"), wait_s=0.0, batched=True, verbose=False, info=lambda m: None)


def _nobody() -> str:
    return tempfile.mkdtemp(prefix="dm") + "/nobody"  # short: a unix socket path nobody listens on


def test_server_request_is_accepted_by_the_driver(tmp_path, pack_dir):
    run = tmp_path / "run"
    run.mkdir()
    req = session_request(run, ["--unix", _nobody()], stress={"stress_stride": 10, "first_step": 0, "beads": 1},
                          connect_timeout=0.2)
    (pack_dir / f"s00001{contract.REQUEST}").write_text(json.dumps(req))
    _driver_pack(pack_dir).scan()
    done = json.loads((pack_dir / f"s00001{contract.DONE}").read_text())
    # taken (not 'unreadable'): the session failed only because no i-PI listens there
    assert done["status"] == "error" and "cannot reach" in done["error"], done
    assert "cannot reach" in (run / "driver.log").read_text()


@pytest.mark.parametrize("change, why", [
    ({"colour": "red"}, "unknown field(s) colour"),
    ({"log_file": None}, "missing field 'log_file'"),
    ({"socket": None}, "exactly one of 'socket' and 'inet'"),
    ({"inet": "localhost:31415"}, "exactly one of 'socket' and 'inet'"),
    ({"stress_stride": "10"}, "field 'stress_stride' is '10'"),
])
def test_bad_requests_are_refused_by_writer_and_reader(tmp_path, pack_dir, change, why):
    run = tmp_path / "run"
    run.mkdir()
    good = session_request(run, ["--unix", _nobody()], connect_timeout=0.2)
    bad = {k: v for k, v in {**good, **change}.items() if v is not None}
    with pytest.raises(ContractError) as refused:  # the check the server's writer makes
        contract.check_request(bad)
    assert why in str(refused.value)
    (pack_dir / f"s00002{contract.REQUEST}").write_text(json.dumps(bad))
    _driver_pack(pack_dir).scan()  # the driver's reader
    done = json.loads((pack_dir / f"s00002{contract.DONE}").read_text())
    assert done["status"] == "error" and "unreadable request" in done["error"] and why in done["error"], done
    assert not (pack_dir / f"s00002{contract.REQUEST}").exists()  # answered once, not re-read for ever


def test_server_writer_checks_what_it_writes(tmp_path):
    with pytest.raises(ContractError, match="unknown field"):
        session_request(tmp_path, ["--unix", "/tmp/x"], stress={"stride": 10})
    with pytest.raises(ContractError, match="'beads'"):
        session_request(tmp_path, ["--inet", "h:1"], stress={"stress_stride": 10, "beads": 1.5})


def _server_pack(tmp_path) -> PackDriver:
    return PackDriver("emt", tmp_path / "pack.log")  # not started: only its folder and readers


def test_driver_records_are_read_by_the_server(tmp_path, pack_dir):
    from dynamat_driver.pack import write_status

    pack = _server_pack(tmp_path)
    try:
        drv = _driver_pack(pack.dir)
        ended = subprocess.Popen(["true"])
        ended.wait()
        for name, status, error, code in [("s1", "exit", None, 0), ("s2", "closed", None, 0),
                                          ("s3", "error", "model failed", 1)]:
            drv._write_done(name, status, error)
            assert PackSession(pack, name, ended, tmp_path / "d.log").poll() == code
        drv.write_status("serving")
        summary = pack.summary()
        assert summary["status"] == "serving" and summary["sessions_served"] == 0 and summary["model"] == "emt"
        write_status(pack.dir, "loading")
        assert pack.summary()["status"] == "loading"
        with pytest.raises(ContractError, match="status 'sleeping'"):
            drv._write_done("s4", "sleeping", None)
        with pytest.raises(ContractError, match="unknown field"):
            write_status(pack.dir, "serving", mood="fine")
    finally:
        pack.close(grace_s=0)


def test_server_refuses_driver_records_off_the_schema(tmp_path):
    pack = _server_pack(tmp_path)
    try:
        ended = subprocess.Popen(["true"])
        ended.wait()
        (pack.dir / f"s1{contract.DONE}").write_text(json.dumps({"status": "exit", "error": None, "extra": 1}))
        (pack.dir / f"s2{contract.DONE}").write_text(json.dumps({"status": "exit"}))
        for name in ("s1", "s2"):
            assert PackSession(pack, name, ended, tmp_path / "d.log").poll() == 1  # not a clean end
        (pack.dir / contract.STATUS_FILE).write_text(json.dumps({"status": "serving", "pid": 1, "mood": "fine"}))
        assert pack.summary() is None
        (pack.dir / contract.STATUS_FILE).write_text(json.dumps({"status": "serving"}))
        assert pack.summary() is None
    finally:
        pack.close(grace_s=0)


def test_socket_file_one_schema(tmp_path):
    """run_md's inet mode and the campaign relay write socket.json through one writer; one reader."""
    contract.write_socket_file(tmp_path, "127.0.0.1", 31415)
    assert contract.read_socket_file(tmp_path) == {"mode": "inet", "host": "127.0.0.1", "port": 31415}
    contract.write_socket_file(tmp_path, "node1", 4000, unix="/tmp/x/s", driver_command=["dd", "--inet", "node1:4000"],
                               server_host="node0", time=1.5)
    assert contract.read_socket_file(tmp_path)["driver_command"][-1] == "node1:4000"
    with pytest.raises(ContractError, match="unknown field"):
        contract.write_socket_file(tmp_path, "node1", 4000, colour="red")
    (tmp_path / "socket.json").write_text(json.dumps({"host": "h", "port": 1}))
    with pytest.raises(ContractError, match="missing field 'mode'"):
        contract.read_socket_file(tmp_path)
    (tmp_path / "socket.json").write_text(json.dumps({"mode": "inet", "host": "h", "port": 1, "pid": 3}))
    with pytest.raises(ContractError, match="unknown field"):
        contract.read_socket_file(tmp_path)
