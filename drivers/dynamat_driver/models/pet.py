"""``pet-oam-xl``: PET-OAM-XL (lab-cosmo), package ``upet`` (metatrain / metatomic).

Loaded as ``UPETCalculator(model="pet-oam-xl", version="1.0.0", device=...)``, which resolves the
version against the file list of the Hugging Face repository lab-cosmo/upet and downloads
``models/pet-oam-xl-v1.0.0.ckpt`` into huggingface_hub's cache (``$HF_HUB_CACHE``, default
``~/.cache/huggingface/hub``). Because that resolution needs the network even when the file is
cached, the adapter loads a cached checkpoint directly with ``UPETCalculator(checkpoint_path=...)``
(the same call ``--model-path FILE`` makes for a local ``.ckpt``).

Environment: the zoo environment (metatomic-torch needs torch < 2.15).

Precision: float32 by default, ``--dtype float64`` converts the exported model
(``UPETCalculator(dtype=...)``).

Batched evaluation: metatomic's ``MetatomicCalculator.compute_energy(list_of_atoms,
compute_forces_and_stresses=True)`` evaluates all structures in one model call; it is the
calculator underneath ``UPETCalculator`` (without rotational averaging, which is off).
"""

from __future__ import annotations

import os

from . import (
    CalculatorModel,
    DriverError,
    ModelInfo,
    announce_weights,
    check_torch_device,
    hf_cache_pattern,
    hf_cached_file,
    load_failed,
    network_unreachable,
    quiet_loading,
    torch_dtype,
    torch_n_params,
    weights_dict,
    weights_unavailable,
)


def weights_status(info: ModelInfo) -> dict:
    repo, fname = info.kwargs["hf_repo"], info.kwargs["filename"]
    hit = hf_cached_file(repo, fname)
    if hit:
        return weights_dict("cached", hit, info.weights_source)
    return weights_dict("download", hf_cache_pattern(repo, fname), info.weights_source,
                        "UPETCalculator downloads it from Hugging Face on first use")


def load(info: ModelInfo, *, device="cpu", dtype=None, model_path=None, options=None):
    dtype = dtype or info.default_dtype
    repo, fname = info.kwargs["hf_repo"], info.kwargs["filename"]
    cached = None if model_path else hf_cached_file(repo, fname)
    with quiet_loading():
        import torch  # noqa: F401
        from upet.ase import UPETCalculator

        check_torch_device(device)
        try:
            if model_path:
                calc = _load_user_checkpoint(UPETCalculator, model_path, device, dtype)
            elif cached:
                calc = UPETCalculator(checkpoint_path=cached, device=device, dtype=torch_dtype(dtype))
            else:
                why = None if os.environ.get("HF_HUB_OFFLINE") == "1" else network_unreachable(
                    os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
                if why:
                    raise weights_unavailable(info, hf_cache_pattern(repo, fname), why, "FILE.ckpt")
                calc = UPETCalculator(model=info.kwargs["model"], version=info.kwargs["version"], device=device,
                                      dtype=torch_dtype(dtype))
        except DriverError:
            raise
        except Exception as exc:
            if model_path:
                raise load_failed(info, model_path, exc, "a PET (metatrain) checkpoint") from None
            raise weights_unavailable(info, hf_cache_pattern(repo, fname), exc, "FILE.ckpt") from None
    model = PETModel(info, calc, device=device, dtype=dtype)
    announce_weights(model, f"{model_path} (--model-path)" if model_path else (cached or hf_cached_file(repo, fname) or fname))
    return model


class PETModel(CalculatorModel):
    def __init__(self, info, calc, device, dtype):
        super().__init__(info, calc, device=device, dtype=dtype)
        self.version_packages = ("torch", "upet", "metatrain", "metatomic-torch")
        try:
            self.n_params = torch_n_params(calc.calculator._model)
        except Exception:
            pass
        # batched calls go through the metatomic calculator under UPETCalculator
        self.can_batch = hasattr(calc, "calculator") and hasattr(calc.calculator, "compute_energy")

    def calculate(self, atoms, first: bool):
        import numpy as np

        props = ["energy", "forces"] + (["stress"] if atoms.cell.rank == 3 else [])
        self.calc.calculate(atoms, props, ["positions", "cell"])
        r = self.calc.results
        s = np.asarray(r["stress"], dtype=np.float64).reshape(-1) if "stress" in props and "stress" in r else None
        return float(np.asarray(r["energy"]).reshape(-1)[0]), np.array(r["forces"], dtype=np.float64), s

    def calculate_batch(self, atoms_list):
        import numpy as np
        from ase.stress import full_3x3_to_voigt_6_stress

        out = self.calc.calculator.compute_energy(list(atoms_list), compute_forces_and_stresses=True)
        res = []
        for i, a in enumerate(atoms_list):
            s = None
            if "stress" in out and a.cell.rank == 3:
                s = np.asarray(full_3x3_to_voigt_6_stress(np.asarray(out["stress"][i]).reshape(3, 3)), dtype=np.float64)
            res.append((float(out["energy"][i]), np.array(out["forces"][i], dtype=np.float64), s))
        return res


__all__ = ["PETModel", "load", "weights_status"]


def _load_user_checkpoint(calculator, path, device, dtype):
    """A user's metatrain checkpoint read as data: metatrain unpickles with weights_only=False, so the
    load runs under a restricted unpickler that may rebuild only metatrain's dataset/target records
    and metatomic's registered TorchScript classes. An exported model is a TorchScript program: refused."""
    import metatomic.torch  # noqa: F401  registers the TorchScript classes a checkpoint holds
    import torch
    from metatrain.utils.data.dataset import DatasetInfo
    from metatrain.utils.data.target_info import TargetInfo
    from metatrain.utils.io import is_exported_file

    from ..safe_load import weights_only_torch_load

    if is_exported_file(str(path)):
        raise DriverError(f"{path} is an exported (TorchScript) model, which is code; pass a metatrain .ckpt")
    with weights_only_torch_load([DatasetInfo, TargetInfo, torch.ScriptObject]):
        return calculator(checkpoint_path=path, device=device, dtype=torch_dtype(dtype))
