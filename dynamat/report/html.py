"""One self-contained HTML page: figures inlined as base64 PNG data URIs, sortable tables,
inline CSS and a few lines of inline JS. Nothing is fetched from the network.

Sorting: click a column header to sort by it (ascending first, click again to reverse).
Cells sort by their ``data-sort`` value (numeric where both values parse as numbers,
else natural string order); empty cells always go last. The same function is exposed as
``window.dynamatReport.sortTable(tableId, columnIndex, "asc"|"desc")`` for scripted use.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
from pathlib import Path
from typing import Any, Sequence

from .tables import UNFINISHED_STATUSES, Table, display_cell, header_label

__all__ = ["render_html", "write_html", "SORT_JS"]

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;
 color:#222;background:#fafafa;line-height:1.4}
header,main{max-width:1250px;margin:0 auto;padding:0 18px}
header{padding-top:14px}
h1{font-size:1.5em;margin:.3em 0}
h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ccc;padding-bottom:3px}
h3{font-size:1.02em;margin-bottom:.3em}
.meta{color:#555;font-size:.9em}
.notes{background:#fff4e5;border-left:4px solid #e69500;padding:6px 12px;font-size:.88em}
.notes li{margin:2px 0}
nav ul{columns:2;font-size:.9em}
figure{background:#fff;border:1px solid #ddd;margin:14px 0;padding:8px;text-align:center}
figure img{max-width:100%;height:auto}
figcaption{font-size:.88em;color:#333;text-align:left;margin-top:4px}
.tablewrap{overflow-x:auto;background:#fff;border:1px solid #ddd;max-height:640px;overflow-y:auto}
table.sortable{border-collapse:collapse;font-size:.8em;white-space:nowrap}
table.sortable th,table.sortable td{border-bottom:1px solid #eee;padding:3px 7px;text-align:right}
table.sortable th:first-child,table.sortable td:first-child{text-align:left}
table.sortable th{position:sticky;top:0;background:#eef1f5;cursor:pointer;user-select:none}
table.sortable th:hover{background:#dde3ec}
table.sortable th[aria-sort=ascending]::after{content:" \\25B2";font-size:.75em}
table.sortable th[aria-sort=descending]::after{content:" \\25BC";font-size:.75em}
table.sortable tr.failed td{color:#b00}
table.sortable tr.unfinished td{color:#777;font-style:italic}
table.sortable th.txt,table.sortable td.txt{text-align:left}
.tnotes{font-size:.82em;color:#555;margin:2px 0 6px}
footer{max-width:1250px;margin:30px auto;padding:0 18px;font-size:.8em;color:#777}
"""

SORT_JS = r"""
(function () {
  "use strict";
  function key(cell) {
    var v = cell ? cell.getAttribute("data-sort") : null;
    if (v === null) { v = cell ? cell.textContent.trim() : ""; }
    return v;
  }
  function isNum(s) { return s !== "" && isFinite(Number(s)); }
  function sortTable(table, col, dir) {
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (r1, r2) {
      var a = key(r1.cells[col]), b = key(r2.cells[col]);
      if (a === "" || b === "") { return (a === "") - (b === ""); }  // empties last
      var c = (isNum(a) && isNum(b)) ? Number(a) - Number(b)
                                     : a.localeCompare(b, undefined, {numeric: true});
      return dir === "desc" ? -c : c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
    var ths = table.tHead.rows[0].cells;
    for (var i = 0; i < ths.length; i++) {
      if (i === col) { ths[i].setAttribute("aria-sort", dir === "desc" ? "descending" : "ascending"); }
      else { ths[i].removeAttribute("aria-sort"); }
    }
  }
  var tables = document.querySelectorAll("table.sortable");
  Array.prototype.forEach.call(tables, function (table) {
    var ths = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(ths, function (th, col) {
      th.addEventListener("click", function () {
        var dir = th.getAttribute("aria-sort") === "ascending" ? "desc" : "asc";
        sortTable(table, col, dir);
      });
    });
  });
  window.dynamatReport = {
    sortTable: function (id, col, dir) { sortTable(document.getElementById(id), col, dir || "asc"); }
  };
})();
"""


def _esc(text: Any) -> str:
    return html.escape("" if text is None else str(text), quote=True)


def _sort_value(row: dict[str, Any], col: str) -> str:
    v = row.get(col)
    if v is None:
        return ""
    if isinstance(v, bool):
        return str(int(v))
    if isinstance(v, (int, float)):
        return repr(float(v)) if isinstance(v, float) else str(v)
    return str(v)


def table_html(table: Table) -> str:
    cols = table.display or table.columns
    tid = f"table-{table.name}"
    out = [f'<h3 id="{_esc(tid)}-title">{_esc(table.title)}</h3>']
    for n in table.notes:
        out.append(f'<p class="tnotes">{_esc(n)}</p>')
    out.append(f'<div class="tablewrap"><table class="sortable" id="{_esc(tid)}">')
    text_cols = {c for c in cols if any(isinstance(r.get(c), str) for r in table.rows)}
    tc = {c: ' class="txt"' if c in text_cols else "" for c in cols}
    out.append("<thead><tr>" + "".join(
        f'<th scope="col"{tc[c]} data-key="{_esc(c)}" title="{_esc(c)}">{_esc(header_label(c))}</th>'
        for c in cols) + "</tr></thead><tbody>")
    for r in table.rows:
        if r.get("status") in UNFINISHED_STATUSES:
            cls = ' class="unfinished"'
        elif r.get("status") not in (None, "completed") or (r.get("n_failed") or 0) > 0:
            cls = ' class="failed"'
        else:
            cls = ""
        cells = "".join(f'<td{tc[c]} data-sort="{_esc(_sort_value(r, c))}">{_esc(display_cell(r, c))}</td>'
                        for c in cols)
        out.append(f"<tr{cls}>{cells}</tr>")
    out.append("</tbody></table></div>")
    return "\n".join(out)


def render_html(tables: Sequence[Table], figures: Sequence[tuple[str, str, bytes]],
                notes: Sequence[str], title: str = "dynamat report",
                meta: str = "") -> str:
    """HTML text. ``figures`` are (stem, caption, png_bytes)."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_esc(title)}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<header><h1>{_esc(title)}</h1>",
        f'<p class="meta">{_esc(meta)}</p>',
    ]
    if notes:
        parts.append('<div class="notes" id="notes"><strong>Notes</strong><ul>'
                     + "".join(f"<li>{_esc(n)}</li>" for n in notes) + "</ul></div>")
    parts.append("<nav><ul>"
                 + "".join(f'<li><a href="#fig-{_esc(s)}">{_esc(s)}</a></li>' for s, _, _ in figures)
                 + "".join(f'<li><a href="#table-{_esc(t.name)}-title">table: {_esc(t.title)}</a></li>'
                           for t in tables)
                 + "</ul></nav></header><main>")
    parts.append("<h2>Figures</h2>")
    for stem, caption, png in figures:
        b64 = base64.b64encode(png).decode("ascii")
        parts.append(f'<figure id="fig-{_esc(stem)}"><img alt="{_esc(stem)}" '
                     f'src="data:image/png;base64,{b64}"><figcaption><strong>{_esc(stem)}</strong>: '
                     f"{_esc(caption)}</figcaption></figure>")
    parts.append("<h2>Tables</h2><p class=\"tnotes\">Click a column header to sort. "
                 "Values are shown as mean ± statistical uncertainty where available; "
                 "rows in red include failed or exploded runs.</p>")
    for t in tables:
        parts.append(table_html(t))
    parts.append("</main>")
    parts.append(f"<footer>Generated by dynamat report on "
                 f"{_esc(_dt.datetime.now().strftime('%Y-%m-%d %H:%M'))}. "
                 "Self-contained: no external resources.</footer>")
    parts.append(f"<script>{SORT_JS}</script></body></html>")
    return "\n".join(parts)


def write_html(path: str | Path, tables: Sequence[Table], figure_pngs: Sequence[tuple[str, str, Path]],
               notes: Sequence[str], title: str = "dynamat report", meta: str = "") -> Path:
    figs = [(stem, cap, Path(p).read_bytes()) for stem, cap, p in figure_pngs]
    path = Path(path)
    path.write_text(render_html(tables, figs, notes, title, meta), encoding="utf-8")
    return path
