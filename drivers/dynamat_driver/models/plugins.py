"""Plugin families: model families that other packages register, served like the built-in ones.

A package registers a family through the entry-point group ``dynamat.models``; the entry point's
name is the family's name and its value a module (``examples/dynamat-example-plugin`` is a worked
example)::

    [project.entry-points."dynamat.models"]
    pairlj = "dynamat_example_plugin.pairlj"

**Adapter interface, version** :data:`ADAPTER_API_VERSION` (the interface of the built-in families
in ``dynamat_driver/models/<family>.py``). The module defines:

* ``ADAPTER_API = 1``: the version it implements; any other value is refused at load, in one line
  naming the package, its version and both API versions.
* ``MODELS``: a sequence of :class:`~dynamat_driver.models.ModelInfo`, one per model name the family
  serves, each with ``family`` = the entry point's name (name, human_name, tier, n_params,
  ``packages`` the model imports, ``default_dtype``/``dtypes``, ``extra=None`` unless it has weights).
  A name of the registry, or of another plugin, is refused.
* ``load(info, *, device, dtype, model_path, options) -> Model``: the loaded model, a
  :class:`~dynamat_driver.models.Model` (``options``: the ``-o KEY=VALUE`` text; a problem the user
  can fix is a :class:`~dynamat_driver.DriverError`, one line).
* optional ``weights_status(info) -> dict`` (see ``helpers.weights_dict``), for ``dynamat models``.

The :class:`~dynamat_driver.models.Model` it returns implements ``calculate(atoms, first, stress=True)``
→ ``(energy eV, forces (n, 3) eV/Å, stress eV/Å³ Voigt (6,) or (3, 3), or None)`` and, to batch,
``calculate_batch(atoms_list, stress=True)`` → one such tuple per structure with ``can_batch = True``
(i-PI's batched requests and packed runs then share one call); ``skips_stress = True`` when
``stress=False`` really skips the stress (it is asked for only on the steps whose virial i-PI
writes); ``covered_numbers`` (atomic numbers, None = all); ``prepare(atoms)`` when the model keeps a
reference structure (it then never shares calls between packed runs); ``versions()`` (the
distribution of the plugin is added to ``version_packages`` by the loader). Results are checked
like a user's calculator's (shapes, missing stress), NaN is an explosion.

Discovery (:func:`plugin_families`) happens in the driver only, once per process, and only when a
name is not a registered model or ``--list`` asks; the module is imported then (keep it free of
heavy imports at module level: ``load`` imports the model's package). A plugin that cannot be
imported or speaks another API version never breaks the registered models: its error is listed,
and given when one of its names is asked for.
"""

from __future__ import annotations

import importlib.metadata
import re
from dataclasses import dataclass, field

from .. import DriverError, __version__
from .registry import ALIASES, REGISTRY, ModelInfo

#: version of the adapter interface above; a plugin's ``ADAPTER_API`` must equal it
ADAPTER_API_VERSION = 1
#: the entry-point group plugin packages register their families in
GROUP = "dynamat.models"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")
#: families of the driver itself: a plugin cannot take their names
BUILTIN_FAMILIES = frozenset({m.family for m in REGISTRY.values()} | {"custom"})


@dataclass
class PluginFamily:
    """One registered family: where it comes from, its models, or why it cannot be used."""

    name: str  # the entry point's name
    entry_point: str  # its value, e.g. "dynamat_example_plugin.pairlj"
    distribution: str | None = None  # the package that registers it
    version: str | None = None
    module: object | None = None
    models: dict[str, ModelInfo] = field(default_factory=dict)
    error: str | None = None

    @property
    def source(self) -> str:
        return f"{self.distribution or '?'} {self.version or ''}".strip()


_FAMILIES: dict[str, PluginFamily] | None = None


def plugin_families() -> dict[str, PluginFamily]:
    """Every family of the group ``dynamat.models`` in this environment, by name (discovered once)."""
    global _FAMILIES
    if _FAMILIES is None:
        found: dict[str, PluginFamily] = {}
        taken = set(REGISTRY) | set(ALIASES)
        for ep in sorted(importlib.metadata.entry_points(group=GROUP), key=lambda e: e.name):
            fam = _family(ep, taken if ep.name not in found else set())
            if ep.name in found:
                fam.error = f"plugin family {ep.name!r} is registered twice ({found[ep.name].source}, {fam.source})"
            found.setdefault(ep.name, fam)
            if fam.error is None:
                taken |= set(fam.models)
        _FAMILIES = found
    return _FAMILIES


def _family(ep, taken: set[str]) -> PluginFamily:
    dist = getattr(ep, "dist", None)
    fam = PluginFamily(ep.name, ep.value, getattr(dist, "name", None), getattr(dist, "version", None))
    who = f"plugin family {ep.name!r} ({fam.source}, entry point {ep.value})"
    if ep.name in BUILTIN_FAMILIES or not _NAME.match(ep.name):
        fam.error = f"{who}: the name {ep.name!r} is taken by a built-in family or not a plain name"
        return fam
    try:
        module = ep.load()
    except (Exception, SystemExit) as exc:  # another package's module: any failure is one line
        fam.error = f"{who} cannot be imported: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
        return fam
    api = getattr(module, "ADAPTER_API", None)
    if api != ADAPTER_API_VERSION:
        fam.error = (f"{who} implements adapter API {api!r}; dynamat-driver {__version__} implements "
                     f"{ADAPTER_API_VERSION} (see dynamat_driver.models.plugins): update one of them")
        return fam
    if not callable(getattr(module, "load", None)):
        fam.error = f"{who} defines no load(info, *, device, dtype, model_path, options)"
        return fam
    models = {}
    for info in getattr(module, "MODELS", None) or ():
        if not isinstance(info, ModelInfo) or info.family != ep.name or not _NAME.match(info.name):
            fam.error = (f"{who}: MODELS must hold dynamat_driver.models.ModelInfo entries with family="
                         f"{ep.name!r} and plain names, got {info!r:.120}")
            return fam
        if info.name in taken or info.name in models:
            fam.error = f"{who}: model name {info.name!r} is already taken (the registry's or another plugin's)"
            return fam
        models[info.name] = info
    if not models:
        fam.error = f"{who} lists no MODELS"
        return fam
    fam.module, fam.models = module, models
    return fam


def plugin_model_info(name: str) -> ModelInfo | None:
    """The ModelInfo of a plugin's model ``name``, or None."""
    for fam in plugin_families().values():
        if name in fam.models:
            return fam.models[name]
    return None


def plugin_family(family: str) -> PluginFamily | None:
    return plugin_families().get(family)


def broken_plugins_note() -> str:
    """'; plugin family X ... cannot be imported: ...' for each unusable plugin (error messages)."""
    return "".join(f"; {f.error}" for f in plugin_families().values() if f.error)


def family_module(family: str):
    """A plugin family's adapter module, or a DriverError saying why it cannot be used."""
    fam = plugin_family(family)
    if fam is None:
        raise DriverError(f"no model family {family!r} (neither built in nor registered under {GROUP!r})")
    if fam.error:
        raise DriverError(fam.error)
    return fam.module


__all__ = ["ADAPTER_API_VERSION", "BUILTIN_FAMILIES", "GROUP", "PluginFamily", "broken_plugins_note",
           "family_module", "plugin_families", "plugin_family", "plugin_model_info"]
