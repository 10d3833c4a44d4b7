"""``nequip-oam-xl``: NequIP-OAM-XL 0.1 (MIR group), package ``nequip``.

NequIP serves foundation models as *compiled* models: ``nequip-compile
nequip.net:mir-group/NequIP-OAM-XL:0.1 OUT.nequip.pt2 --mode aotinductor --device cpu|cuda
--target ase`` downloads the package from nequip.net and compiles it (AOTInductor: minutes and a
C++ compiler; TorchScript compilation is not supported with torch >= 2.10), then
``NequIPCalculator.from_compiled_model(OUT, device=...)`` loads it.

The adapter keeps the compiled file in ``$DYNAMAT_NEQUIP_CACHE`` (default
``~/.cache/dynamat/nequip``) as ``NequIP-OAM-XL-0.1.<device>.nequip.pt2`` and compiles it on first
use. nequip asks the nequip.net web API before using its own download cache, so offline a
compiled file (ours, or ``--model-path``) is the way to run.

``--model-path FILE``:
* ``*.nequip.pt2`` / ``*.nequip.pth``: a compiled model, loaded as is;
* ``*.nequip.zip`` (``nequip-package``) or a training checkpoint ``*.ckpt``: compiled once into the
  cache above (file named by the input's SHA-256) and loaded.

Precision is fixed by the compiled model (its training ``model_dtype``); ``--dtype`` is recorded.
Evaluation is sequential: the ``ase`` compile target takes one structure per call.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

from . import (
    CalculatorModel,
    DriverError,
    ModelInfo,
    announce_weights,
    check_torch_device,
    load_failed,
    network_unreachable,
    one_line,
    quiet_loading,
    torch_n_params,
    weights_dict,
    weights_unavailable,
)

COMPILED_SUFFIXES = (".nequip.pt2", ".nequip.pth")


def cache_dir() -> str:
    return os.environ.get("DYNAMAT_NEQUIP_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "dynamat", "nequip")


def _device_kind(device: str) -> str:
    return "cuda" if device.startswith("cuda") else "cpu"


def compiled_file(info: ModelInfo, device: str = "cpu") -> str:
    model_id = info.kwargs["model_id"].split(":", 1)[1]  # mir-group/NequIP-OAM-XL:0.1
    stem = model_id.split("/")[-1].replace(":", "-")
    return os.path.join(cache_dir(), f"{stem}.{_device_kind(device)}.nequip.pt2")


def weights_status(info: ModelInfo) -> dict:
    path = compiled_file(info)
    if os.path.isfile(path):
        return weights_dict("cached", path, info.weights_source)
    return weights_dict("download", path, info.weights_source,
                        "nequip-compile downloads the package from nequip.net and compiles it (minutes)")


def _compile(source: str, out: str, device: str) -> None:
    """Runs nequip-compile (AOTInductor, ase target) in a subprocess; raises RuntimeError with its last line."""
    os.makedirs(os.path.dirname(out), exist_ok=True)
    tmp = out[: -len(".nequip.pt2")] + f".tmp{os.getpid()}.nequip.pt2"
    cmd = [sys.executable, "-m", "nequip.scripts.compile", source, tmp, "--mode", "aotinductor",
           "--device", _device_kind(device), "--target", "ase"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not os.path.isfile(tmp):
        lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        errs = [ln for ln in lines if "Error" in ln or "error" in ln]
        raise RuntimeError(one_line((errs or lines or ["nequip-compile failed"])[-1]))
    os.replace(tmp, out)


def _sha(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def load(info: ModelInfo, *, device="cpu", dtype=None, model_path=None, options=None):
    dtype = dtype or info.default_dtype
    with quiet_loading():
        import torch  # noqa: F401
        from nequip.integrations.ase import NequIPCalculator

        check_torch_device(device)
    if model_path and model_path.endswith(COMPILED_SUFFIXES):
        compiled, where = model_path, f"{model_path} (--model-path, compiled)"
    elif model_path:
        compiled = os.path.join(cache_dir(), f"local-{_sha(model_path)}.{_device_kind(device)}.nequip.pt2")
        where = f"{model_path} (--model-path, compiled to {compiled})"
        if not os.path.isfile(compiled):
            try:
                _compile(model_path, compiled, device)
            except RuntimeError as exc:
                raise load_failed(info, model_path, exc, "a NequIP package (.nequip.zip) or checkpoint") from None
    else:
        compiled = where = compiled_file(info, device)
        if not os.path.isfile(compiled):
            why = network_unreachable("https://www.nequip.net")
            if why:
                raise weights_unavailable(info, compiled, why, "FILE.nequip.zip")
            try:
                _compile(info.kwargs["model_id"], compiled, device)
            except RuntimeError as exc:
                raise weights_unavailable(info, compiled, exc, "FILE.nequip.zip") from None
    with quiet_loading():
        try:
            calc = NequIPCalculator.from_compiled_model(compiled, device=device)
        except Exception as exc:
            if model_path:
                raise load_failed(info, model_path, exc, "a compiled NequIP model (nequip-compile --target ase)") from None
            raise DriverError(f"cannot load the compiled model {compiled}: {one_line(exc)}; delete it to recompile") from None
    model = NequIPModel(info, calc, device=device, dtype=dtype)
    announce_weights(model, where)
    return model


class NequIPModel(CalculatorModel):
    def __init__(self, info, calc, device, dtype):
        super().__init__(info, calc, device=device, dtype=dtype)
        self.version_packages = ("torch", "nequip")
        try:
            self.n_params = torch_n_params(calc.model) or info.n_params
        except Exception:
            pass

    def calculate(self, atoms, first: bool):
        import numpy as np

        self.calc.calculate(atoms)
        r = self.calc.results
        s = np.asarray(r["stress"], dtype=np.float64).reshape(-1) if atoms.cell.rank == 3 and "stress" in r else None
        return float(np.asarray(r["energy"]).reshape(-1)[0]), np.array(r["forces"], dtype=np.float64), s


__all__ = ["NequIPModel", "cache_dir", "compiled_file", "load", "weights_status"]
