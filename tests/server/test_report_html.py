"""The HTML page in a real headless Chromium: loads, sorts on header click, no console errors.

Needs the Debian package ``chromium`` (/usr/bin/chromium); skipped with that reason if absent.
The test loads a copy of the page with an injected script that clicks a column header
twice and writes the resulting row orders into the DOM, dumps the DOM with
``--dump-dom`` and reads them back. Console output is captured with
``--enable-logging=stderr --v=0`` (Chromium logs every console message as ``:CONSOLE``).
"""

import json
import re
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from dynamat.report import write_synthetic_results
from dynamat.cli import cli

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(),
                                reason="needs headless Chromium at /usr/bin/chromium "
                                       "(Debian: apt-get install -y chromium)")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000"]

PROBE = """<script>
(function () {
  var t = document.getElementById("table-per_model");
  var ths = t.tHead.rows[0].cells, col = -1;
  for (var i = 0; i < ths.length; i++) {
    if (ths[i].getAttribute("data-key") === "force_rmse_eV_per_A") { col = i; }
  }
  function order() {
    var out = [];
    for (var r = 0; r < t.tBodies[0].rows.length; r++) { out.push(t.tBodies[0].rows[r].cells[0].textContent); }
    return out;
  }
  var before = order();
  ths[col].click(); var asc = order(), ascAttr = ths[col].getAttribute("aria-sort");
  ths[col].click(); var desc = order(), descAttr = ths[col].getAttribute("aria-sort");
  var imgs = Array.prototype.filter.call(document.images, function (im) { return im.naturalWidth > 0; }).length;
  var pre = document.createElement("pre");
  pre.id = "probe-result";
  pre.textContent = JSON.stringify({before: before, asc: asc, desc: desc, ascAttr: ascAttr,
                                    descAttr: descAttr, imgsLoaded: imgs, imgs: document.images.length});
  document.body.appendChild(pre);
})();
</script></body>"""


def _chromium(url: str, user_data: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(CHROMIUM), *FLAGS, f"--user-data-dir={user_data}", *extra, url],
                          capture_output=True, text=True, timeout=120)


def _console_problems(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    root = tmp_path_factory.mktemp("html")
    results = write_synthetic_results(root / "results")
    r = CliRunner().invoke(cli, ["report", str(results), "--out", str(root / "out"), "--no-pdf"])
    assert r.exit_code == 0, r.output
    return root / "out" / "report.html"


def test_page_loads_sorts_and_logs_no_console_errors(page, tmp_path):
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text().replace("</body>", PROBE, 1))
    proc = _chromium(probe.as_uri(), tmp_path / "profile", "--dump-dom")
    m = re.search(r'<pre id="probe-result">(.*?)</pre>', proc.stdout, re.S)
    assert m, f"page did not run the probe; stderr tail:\n{proc.stderr[-2000:]}"
    got = json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    forces = {"CHGNet": 0.196, "MACE-MP-0": 0.146, "orb-v2": 0.115, "GRACE-2L-OAM": 0.077,
              "PET-OAM-XL": 0.056, "UMA-S-P1": 0.070}  # synthetic model means, rounded
    assert got["before"] == ["CHGNet", "MACE-MP-0", "orb-v2", "GRACE-2L-OAM", "PET-OAM-XL", "UMA-S-P1"]
    assert got["asc"] == sorted(forces, key=forces.get)
    assert got["desc"] == got["asc"][::-1]
    assert (got["ascAttr"], got["descAttr"]) == ("ascending", "descending")
    assert got["imgs"] == 14 and got["imgsLoaded"] == 14  # every inlined PNG decodes
    assert _console_problems(proc.stderr) == []


def test_console_error_capture_works(tmp_path):
    """Guard for the check above: a page that throws must be caught by the same filter."""
    bad = tmp_path / "bad.html"
    bad.write_text("<html><body><script>null.boom();</script></body></html>")
    proc = _chromium(bad.as_uri(), tmp_path / "profile", "--dump-dom")
    assert any("Uncaught" in line for line in _console_problems(proc.stderr))


def test_screenshot(page, tmp_path):
    shot = tmp_path / "shot.png"
    _chromium(page.as_uri(), tmp_path / "profile", "--window-size=1280,1600", "--hide-scrollbars",
              f"--screenshot={shot}")
    assert shot.read_bytes()[:4] == b"\x89PNG" and shot.stat().st_size > 20000
