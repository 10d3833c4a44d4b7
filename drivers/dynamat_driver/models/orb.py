"""``orb-v2`` and ``orb-v3-conservative-inf-mpa`` (alias ``orb-v3``): Orbital Materials' orb
models, package ``orb-models`` (0.5.x on Python 3.11; 0.6 needs Python >= 3.12).

Loaded as ``ORBCalculator(pretrained.orb_v2(device=, precision=, compile=False), device=)`` or
``pretrained.orb_v3_conservative_inf_mpa(...)``. The loaders fetch the checkpoint from Orbital
Materials' S3 bucket with ``cached_path`` into ``$CACHED_PATH_CACHE_ROOT`` (default
``~/.cache/cached_path``, file named by the SHA-256 of the URL); offline, a cached copy is used.
``--model-path FILE`` passes a local checkpoint as the loader's ``weights_path=`` (a state dict
for the same architecture).

``compile=False`` always: orb compiles with ``torch.compile`` by default, which costs minutes on
a CPU and changes nothing in the results. Precision: float32 by default (orb's
``precision="float32-high"``), ``--dtype float64`` → ``precision="float64"``. Note that orb's
loader sets torch's *global* default dtype to the model's dtype (a process-wide side effect;
this driver process serves one model).

Batched evaluation builds each structure's graph as ``ORBCalculator`` does
(``ase_atoms_to_atom_graphs`` with the calculator's settings), joins them with ``batch_graphs``
and calls ``model.predict`` once; the per-structure results are split by ``n_node``.
"""

from __future__ import annotations

from . import (
    CalculatorModel,
    ModelInfo,
    announce_weights,
    cached_path_file,
    cached_path_root,
    check_torch_device,
    load_failed,
    network_unreachable,
    quiet_loading,
    torch_n_params,
    weights_dict,
    weights_unavailable,
)


def _url(info: ModelInfo) -> str:
    return info.weights_source.split()[0]


def weights_status(info: ModelInfo) -> dict:
    url = _url(info)
    hit = cached_path_file(url)
    if hit:
        return weights_dict("cached", hit, url)
    return weights_dict("download", cached_path_root(), url, "cached_path downloads it on first use")


def load(info: ModelInfo, *, device="cpu", dtype=None, model_path=None, options=None):
    dtype = dtype or info.default_dtype
    precision = "float64" if dtype == "float64" else "float32-high"
    url = _url(info)
    with quiet_loading():
        import torch  # noqa: F401
        from orb_models.forcefield import pretrained
        from orb_models.forcefield.calculator import ORBCalculator

        check_torch_device(device)
        loader = getattr(pretrained, info.kwargs["loader"])
        if not model_path and not cached_path_file(url):
            why = network_unreachable(url)
            if why:
                raise weights_unavailable(info, cached_path_root(), why, "FILE.ckpt")
        try:
            net = loader(weights_path=model_path or url, device=device, precision=precision, compile=False)
        except Exception as exc:
            if model_path:
                raise load_failed(info, model_path, exc, f"an {info.human_name} checkpoint (state dict)") from None
            raise weights_unavailable(info, cached_path_root(), exc, "FILE.ckpt") from None
        calc = ORBCalculator(net, device=device)
    model = OrbModel(info, calc, device=device, dtype=dtype)
    announce_weights(model, f"{model_path} (--model-path)" if model_path else (cached_path_file(url) or url))
    return model


class OrbModel(CalculatorModel):
    can_batch = True

    def __init__(self, info, calc, device, dtype):
        super().__init__(info, calc, device=device, dtype=dtype)
        self.n_params = torch_n_params(calc.model)
        self.version_packages = ("torch", "orb-models")

    def describe(self) -> dict:
        d = super().describe()
        d["conservative"] = bool(self.calc.conservative)
        return d

    def calculate(self, atoms, first: bool):
        """The calculator's own path (ORBCalculator recomputes on every call)."""
        import numpy as np

        self.calc.calculate(atoms)
        r = self.calc.results
        stress = np.asarray(r["stress"], dtype=np.float64).reshape(-1) if atoms.cell.rank == 3 and "stress" in r else None
        return float(np.asarray(r["energy"]).reshape(-1)[0]), np.array(r["forces"], dtype=np.float64), stress

    def calculate_batch(self, atoms_list):
        import numpy as np
        from orb_models.forcefield.atomic_system import ase_atoms_to_atom_graphs
        from orb_models.forcefield.base import batch_graphs

        calc = self.calc
        graphs = [
            ase_atoms_to_atom_graphs(
                a,
                system_config=calc.system_config,
                max_num_neighbors=calc.max_num_neighbors,
                edge_method=calc.edge_method,
                half_supercell=calc.half_supercell,
                device=calc.device,
            )
            for a in atoms_list
        ]
        batch = batch_graphs(graphs).to(calc.device)
        out = calc.model.predict(batch)
        net = calc.model
        if calc.conservative:
            f_key = net.grad_forces_name
            s_key = net.grad_stress_name if net.has_stress else None
        else:
            f_key, s_key = "forces", ("stress" if "stress" in out else None)
        energy = out["energy"].detach().cpu().numpy().reshape(-1)
        forces = out[f_key].detach().cpu().numpy()
        stress = None if s_key is None else out[s_key].detach().cpu().numpy().reshape(len(atoms_list), -1)
        counts = batch.n_node.cpu().numpy()
        res, start = [], 0
        for i, a in enumerate(atoms_list):
            n = int(counts[i])
            s = np.asarray(stress[i], dtype=np.float64) if stress is not None and a.cell.rank == 3 else None
            res.append((float(energy[i]), np.array(forces[start : start + n], dtype=np.float64), s))
            start += n
        return res


__all__ = ["OrbModel", "load", "weights_status"]
