"""``chgnet``: CHGNet 0.3.0 (Deng et al., Nat. Mach. Intell. 2023), package ``chgnet``.

Loaded as ``CHGNetCalculator(model=CHGNet.load(model_name="0.3.0", use_device=device))``; the
weights ship inside the chgnet wheel. ``--model-path FILE`` loads ``CHGNet.from_file(FILE)``
instead (a ``.pth.tar`` checkpoint as CHGNet saves them).

Every evaluation, one structure or i-PI's batches, converts each structure with the model's graph
converter and calls ``CHGNet.predict_graph`` on groups of at most ``batch_edges`` graph edges
(option, default 20,000: the driver stays within ~1 GB), with the calculator's post-processing
(energy × n_atoms, stress GPa → eV/Å³) and first-order autograd (see ``_first_order_autograd``:
CHGNet's own create_graph=True is for training and cost 3.5× the memory).

``--dtype float64`` runs the network in double precision. CHGNet hard-codes float32 in its graph
converter and composition model; the adapter sets the modules' ``TORCH_DTYPE`` to float64
around each call (restored afterwards) and casts the composition-model input, so float32
CHGNet objects elsewhere in the same process are unaffected. Double precision is ~2× slower on
a CPU and not how CHGNet was trained; it exists for exact comparisons.
"""

from __future__ import annotations

import contextlib

import numpy as np

from ..safe_load import weights_only_torch_load
from . import (
    one_line,
    _quiet, CalculatorModel, DriverError, ModelInfo, check_torch_device, parse_float_option,
)

#: CHGNet's atom embedding covers Z = 1..94.
CHGNET_MAX_Z = 94


def load(info: ModelInfo, *, device="cpu", dtype=None, model_path=None, options=None):
    options = options or {}
    batch_edges = parse_float_option(options, "batch_edges", DEFAULT_BATCH_EDGES, info.name)
    if not batch_edges >= 1:
        raise DriverError(f"model {info.name!r}: batch_edges must be >= 1, got {batch_edges:g}")
    with contextlib.redirect_stdout(_quiet()):  # CHGNet prints its device on stdout
        import torch
        from chgnet.model import CHGNet, CHGNetCalculator

        check_torch_device(device)
        dtype = dtype or info.default_dtype
        model_name = info.kwargs.get("model_name", "0.3.0")
        try:
            if model_path:
                # CHGNet.from_file unpickles with weights_only=False: read the file as data ourselves
                state = torch.load(model_path, map_location="cpu", weights_only=True)
                if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
                    raise ValueError("no 'model' dict of state_dict and model_args in it")
                model = CHGNet.from_dict(state["model"])
            else:
                with weights_only_torch_load():
                    model = CHGNet.load(model_name=model_name, use_device="cpu", verbose=False)
        except Exception as exc:  # torch/pickle raise many kinds
            what = f"the file {model_path}" if model_path else f"CHGNet {model_name} weights"
            hint = (
                "check that it is a CHGNet checkpoint (.pth.tar)"
                if model_path
                else "reinstall chgnet or pass a checkpoint with --model-path FILE"
            )
            raise DriverError(f"cannot load {what}: {_why(exc)}; {hint}") from None
        if dtype == "float64":
            model = model.double()
            model.composition_model.fc.register_forward_pre_hook(_cast_to_weight_dtype)
        calc = CHGNetCalculator(model=model, use_device=device)
    return CHGNetModel(info, calc, device=device, dtype=dtype, torch_dtype=torch.float64 if dtype == "float64" else None,
                       batch_edges=int(batch_edges))


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


#: graph edges (bonds + angles) evaluated in one forward pass at most. With first-order autograd a
#: 32-atom Ti cell (1,792 bonds, 2,952 angles) takes ~0.115 GB of working memory in CHGNet 0.3.0, so
#: ~24 kB per edge: 20,000 edges keep a batch within ~0.5 GB over the loaded model (~0.37 GB), i.e.
#: the driver within 1 GB (benchmarks/bench_singlepoint_memory.py). Option ``batch_edges``.
DEFAULT_BATCH_EDGES = 20_000


@contextlib.contextmanager
def _first_order_autograd():
    """CHGNet's forward asks ``torch.autograd.grad(..., create_graph=True)`` for forces and stress:
    it keeps the graph of the gradients so that training can differentiate the force loss. For
    inference that graph is dead weight, and it is where the memory went: 4.45 GB for eight 32-atom
    Ti cells in one batch against 1.3 GB without it (and ~25 % less time). Within this context
    CHGNet's gradients are first-order. The values differ from CHGNetCalculator's by float32
    round-off only (backward kernels in no-grad mode round differently, ~1e-5 eV/Å), and the
    driver uses this path for every call, batched or not, so batch sizes give identical results."""
    import torch

    orig = torch.autograd.grad

    def grad(*args, **kwargs):
        kwargs["create_graph"] = False
        return orig(*args, **kwargs)

    torch.autograd.grad = grad
    try:
        yield
    finally:
        torch.autograd.grad = orig


class CHGNetModel(CalculatorModel):
    can_batch = True
    skips_stress = True
    covered_numbers = frozenset(range(1, CHGNET_MAX_Z + 1))

    def __init__(self, info, calc, device, dtype, torch_dtype, batch_edges: int = DEFAULT_BATCH_EDGES):
        super().__init__(info, calc, device=device, dtype=dtype)
        self.torch_dtype = torch_dtype
        self.batch_edges = int(batch_edges)
        self.n_params = int(calc.model.n_params)
        self.version_packages = ("torch", "chgnet", "pymatgen")

    def calculate(self, atoms, first: bool, stress: bool = True):
        # the same code as a batch (not CHGNetCalculator.calculate): one numerical path for all
        return self.calculate_batch([atoms], stress=stress)[0]

    def _chunks(self, graphs):
        """Consecutive groups of graphs with at most ``batch_edges`` edges (at least one graph)."""
        chunk, edges = [], 0
        for g in graphs:
            e = int(g.atom_graph.shape[0]) + int(g.bond_graph.shape[0])
            if chunk and edges + e > self.batch_edges:
                yield chunk
                chunk, edges = [], 0
            chunk.append(g)
            edges += e
        if chunk:
            yield chunk

    def calculate_batch(self, atoms_list, stress: bool = True):
        """``stress=False``: task "ef", no strain in the graph and no second backward pass. The
        forces are bitwise those of "efsm" (the strain enters as lattice @ (I + 0), exact in
        floating point, and the force gradient does not pass through it): test_driver_stress.py."""
        from pymatgen.io.ase import AseAtomsAdaptor

        calc = self.calc
        model = calc.model
        preds = []
        with _torch_dtype(self.torch_dtype), _first_order_autograd():
            structures = [AseAtomsAdaptor.get_structure(a) for a in atoms_list]
            graphs = [model.graph_converter(s).to(calc.device) for s in structures]
            for chunk in self._chunks(graphs):
                p = model.predict_graph(chunk, task="efsm" if stress else "ef", batch_size=len(chunk))
                preds.extend([p] if isinstance(p, dict) else p)
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

    def describe(self) -> dict:
        d = super().describe()
        d["batch_edges"] = self.batch_edges
        return d


__all__ = ["CHGNetModel", "DEFAULT_BATCH_EDGES", "load"]


def _why(exc: BaseException) -> str:
    """One line: torch's weights-only refusal is a page of text; what it means is said here."""
    if type(exc).__name__ == "UnpicklingError":
        return "it holds objects other than tensors and plain data (refused: a model file is loaded as data only)"
    text = one_line(f"{type(exc).__name__}: {exc}")
    return text if len(text) <= 300 else text[:297] + "..."
