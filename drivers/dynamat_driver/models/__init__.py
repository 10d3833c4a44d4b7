"""The model zoo: registry, interface, helpers and one adapter module per model family.

* :mod:`.registry` — data only: name → family adapter, loader arguments, paper tier, size, pip
  extra, environment (standard library only: ``run_scripts/make_driver_env.sh`` reads it with any
  Python).
* :mod:`.base` — :class:`Model` (the interface: ``calculate``, ``calculate_batch``, flags
  ``can_batch``, ``skips_stress``) and :class:`CalculatorModel` (a model behind an ASE calculator).
* :mod:`.helpers` — installation checks, where weights are, output suppression while a package
  loads, one-line messages, option parsing.
* :mod:`.dispersion` — ``--dispersion d3-bj``: a D3(BJ) correction (simple-dftd3) added to any
  loaded model by a wrapping :class:`Model`.
* one module per model family (like i-PI's ``ipi/pes/*.py``), each defining
  ``load(info, *, device, dtype, model_path, options) -> Model`` and, unless its weights ship in
  a wheel (registry ``wheel_weights``) or it has none (analytic), ``weights_status(info) -> dict``:
  ``in-wheel``, ``cached`` (path), ``download`` (where from, and the cache path the package would
  fill), found without importing numpy or the model package.

Adding a family: its module, its registry line(s), its extra in ``drivers/pyproject.toml``; or,
from another package, a plugin family (:mod:`.plugins`: entry-point group ``dynamat.models``, the
same adapter interface, versioned by ``ADAPTER_API_VERSION``). This
package re-exports what the adapters and the server wing import (``from . import Model, ...``).
Importing it imports no model package, no torch and not even numpy.

Tiers (``ModelInfo.tier``) are the paper's (Dyna-Mat-v1.0, Results B), by training data:

* ``1``  MPtrj: CHGNet, MACE-MP-0, GRACE-2L-MPTrj.
* ``2``  MPtrj + Alexandria (or sAlex): MACE-MPA-0, orb-v2.
* ``3``  larger / more diverse sets, mostly OMat24 pre-training + MPtrj/sAlex fine-tuning ("OAM"):
  MatterSim-v1.0.0-5M, GRACE-2L-OAM, orb-v3-conservative-inf-mpa, eSEN-30M-OAM, NequIP-OAM-XL,
  EquiformerV2, PET-OAM-XL.
* ``4``  multi-head / multi-task models across several reference datasets: MACE-MH-1-OMAT,
  UMA-S-P1, UMA-M-P1.
* ``"test"`` analytic potentials (EMT, LJ, harmonic), not MLIPs.
* ``None``  MLIPs that are not in the paper (SevenNet-0, SevenNet-l3i5).

``ModelInfo.cost`` keeps a rough cost class for scheduling campaigns, from the parameter count:
``test`` (analytic, milliseconds), ``small`` (< 1 M parameters), ``medium`` (1–10 M), ``large``
(10–100 M), ``xlarge`` (> 100 M, or a mixture of experts with that many in total).

Parameter counts (``n_params``) are either measured (from the real checkpoint where it ships in
the wheel: CHGNet, SevenNet; or from the architecture the checkpoint loads into strictly: orb) or
copied from the model's Matbench Discovery entry (github.com/janosh/matbench-discovery,
``models/<family>/<model>.yml``, key ``model_params``), as noted per entry in ``params_source``;
None where no single published count exists (MACE-MH-1, the UMA mixtures of experts). A loaded
model reports its own measured count in the driver's timing file.

Precision: MLIPs default to float32 (the paper's timing protocol: "float32, no acceleration
libraries"); ``dtypes`` lists what ``--dtype`` accepts. The GRACE foundation models are float64
SavedModels (precision fixed at export), so they default to float64.

Environments (``ModelInfo.env``): MLIP packages conflict, so each model names the environment
group it installs into (``run_scripts/make_driver_env.sh MODEL``): see :data:`ENVIRONMENTS`.
"""

from __future__ import annotations

import os
import sys
from dataclasses import asdict
from typing import Mapping

from .. import DriverError, __version__
from .base import CalculatorModel, Model, torch_n_params
from .helpers import (
    _in_wheel,
    _quiet,
    announce_weights,
    cached_path_file,
    cached_path_root,
    check_torch_device,
    hf_cache_pattern,
    hf_cached_file,
    hf_hub_cache_dir,
    import_family,
    is_installed,
    is_verbose,
    load_failed,
    missing_requirements,
    network_unreachable,
    one_line,
    package_dir,
    package_versions,
    parse_float_option,
    quiet_loading,
    reject_unknown_options,
    set_verbose,
    torch_dtype,
    weights_dict,
    weights_status,
    weights_unavailable,
)
from .registry import (
    ALIASES,
    ANALYTIC_DTYPES,
    ENVIRONMENTS,
    PAPER_TIERS,
    REGISTRY,
    ModelInfo,
    canonical_name,
    list_models,
)
from .registry import get_model_info as _registered_info

_import_family = import_family  # the name the adapters knew


def get_model_info(name: str) -> ModelInfo:
    """The registry entry of ``name``, or for ``MODULE:CALLABLE`` (a user's calculator, see
    :mod:`.custom`) an entry made from the spec, its syntax checked and nothing imported, or a
    plugin family's entry (:mod:`.plugins`; looked for only when the registry has no ``name``)."""
    if ":" in (name or ""):
        from .custom import spec_info

        return spec_info(name)
    try:
        return _registered_info(name)
    except DriverError as exc:
        from .plugins import broken_plugins_note, plugin_families, plugin_model_info

        info = plugin_model_info((name or "").strip())
        if info is None:
            served = [n for fam in plugin_families().values() if not fam.error for n in fam.models]
            msg = str(exc).replace(" (see --list)", "".join(f", {n}" for n in served) + " (see --list)")
            raise DriverError(f"{msg}{broken_plugins_note()}") from None
        return info


def all_model_infos() -> list[ModelInfo]:
    """The registry's models, then every usable plugin family's (:mod:`.plugins`)."""
    from .plugins import plugin_families

    return list_models() + [i for f in plugin_families().values() for i in f.models.values()]


def model_source(info: ModelInfo) -> dict:
    """Where a model comes from: ``{"package": ..., "version": ..., "plugin": bool}``."""
    from .plugins import BUILTIN_FAMILIES, plugin_family

    fam = None if info.family in BUILTIN_FAMILIES else plugin_family(info.family)
    if fam is None:
        return {"package": "dynamat-driver", "version": __version__, "plugin": False}
    return {"package": fam.distribution, "version": fam.version, "plugin": True, "entry_point": fam.entry_point}


def listing() -> list[dict]:
    """``--list --json``: every model (:func:`model_info_dict`), then one entry per plugin family that
    cannot be used, with its error (a broken plugin never hides the others)."""
    from .plugins import plugin_families

    rows = [model_info_dict(m.name) for m in all_model_infos()]
    for fam in plugin_families().values():
        if fam.error:
            rows.append({"name": fam.name, "family": fam.name, "human_name": "", "tier": None, "n_params": None,
                         "extra": None, "env": None, "installed": False, "missing": [fam.error],
                         "weights": {"status": "unknown"}, "aliases": [],
                         "source": {"package": fam.distribution, "version": fam.version, "plugin": True,
                                    "entry_point": fam.entry_point, "error": fam.error}})
    return rows


def model_info_dict(name: str) -> dict:
    """A JSON-able description of one model (for --list --json, run.json, reports)."""
    info = get_model_info(name)
    d = asdict(info)
    d["kwargs"] = dict(info.kwargs)
    for k in ("packages", "dtypes", "aliases", "requires", "options"):
        d[k] = list(getattr(info, k))
    missing = missing_requirements(info)
    d["installed"] = not missing
    d["missing"] = missing
    d["pip"] = info.pip_hint
    d["make_env"] = info.env_hint if info.extra else ""
    d["weights"] = weights_status(info)
    d["source"] = model_source(info)
    return d


def tier_label(tier) -> str:
    if tier is None:
        return "-"
    return str(tier)


def registry_table() -> str:
    rows = [("name", "model", "tier", "family", "params", "dtype", "extra", "env", "installed", "weights", "source")]
    for m in all_model_infos():
        w = weights_status(m)
        rows.append(
            (
                m.name + (f" ({', '.join(m.aliases)})" if m.aliases else ""),
                m.human_name,
                tier_label(m.tier),
                m.family,
                f"{m.n_params:,}" if m.n_params else "-",
                m.default_dtype,
                m.extra or "-",
                m.env,
                "yes" if is_installed(m) else "no",
                w["status"],
                _source_text(model_source(m)),
            )
        )
    from .plugins import plugin_families

    for fam in plugin_families().values():
        if fam.error:
            rows.append((fam.name, "(plugin unusable)", "-", fam.name, "-", "-", "-", "-", "no", "-",
                         _source_text({"package": fam.distribution, "version": fam.version, "plugin": True})))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def _source_text(src: dict) -> str:
    text = f"{src.get('package') or '?'} {src.get('version') or ''}".strip()
    return f"plugin {text}" if src.get("plugin") else text


def load_model(
    name: str,
    *,
    device: str = "cpu",
    dtype: str | None = None,
    model_path: str | None = None,
    options: Mapping[str, str] | None = None,
    dispersion: str | None = None,
    dispersion_functional: str | None = None,
    facts: Mapping[str, object] | None = None,
) -> Model:
    """Loads a registered model. Errors (missing package, weights, bad options, unsupported
    dtype or device) are raised as one-line DriverError messages. ``MODULE:CALLABLE`` loads a
    user's ASE calculator or Model (:mod:`.custom`). ``dispersion="d3-bj"`` adds a D3(BJ)
    correction for ``dispersion_functional`` (default pbe) to either (:mod:`.dispersion`). ``facts``
    (``--label``, ``--tier``, ``--n-params``, ``--training-set``: a models file's table) describe a
    ``MODULE:CALLABLE`` model in the timing file, whence run.json and reports."""
    from .custom import check_facts
    from .dispersion import check_dispersion, with_dispersion

    check_dispersion(dispersion, dispersion_functional)  # before a model load that can take minutes
    described = check_facts(get_model_info(name), facts)
    model = _load_model(name, device=device, dtype=dtype, model_path=model_path, options=options)
    if described:
        model.described = described
    return with_dispersion(model, dispersion, dispersion_functional)


def _load_model(name: str, *, device: str, dtype: str | None, model_path: str | None,
                options: Mapping[str, str] | None) -> Model:
    info = get_model_info(name)
    if info.family == "custom":
        from .custom import load as load_custom

        return load_custom(info.name, device=device, dtype=dtype, model_path=model_path, options=options)
    if dtype is not None and dtype not in info.dtypes:
        raise DriverError(f"model {info.name!r} supports dtype {' or '.join(info.dtypes)}, not {dtype}")
    from .plugins import BUILTIN_FAMILIES

    plugin = info.family not in BUILTIN_FAMILIES
    missing = missing_requirements(info)
    if missing and plugin:
        raise DriverError(f"model {info.name!r} (plugin family {info.family!r}) needs {', '.join(missing)}, "
                          f"not available in this environment ({sys.executable})")
    if missing:
        raise DriverError(
            f"model {info.name!r} needs {', '.join(missing)}, not available in this environment "
            f"({sys.executable}); its packages belong in a '{info.env}' environment ({ENVIRONMENTS[info.env]}): "
            f"create one with {info.env_hint} (or pip install './drivers[{info.extra}]' there)"
        )
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise DriverError(f"device must be cpu or cuda, got {device!r}")
    if model_path is not None and not os.path.exists(os.path.expanduser(model_path)):
        raise DriverError(f"--model-path {model_path} does not exist")
    if not plugin:  # a registered family takes the options its registry entry lists (plugins check their own)
        reject_unknown_options(options or {}, info.options, info.name)
    module = import_family(info.family)
    model = module.load(
        info, device=device, dtype=dtype,
        model_path=os.path.expanduser(model_path) if model_path else None, options=dict(options or {}),
    )
    if plugin:
        model = _checked_plugin_model(info, model, options)
    if device != "cpu" and getattr(model, "device", device) == "cpu":  # never fall back silently
        raise DriverError(f"model {info.name!r} runs on the CPU only; --device {device} cannot be honoured")
    return model


def _checked_plugin_model(info: ModelInfo, model, options) -> Model:
    """A plugin family's model: a :class:`Model`, its results checked, its package in its versions."""
    from .custom import CheckedModel

    if not isinstance(model, Model):
        raise DriverError(f"plugin family {info.family!r}: load() returned a {type(model).__name__} for "
                          f"{info.name!r}, not a dynamat_driver Model")
    dist = model_source(info).get("package")
    if dist and dist not in model.version_packages:
        model.version_packages = (*model.version_packages, dist)
    return CheckedModel(model, info.name, dict(options or {}), is_spec=False)


__all__ = [
    "ALIASES",
    "all_model_infos",
    "listing",
    "model_source",
    "ENVIRONMENTS",
    "PAPER_TIERS",
    "REGISTRY",
    "ModelInfo",
    "Model",
    "CalculatorModel",
    "list_models",
    "canonical_name",
    "get_model_info",
    "is_installed",
    "missing_requirements",
    "model_info_dict",
    "registry_table",
    "load_model",
    "package_versions",
    "weights_status",
]
