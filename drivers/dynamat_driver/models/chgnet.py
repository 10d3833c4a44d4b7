"""``chgnet``: CHGNet 0.3.0 (Deng et al., Nat. Mach. Intell. 2023), package ``chgnet``.

Loaded as ``CHGNetCalculator(model=CHGNet.load(model_name="0.3.0", use_device=device))``; the
weights ship inside the chgnet wheel. ``--model-path FILE`` loads ``CHGNet.from_file(FILE)``
instead (a ``.pth.tar`` checkpoint as CHGNet saves them).

Sequential evaluation goes through the ASE calculator unchanged. Batched evaluation (i-PI's
``batch_size`` > 1) converts each structure with the same graph converter and calls
``CHGNet.predict_graph`` once on the list, with the same post-processing as the calculator
(energy × n_atoms, stress GPa → eV/Å³).

``--dtype float64`` runs the network in double precision. CHGNet hard-codes float32 in its graph
converter and composition model; the adapter sets the modules' ``TORCH_DTYPE`` to float64
around each call (restored afterwards) and casts the composition-model input, so float32
CHGNet objects elsewhere in the same process are unaffected. Double precision is ~2× slower on
a CPU and not how CHGNet was trained; it exists for exact comparisons.
"""

from __future__ import annotations

import contextlib

import numpy as np

from . import _quiet, CalculatorModel, DriverError, ModelInfo, check_torch_device, reject_unknown_options

#: CHGNet's atom embedding covers Z = 1..94.
CHGNET_MAX_Z = 94


def load(info: ModelInfo, *, device="cpu", dtype=None, model_path=None, options=None):
    reject_unknown_options(options or {}, [], info.name)
    with contextlib.redirect_stdout(_quiet()):  # CHGNet prints its device on stdout
        import torch
        from chgnet.model import CHGNet, CHGNetCalculator

        check_torch_device(device)
        dtype = dtype or info.default_dtype
        model_name = info.kwargs.get("model_name", "0.3.0")
        try:
            if model_path:
                model = CHGNet.from_file(model_path)
            else:
                model = CHGNet.load(model_name=model_name, use_device="cpu", verbose=False)
        except Exception as exc:  # torch/pickle raise many kinds
            what = f"the file {model_path}" if model_path else f"CHGNet {model_name} weights"
            hint = (
                "check that it is a CHGNet checkpoint (.pth.tar)"
                if model_path
                else "reinstall chgnet or pass a checkpoint with --model-path FILE"
            )
            raise DriverError(f"cannot load {what}: {type(exc).__name__}: {exc}; {hint}") from None
        if dtype == "float64":
            model = model.double()
            model.composition_model.fc.register_forward_pre_hook(_cast_to_weight_dtype)
        calc = CHGNetCalculator(model=model, use_device=device)
    return CHGNetModel(info, calc, device=device, dtype=dtype, torch_dtype=torch.float64 if dtype == "float64" else None)


def _cast_to_weight_dtype(module, args):
    return tuple(a.to(module.weight.dtype) if hasattr(a, "is_floating_point") and a.is_floating_point() else a for a in args)


@contextlib.contextmanager
def _torch_dtype(dtype):
    """Temporarily sets CHGNet's module-level TORCH_DTYPE (float32 is hard-coded there)."""
    if dtype is None:
        yield
        return
    import chgnet.graph.converter as gc
    import chgnet.graph.crystalgraph as cg
    import chgnet.model.model as mm

    saved = [(m, m.TORCH_DTYPE) for m in (gc, cg, mm)]
    for m, _ in saved:
        m.TORCH_DTYPE = dtype
    try:
        yield
    finally:
        for m, old in saved:
            m.TORCH_DTYPE = old


class CHGNetModel(CalculatorModel):
    can_batch = True
    skips_stress = True
    covered_numbers = frozenset(range(1, CHGNET_MAX_Z + 1))

    def __init__(self, info, calc, device, dtype, torch_dtype):
        super().__init__(info, calc, device=device, dtype=dtype)
        self.torch_dtype = torch_dtype
        self.n_params = int(calc.model.n_params)
        self.version_packages = ("torch", "chgnet", "pymatgen")

    def calculate(self, atoms, first: bool, stress: bool = True):
        from ase.calculators.calculator import all_changes

        with _torch_dtype(self.torch_dtype):
            if stress:  # the calculator's own path, unchanged (task "efsm")
                return super().calculate(atoms, first)
            # task "ef": no strain in the graph, no second backward pass. The forces are bitwise
            # those of "efsm" (the strain enters as lattice @ (I + 0), exact in floating point,
            # and the force gradient does not pass through it): tested in test_driver_stress.py
            self.calc.calculate(atoms, ["energy", "forces"], list(all_changes) if first else ["positions", "cell"],
                                task="ef")
            res = self.calc.results
            return float(res["energy"]), np.array(res["forces"], dtype=np.float64), None

    def calculate_batch(self, atoms_list, stress: bool = True):
        from pymatgen.io.ase import AseAtomsAdaptor

        calc = self.calc
        model = calc.model
        with _torch_dtype(self.torch_dtype):
            structures = [AseAtomsAdaptor.get_structure(a) for a in atoms_list]
            graphs = [model.graph_converter(s).to(calc.device) for s in structures]
            preds = model.predict_graph(graphs, task="efsm" if stress else "ef", batch_size=len(graphs))
        if isinstance(preds, dict):
            preds = [preds]
        out = []
        for s, p in zip(structures, preds):
            factor = len(s) if model.is_intensive else 1
            out.append(
                (
                    float(p["e"] * factor),
                    np.array(p["f"], dtype=np.float64),
                    np.array(p["s"], dtype=np.float64) * calc.stress_weight if stress else None,
                )
            )
        return out


__all__ = ["CHGNetModel", "load"]
