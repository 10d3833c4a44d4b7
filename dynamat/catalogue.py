"""The system catalogue (``dynamat/data/systems.toml``): class, temperature, 2D/3D and protocol."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, replace
from functools import lru_cache
from importlib import resources

from dynamat.errors import DynamatError
from dynamat.ipi_input import MDSettings


@dataclass(frozen=True)
class Protocol:
    name: str
    paper_thermostat: str
    ipi_thermostat: str
    timestep_fs: float
    tau_fs: float
    stride: int  # MD steps between saved frames
    time_ps: float
    burn_in_ps: float = 0.0  # leading MD time dropped before scoring
    relax: bool = False  # relax positions and cell with the model first (paper Fig. S5)
    relax_fmax_eV_per_A: float = 0.01
    relax_max_steps: int = 500

    @property
    def steps(self) -> int:
        """MD steps for the full protocol length."""
        return int(round(self.time_ps * 1000.0 / self.timestep_fs))


@dataclass(frozen=True)
class System:
    name: str
    system_class: str
    temperature_K: float
    dims: int
    protocol: Protocol
    in_catalogue: bool = True

    def md_settings(self, steps: int | None = None, seed: int = 12345, nbeads: int = 1) -> MDSettings:
        p = self.protocol
        return MDSettings(
            thermostat=p.ipi_thermostat,
            timestep_fs=p.timestep_fs,
            tau_fs=p.tau_fs,
            stride=p.stride,
            steps=p.steps if steps is None else int(steps),
            temperature_K=self.temperature_K,
            seed=seed,
            nbeads=nbeads,
        )


@lru_cache(maxsize=1)
def _raw() -> dict:
    return tomllib.loads(resources.files("dynamat.data").joinpath("systems.toml").read_text())


def protocol_names() -> list[str]:
    return sorted(_raw()["protocols"])


def with_protocol(system: System, name: str | None) -> System:
    """``system`` run under another catalogue protocol (e.g. the relaxed-cell one), or unchanged."""
    if not name:
        return system
    if name not in _raw()["protocols"]:
        raise DynamatError(f"unknown protocol {name!r}; known: {', '.join(protocol_names())}")
    return replace(system, protocol=protocol(name))


def protocol(name: str) -> Protocol:
    try:
        p = _raw()["protocols"][name]
    except KeyError:
        raise DynamatError(f"unknown protocol {name!r}") from None
    return Protocol(name=name, **p)


def system_names() -> list[str]:
    return sorted(_raw()["systems"])


def classes() -> dict[str, str]:
    return dict(_raw()["classes"])


def get_system(name: str, attrs: dict | None = None) -> System:
    """The catalogue entry for ``name``, checked against reference-file ``attrs`` when given.

    A system missing from the catalogue is accepted when the reference file states its class
    (attribute ``system_class``) and temperature (``temperature_kelvin``): its protocol is that of
    its class. Otherwise it is an error.
    """
    attrs = attrs or {}
    entry = _raw()["systems"].get(name)
    if entry is None:
        cls = attrs.get("system_class")
        temp = attrs.get("temperature_kelvin")
        if cls is None or temp is None:
            raise DynamatError(
                f"unknown system {name!r}: not in the catalogue, and the reference file does not give "
                "its system_class and temperature_kelvin (known: " + ", ".join(system_names()) + ")"
            )
        if cls not in classes():
            raise DynamatError(f"system {name!r} has unknown class {cls!r}; known: {', '.join(classes())}")
        return System(
            name=name,
            system_class=str(cls),
            temperature_K=float(temp),
            dims=int(attrs.get("dims", 3)),
            protocol=protocol(classes()[cls]),
            in_catalogue=False,
        )
    temp = float(entry["temperature_K"])
    if "temperature_kelvin" in attrs and abs(float(attrs["temperature_kelvin"]) - temp) > 1e-6:
        raise DynamatError(
            f"system {name!r}: the reference file says {attrs['temperature_kelvin']} K, "
            f"the catalogue {temp} K"
        )
    return System(
        name=name,
        system_class=entry["class"],
        temperature_K=temp,
        dims=int(entry.get("dims", 3)),
        protocol=protocol(entry["protocol"]),
    )
