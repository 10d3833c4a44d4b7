"""The plain-text scorecard printed by `dynamat score`, `singlepoint` and `demo`."""

from __future__ import annotations

from dynamat.scoring.keys import METRIC_BY_KEY, SCORECARD_KEYS


def scorecard(res: dict) -> str:
    """A plain-text scorecard of whatever metrics ``res`` holds."""
    head = " ".join(str(res[k]) for k in ("model", "system") if res.get(k))
    lines = [f"scorecard {head}".rstrip()]
    if res.get("n_frames_singlepoint") is not None:  # Eq. 1-2 are over these frames
        lines.append(f"  {'single-point frames':<24} {res['n_frames_singlepoint']}")
    for key in SCORECARD_KEYS:
        if key not in res:
            continue
        m = METRIC_BY_KEY[key]
        label = m.card_label
        if key == "energy_rmse_eV_per_atom" and res.get("energy_reference"):
            label = f"{m.short} ({m.equation}, {res['energy_reference']})"
        val = res[key]
        if val is None:
            why = res.get(f"{key}_note")
            lines.append(f"  {label:<24} n/a" + (f"  ({why})" if why else ""))
            continue
        unc = res.get(f"{key}_unc")
        floor = res.get(f"{key}_floor")
        extra = (f" ± {unc:.3g}" if unc is not None else "") + (f"  (noise floor {floor:.3g})" if floor is not None else "")
        lines.append(f"  {label:<24} {val:.4g} {m.unit}{extra}")
    return "\n".join(lines)
