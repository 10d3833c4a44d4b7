"""External (community-benchmark) metrics per model: Matbench-discovery F1 and κ_SRME.

The bundled table ``dynamat/data/external_metrics.csv`` has the columns
``model, f1, kappa_srme, source, date``. Values were copied from the model YAML files of
the Matbench-discovery repository (github.com/janosh/matbench-discovery), pinned to the
commit named in each row's ``source``; ``date`` is the day they were copied. F1 is the
``unique_prototypes`` subset (the leaderboard default), κ_SRME the ``kappa_103`` value.
Blank cells are values that could not be cited (the reason is in ``source``). Users can
pass their own CSV with the same columns (``dynamat report --external my.csv``).

Model names are matched case- and punctuation-insensitively ("MACE-MP-0" == "mace_mp_0"),
plus a few aliases for the names model drivers commonly use.
"""

from __future__ import annotations

import csv
import math
import re
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

__all__ = ["DEFAULT_CSV", "EXTERNAL_METRICS", "ExternalError", "load_external", "match_external", "normalise_name"]

#: The one table of external metrics: column -> (figure axis label, table header)
EXTERNAL_METRICS = {
    "f1": ("Matbench-discovery F1", "F1 (Matbench-d.)"),
    "kappa_srme": (r"Matbench-discovery $\kappa_{SRME}$", "κ_SRME (Matbench-d.)"),
}
REQUIRED_COLUMNS = ("model", *EXTERNAL_METRICS, "source", "date")

#: extra spellings -> canonical (normalised) name from the bundled CSV
ALIASES = {
    "chgnet030": "chgnet",
    "macemp0medium": "macemp0",
    "macemp": "macemp0",
    "grace2lmptrj": "grace2lmptrj",
    "orbv3": "orbv3conservativeinfmpa",
    "orbv3conservativeinf": "orbv3conservativeinfmpa",
    "mattersim": "mattersimv1005m",
    "mattersimv15m": "mattersimv1005m",
    "mattersimv1": "mattersimv1005m",
    "esen30moam": "esen30moam",
    "nequipoamxl01": "nequipoamxl",
    "petoamxl100": "petoamxl",
    "eqv2": "equiformerv2",
    "eqv2momatsalexmp": "equiformerv2",
    "eqv2momatmpsalex": "equiformerv2",
    "umasp1": "umasp1",
    "umamp1": "umamp1",
    "macemh1": "macemh1omat",
}


class ExternalError(Exception):
    """The external-metrics CSV is missing or malformed."""


def DEFAULT_CSV() -> Path:  # noqa: N802 - reads like a constant at call sites
    return Path(str(resources.files("dynamat.data").joinpath("external_metrics.csv")))


def normalise_name(name: str) -> str:
    key = re.sub(r"[^a-z0-9]", "", name.lower())
    return ALIASES.get(key, key)


def _num(text: Any) -> float | None:
    if text is None:
        return None
    text = str(text).strip()
    if not text:
        return None
    try:
        x = float(text)
    except ValueError as exc:
        raise ExternalError(f"not a number: {text!r}") from exc
    return x if math.isfinite(x) else None


def load_external(path: str | Path | None = None) -> list[dict[str, Any]]:
    """Rows of the external-metrics CSV (bundled one when ``path`` is None)."""
    path = DEFAULT_CSV() if path is None else Path(path)
    if not path.is_file():
        raise ExternalError(f"external metrics CSV not found: {path}")
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in ("model", "f1", "kappa_srme") if c not in (reader.fieldnames or [])]
        if missing:
            raise ExternalError(f"{path}: missing column(s) {', '.join(missing)}; "
                                f"expected {', '.join(REQUIRED_COLUMNS)}")
        rows = []
        for i, r in enumerate(reader, start=2):
            if not (r.get("model") or "").strip():
                continue
            try:
                rows.append({"model": r["model"].strip(), "f1": _num(r.get("f1")),
                             "kappa_srme": _num(r.get("kappa_srme")),
                             "source": (r.get("source") or "").strip(),
                             "date": (r.get("date") or "").strip()})
            except ExternalError as exc:
                raise ExternalError(f"{path}:{i}: {exc}") from None
    return rows


def match_external(models: Iterable[str], rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Map each results model name to its external row (models without a match are
    absent from the returned dict)."""
    by_key = {normalise_name(r["model"]): r for r in rows}
    out = {}
    for m in models:
        r = by_key.get(normalise_name(m))
        if r is not None:
            out[m] = r
    return out
