"""What the driver reads from an i-PI ``input.xml``: the socket address and the structure template.

``i-pi input.xml & dynamat-driver --model M`` in the folder ``dynamat inputs`` wrote works without
repeating the socket name (unique per run, e.g. ``dynamat-de08b9b9``): a driver started without
``--unix``/``--inet`` in a folder holding ``input.xml`` connects where that file's ``<ffsocket>``
listens, and takes the structure template named by its ``<parameters>`` (else by
``<initialize><file>``). Standard-library XML only: the driver never imports the server wing.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from . import DriverError
from .protocol import DEFAULT_SOCKETS_PREFIX, Address, inet_address, parse_init_string

INPUT_XML = "input.xml"


@dataclass(frozen=True)
class IpiInput:
    address: Address
    template: str | None  # a structure file, relative to the input's folder resolved; None if absent


def _text(el: ET.Element | None) -> str:
    return (el.text or "").strip() if el is not None else ""


def read_ipi_input(path: str) -> IpiInput:
    """The one ``<ffsocket>``'s address (unix: i-PI's ``sockets_prefix`` + address, as i-PI binds
    it) and the template structure file of the i-PI input at ``path``."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as exc:
        raise DriverError(f"cannot read the i-PI input {path!r}: {exc}") from None
    sockets = root.findall(".//ffsocket")
    if len(sockets) != 1:
        raise DriverError(f"{path} has {len(sockets)} <ffsocket> elements, not one; pass --unix or --inet")
    ff = sockets[0]
    mode = ff.get("mode", "unix").strip().strip("'\"").lower()
    addr = _text(ff.find("address"))
    if mode == "unix":
        if not addr:
            raise DriverError(f"{path}: the <ffsocket> has no <address>; pass --unix")
        prefix = root.get("sockets_prefix", DEFAULT_SOCKETS_PREFIX).strip()
        address = Address("unix", path=prefix + addr)
    elif mode == "inet":
        address = inet_address(f"{addr or 'localhost'}:{_text(ff.find('port')) or 65535}")
    else:
        raise DriverError(f"{path}: <ffsocket mode='{mode}'> is neither unix nor inet")
    folder = os.path.dirname(os.path.abspath(path))
    named = parse_init_string(_text(ff.find("parameters"))).get("template") or _text(root.find(".//initialize/file"))
    template = os.path.join(folder, named) if named else None
    return IpiInput(address, template if template and os.path.isfile(template) else None)


def input_in(folder: str = ".") -> str | None:
    """``folder/input.xml`` if there is one."""
    path = os.path.join(folder, INPUT_XML)
    return path if os.path.isfile(path) else None
