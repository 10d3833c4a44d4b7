"""``sevennet-0`` and ``sevennet-l3i5``: SevenNet (Park et al., JCTC 2024), package ``sevenn``.

Loaded as ``SevenNetCalculator(model="7net-0" | "7net-l3i5", device=device)``; both checkpoints
ship inside the sevenn wheel. ``--model-path FILE`` passes a checkpoint (``.pth``) instead.

Sequential evaluation goes through the ASE calculator. Batched evaluation builds each graph as
the calculator does (``unlabeled_atoms_to_graph``), collates them with torch_geometric and runs
the network once in its batch mode, with the calculator's post-processing (stress sign and Voigt
order). Batched and sequential results agree to float32 round-off (~1e-7 eV/Å).

SevenNet runs in float32 only (its own TorchSim interface refuses other dtypes).
"""

from __future__ import annotations

import contextlib
import warnings

import numpy as np

from ..safe_load import numpy_safe_globals, weights_only_torch_load
from . import one_line, _quiet, CalculatorModel, DriverError, ModelInfo, check_torch_device, reject_unknown_options


def load(info: ModelInfo, *, device="cpu", dtype=None, model_path=None, options=None):
    reject_unknown_options(options or {}, [], info.name)
    with contextlib.redirect_stdout(_quiet()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import torch  # noqa: F401
        from sevenn.calculator import SevenNetCalculator

        check_torch_device(device)
        checkpoint = model_path or info.kwargs["checkpoint"]
        try:
            # SevenNet's checkpoint reader unpickles with weights_only=False; its files are data
            with weights_only_torch_load(numpy_safe_globals()):
                calc = SevenNetCalculator(model=checkpoint, device=device)
        except Exception as exc:  # torch/pickle raise many kinds
            what = f"the file {model_path}" if model_path else f"SevenNet checkpoint {checkpoint}"
            hint = (
                "check that it is a SevenNet checkpoint (.pth)"
                if model_path
                else "reinstall sevenn or pass a checkpoint with --model-path FILE"
            )
            raise DriverError(f"cannot load {what}: {_why(exc)}; {hint}") from None
    return SevenNetModel(info, calc, device=device, dtype=dtype or info.default_dtype)


class SevenNetModel(CalculatorModel):
    can_batch = True

    def __init__(self, info, calc, device, dtype):
        super().__init__(info, calc, device=device, dtype=dtype)
        self.covered_numbers = frozenset(int(z) for z in calc.type_map)
        self.n_params = int(sum(p.numel() for p in calc.model.parameters()))
        self.version_packages = ("torch", "sevenn", "e3nn", "torch-geometric")

    def calculate_batch(self, atoms_list):
        import sevenn._keys as KEY
        from sevenn.atom_graph_data import AtomGraphData
        from sevenn.train.dataload import unlabeled_atoms_to_graph
        from torch_geometric.loader.dataloader import Collater

        calc = self.calc
        data_list = [
            AtomGraphData.from_numpy_dict(unlabeled_atoms_to_graph(a, calc.cutoff, with_shift=False))
            for a in atoms_list
        ]
        if calc.modal:
            for d in data_list:
                d[KEY.DATA_MODALITY] = calc.modal
        batch = Collater([], follow_batch=None, exclude_keys=None)(data_list)
        batch.to(calc.device)
        model = calc.model
        model.set_is_batch_data(True)
        try:
            out = model(batch)
        finally:
            model.set_is_batch_data(False)
        energies = out[KEY.PRED_TOTAL_ENERGY].detach().cpu().numpy().reshape(-1)
        forces = out[KEY.PRED_FORCE].detach().cpu().numpy()
        stress = -out[KEY.PRED_STRESS].detach().cpu().numpy().reshape(len(atoms_list), 6)[:, [0, 1, 2, 4, 5, 3]]
        res = []
        start = 0
        for i, a in enumerate(atoms_list):
            n = len(a)
            res.append(
                (
                    float(energies[i]),
                    np.array(forces[start : start + n], dtype=np.float64),
                    np.array(stress[i], dtype=np.float64) if a.cell.rank == 3 else None,
                )
            )
            start += n
        return res


__all__ = ["SevenNetModel", "load"]


def _why(exc: BaseException) -> str:
    """One line: torch's weights-only refusal is a page of text; what it means is said here."""
    if type(exc).__name__ == "UnpicklingError":
        return "it holds objects other than tensors and plain data (refused: a model file is loaded as data only)"
    text = one_line(f"{type(exc).__name__}: {exc}")
    return text if len(text) <= 300 else text[:297] + "..."
