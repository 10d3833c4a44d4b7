"""``mattersim-v1-5m``: MatterSim v1.0.0 5M (Microsoft, M3GNet architecture), package ``mattersim``
(1.2.3 on Python 3.11; >= 1.2.4 needs Python >= 3.12).

Loaded as ``MatterSimCalculator(load_path="MatterSim-v1.0.0-5M", device=...)``: MatterSim looks for
``~/.local/mattersim/pretrained_models/mattersim-v1.0.0-5M.pth`` and downloads it from the
microsoft/mattersim GitHub repository when missing (a file copied there by hand is used offline).
``--model-path FILE`` passes a local checkpoint (``.pth``: a dict with ``model_name``,
``model_args``, ``model``) as ``load_path``.

Install note: ``pip install mattersim`` alone replaces a CPU torch 2.13 with PyPI's CUDA torch
2.14; install it in one command with ``torch==2.13.0`` (make_driver_env.sh does), and remove the
CUDA torchvision/torchaudio it pulls (they break at import; MatterSim does not need them).

Precision: float32 only (MatterSim's graph converter builds float32 tensors).

Batched evaluation: MatterSim's own ``build_dataloader`` collates the structures into one graph
batch (as the calculator does with one), ``Potential.forward`` runs once, and energies, forces
and stresses (GPa → eV/Å³ with the calculator's ``stress_weight``) are split per structure.
"""

from __future__ import annotations

import os

from . import (
    CalculatorModel,
    ModelInfo,
    announce_weights,
    check_torch_device,
    load_failed,
    network_unreachable,
    quiet_loading,
    torch_n_params,
    weights_dict,
    weights_unavailable,
)
from ..safe_load import weights_only_torch_load

CHECKPOINT_DIR = os.path.join("~", ".local", "mattersim", "pretrained_models")


def cached_file(info: ModelInfo) -> str:
    return os.path.join(os.path.expanduser(CHECKPOINT_DIR), "mattersim-v1.0.0-5M.pth")


def weights_status(info: ModelInfo) -> dict:
    path = cached_file(info)
    if os.path.isfile(path):
        return weights_dict("cached", path, info.weights_source)
    return weights_dict("download", path, info.weights_source, "MatterSim downloads it on first use")


def load(info: ModelInfo, *, device="cpu", dtype=None, model_path=None, options=None):
    with quiet_loading():
        import torch  # noqa: F401

        try:  # MatterSim logs with loguru straight to the original stderr
            from loguru import logger

            from .helpers import _VERBOSE  # the current value (set_verbose runs after import)

            if not _VERBOSE:
                logger.disable("mattersim")
        except ImportError:
            pass
        from mattersim.forcefield import MatterSimCalculator

        check_torch_device(device)
        if not model_path and not os.path.isfile(cached_file(info)):
            why = network_unreachable(info.weights_source)
            if why:
                raise weights_unavailable(info, cached_file(info), why, "FILE.pth")
        try:
            # MatterSim's torch.load passes no weights_only: data-only under torch >= 2.6 unless
            # TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD is set (`import mace` sets it); forced here
            with weights_only_torch_load():
                calc = MatterSimCalculator(load_path=model_path or info.kwargs["load_path"], device=device)
        except Exception as exc:
            if model_path:
                raise load_failed(info, model_path, exc, "a MatterSim checkpoint (.pth)") from None
            raise weights_unavailable(info, cached_file(info), exc, "FILE.pth") from None
    model = MatterSimModel(info, calc, device=device, dtype=dtype or info.default_dtype)
    announce_weights(model, f"{model_path} (--model-path)" if model_path else cached_file(info))
    return model


class MatterSimModel(CalculatorModel):
    can_batch = True
    #: ``Potential.forward(include_stresses=False)`` takes the gradient w.r.t. the positions only,
    #: without the strain in the graph (MatterSimCalculator's own ``compute_stress=False``)
    skips_stress = True

    def __init__(self, info, calc, device, dtype):
        super().__init__(info, calc, device=device, dtype=dtype)
        self.n_params = torch_n_params(calc.potential.model)
        self.version_packages = ("torch", "mattersim")
        max_z = int(calc.potential.model.model_args.get("max_z", 94))
        self.covered_numbers = frozenset(range(1, max_z + 1))

    def calculate(self, atoms, first: bool, stress: bool = True):
        # MatterSimCalculator.calculate is this batch path with one structure (build_dataloader,
        # batch_size 1): one numerical path, with or without stress
        return self.calculate_batch([atoms], stress=stress)[0]

    def calculate_batch(self, atoms_list, stress: bool = True):
        import numpy as np
        from ase.stress import full_3x3_to_voigt_6_stress
        from mattersim.datasets.utils.build import build_dataloader
        from mattersim.forcefield.potential import batch_to_dict

        calc = self.calc
        pot = calc.potential
        args = pot.model.model_args
        loader = build_dataloader(
            list(atoms_list),
            model_type=pot.model_name,
            cutoff=args["cutoff"],
            threebody_cutoff=args["threebody_cutoff"],
            batch_size=len(atoms_list),
            only_inference=True,
        )
        res = []
        for graph_batch in loader:  # one batch: batch_size = len(atoms_list), no shuffling
            want = stress and calc.compute_stress
            out = pot.forward(batch_to_dict(graph_batch, device=calc.device), include_forces=True,
                              include_stresses=want)
            energy = out["total_energy"].detach().cpu().numpy().reshape(-1)
            forces = out["forces"].detach().cpu().numpy()
            stresses = out["stresses"].detach().cpu().numpy() if want else None
            counts = graph_batch.num_atoms.cpu().numpy().reshape(-1)
            start = 0
            for i in range(len(energy)):
                a = atoms_list[len(res)]
                n = int(counts[i])
                s = None
                if stresses is not None and a.cell.rank == 3:
                    s = calc.stress_weight * np.asarray(full_3x3_to_voigt_6_stress(stresses[i]), dtype=np.float64)
                res.append((float(energy[i]), np.array(forces[start : start + n], dtype=np.float64), s))
                start += n
        return res


__all__ = ["MatterSimModel", "cached_file", "load", "weights_status"]
