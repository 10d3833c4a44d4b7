"""``sevennet-0`` and ``sevennet-l3i5``: SevenNet (Park et al., JCTC 2024), package ``sevenn``.

Loaded as ``SevenNetCalculator(model="7net-0" | "7net-l3i5", device=device)``; both checkpoints
ship inside the sevenn wheel. ``--model-path FILE`` passes a checkpoint (``.pth``) instead.

Sequential evaluation goes through the ASE calculator. Batched evaluation builds each graph as
the calculator does (``unlabeled_atoms_to_graph``), collates them with torch_geometric and runs
the network once in its batch mode, with the calculator's post-processing (stress sign and Voigt
order). Batched and sequential results agree to float32 round-off (~1e-7 eV/Å).

SevenNet runs in float32 only (its own TorchSim interface refuses other dtypes).

Stress on demand (``skips_stress``): sevenn >= 0.10 differentiates the energy once, w.r.t. the edge
vectors, and sums forces and the edge virial from that gradient; with ``stress=False`` the virial
sum is left out (within the timing noise of a call: the stress is nearly free in SevenNet). What makes a
call faster on CPU is elsewhere, and changes no bit (tests/driver/test_driver_stress.py): e3nn's
tensor-product graphs without dead nodes and with one split of their weights
(``e3nn_graphs.py``), and the backward of sevenn's message sum as an ``index_select``
(``_fast_message_gather``). Both paths, sequential and batched, run sevenn's modules in order.
"""

from __future__ import annotations

import contextlib
import warnings

import numpy as np

from ..safe_load import numpy_safe_globals, weights_only_torch_load
from . import one_line, _quiet, CalculatorModel, DriverError, ModelInfo, check_torch_device
from .e3nn_graphs import streamline_tensor_products


def load(info: ModelInfo, *, device="cpu", dtype=None, model_path=None, options=None):
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
        from sevenn.nn.force_output import ForceStressOutputFromEdge

        super().__init__(info, calc, device=device, dtype=dtype)
        self.covered_numbers = frozenset(int(z) for z in calc.type_map)
        self.n_params = int(sum(p.numel() for p in calc.model.parameters()))
        self.version_packages = ("torch", "sevenn", "e3nn", "torch-geometric")
        # sevenn >= 0.10 builds its models with forces and stress from one gradient w.r.t. the edge
        # vectors; the stress is then the edge virial, a sum over edges that can be left out
        self.skips_stress = isinstance(calc.model._modules.get("force_output"), ForceStressOutputFromEdge)
        self.streamlined = streamline_tensor_products(calc.model) if device == "cpu" else 0

    def describe(self) -> dict:
        d = super().describe()
        d["tensor_products_streamlined"] = self.streamlined
        return d

    def calculate(self, atoms, first: bool, stress: bool = True):
        """SevenNetCalculator.calculate's graph and forward (non-batch mode), run module by module so
        that with ``stress=False`` the force module stops after the forces."""
        import sevenn._keys as KEY
        from sevenn.atom_graph_data import AtomGraphData
        from sevenn.train.dataload import unlabeled_atoms_to_graph

        calc = self.calc
        data = AtomGraphData.from_numpy_dict(unlabeled_atoms_to_graph(atoms, calc.cutoff, with_shift=False))
        if calc.modal:
            data[KEY.DATA_MODALITY] = calc.modal
        data.to(calc.device)
        out = self._forward(data, stress)
        energy = float(out[KEY.PRED_TOTAL_ENERGY].detach().cpu().item())
        forces = np.array(out[KEY.PRED_FORCE].detach().cpu().numpy()[: len(atoms)], dtype=np.float64)
        s = None
        if stress and atoms.cell.rank == 3:
            s = np.array((-out[KEY.PRED_STRESS]).detach().cpu().numpy()[[0, 1, 2, 4, 5, 3]], dtype=np.float64)
        return energy, forces, s

    def _forward(self, data, stress: bool):
        """AtomGraphSequential.forward, with the scatter backward of message_gather as an index_select."""
        model = self.calc.model
        with _fast_message_gather():
            data = model._preprocess(data)
            for name, module in model._modules.items():
                if name == "force_output" and not stress and self.skips_stress:
                    data = _forces_only(module, data)
                else:
                    data = module(data)
        return data

    def calculate_batch(self, atoms_list, stress: bool = True):
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
            out = self._forward(batch, stress)
        finally:
            model.set_is_batch_data(False)
        energies = out[KEY.PRED_TOTAL_ENERGY].detach().cpu().numpy().reshape(-1)
        forces = out[KEY.PRED_FORCE].detach().cpu().numpy()
        stresses = None
        if stress:
            stresses = -out[KEY.PRED_STRESS].detach().cpu().numpy().reshape(len(atoms_list), 6)[:, [0, 1, 2, 4, 5, 3]]
        res = []
        start = 0
        for i, a in enumerate(atoms_list):
            n = len(a)
            res.append(
                (
                    float(energies[i]),
                    np.array(forces[start : start + n], dtype=np.float64),
                    np.array(stresses[i], dtype=np.float64) if stresses is not None and a.cell.rank == 3 else None,
                )
            )
            start += n
        return res


def _forces_only(module, data):
    """The forces of sevenn's ForceStressOutputFromEdge.forward, op for op, without its edge virial."""
    import torch
    from sevenn.nn.util import broadcast

    tot_num = torch.sum(data["num_atoms"])
    rij = data[module.key_edge]
    edge_idx = data[module.key_edge_idx]
    fij = torch.autograd.grad([data[module.key_energy].sum()], [rij], create_graph=module.training, allow_unused=True)[0]
    pf = torch.zeros(tot_num, 3, dtype=fij.dtype, device=fij.device)
    nf = torch.zeros(tot_num, 3, dtype=fij.dtype, device=fij.device)
    pf.scatter_reduce_(0, broadcast(edge_idx[0], fij, 0), fij, reduce="sum")
    nf.scatter_reduce_(0, broadcast(edge_idx[1], fij, 0), fij, reduce="sum")
    data[module.key_force] = pf - nf
    return data


@contextlib.contextmanager
def _fast_message_gather():
    """sevenn's message_gather sums edge messages into atoms with ``scatter_reduce_(index expanded to
    the message's shape)``; its backward is a ``gather`` with that expanded index, ~10x slower on a
    CPU than ``index_select`` of the same rows, which returns the same numbers (both copy). Within
    this context the forward is sevenn's own and the backward is the index_select."""
    import sevenn.nn.convolution as conv

    orig = conv.message_gather
    conv.message_gather = _message_gather
    try:
        yield
    finally:
        conv.message_gather = orig


def _message_gather(node_features, edge_dst, message):
    return _MessageGather.apply(len(node_features), edge_dst, message)


def _message_gather_class():
    import torch
    from sevenn.nn.util import broadcast

    class MessageGather(torch.autograd.Function):
        @staticmethod
        def forward(ctx, n_nodes, edge_dst, message):
            ctx.save_for_backward(edge_dst)
            out = torch.zeros([n_nodes] + list(message.shape[1:]), dtype=message.dtype, device=message.device)
            out.scatter_reduce_(0, broadcast(edge_dst, message, 0), message, reduce="sum")
            return out

        @staticmethod
        def backward(ctx, grad):
            (edge_dst,) = ctx.saved_tensors
            return None, None, grad.index_select(0, edge_dst)

    return MessageGather


class _LazyFunction:
    """The autograd Function, built on first use (this module imports no torch at import time)."""

    cls = None

    def apply(self, *args):
        if self.cls is None:
            type(self).cls = _message_gather_class()
        return self.cls.apply(*args)


_MessageGather = _LazyFunction()


__all__ = ["SevenNetModel", "load"]


def _why(exc: BaseException) -> str:
    """One line: torch's weights-only refusal is a page of text; what it means is said here."""
    if type(exc).__name__ == "UnpicklingError":
        return "it holds objects other than tensors and plain data (refused: a model file is loaded as data only)"
    text = one_line(f"{type(exc).__name__}: {exc}")
    return text if len(text) <= 300 else text[:297] + "..."
