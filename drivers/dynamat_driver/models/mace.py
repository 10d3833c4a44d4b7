"""``mace-mp-0``, ``mace-mpa-0``, ``mace-mh-1-omat``: MACE foundation models, package ``mace-torch``.

Loaded as ``mace_mp(model="medium" | "medium-mpa-0" | "mh-1", device=..., default_dtype=...)``
(MACE-MH-1 with ``head="omat_pbe"``). ``mace_mp`` downloads the checkpoint from the GitHub
releases of ACEsuit/mace-mp or ACEsuit/mace-foundations into ``$XDG_CACHE_HOME/mace`` (default
``~/.cache/mace``), under the file name with every character but letters, digits and ``_``
removed (``2023-12-03-mace-128-L1_epoch-199.model`` → ``20231203mace128L1_epoch199model``);
a file placed there by hand is used without a download. ``--model-path FILE`` loads a local
``.model`` file through the same ``mace_mp(model=FILE)`` call.

Environment: mace-torch pins e3nn 0.4.4 and its official ``.model`` files are pickles that load
only under it, so MACE gets its own environment (``run_scripts/make_driver_env.sh mace-mp-0``).
``import mace`` sets ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` for the whole process (its pickled
models need full unpickling); importing e3nn 0.4.4 before mace fails under torch >= 2.6.

Precision: float32 by default (the paper's timing protocol; MACE's own default), ``--dtype
float64`` converts the model to double precision.

Batched evaluation (i-PI's ``batch_size`` > 1) builds each structure's graph as
``MACECalculator`` does (``config_from_atoms`` → ``AtomicData.from_config``), collates them
into one ``torch_geometric`` batch and runs the network once; energy, forces and stress are then
split per structure with the calculator's post-processing. Sequential and batched results agree
to float round-off. Committees, compiled or padded calculators fall back to sequential calls.
"""

from __future__ import annotations

import os

from . import (
    CalculatorModel,
    DriverError,
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

#: the URLs mace-torch 0.3.16 uses for the registry's checkpoint names (mace_mp_urls)
MACE_URLS = {
    "medium": "https://github.com/ACEsuit/mace-mp/releases/download/mace_mp_0/2023-12-03-mace-128-L1_epoch-199.model",
    "medium-mpa-0": "https://github.com/ACEsuit/mace-mp/releases/download/mace_mpa_0/mace-mpa-0-medium.model",
    "mh-1": "https://github.com/ACEsuit/mace-foundations/releases/download/mace_mh_1/mace-mh-1.model",
}


def cache_dir() -> str:
    """mace.tools.utils.get_cache_dir(), computed without importing mace."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "mace")


def cached_file(checkpoint: str) -> str:
    """Where mace_mp keeps (or would download) the checkpoint named ``checkpoint``."""
    url = MACE_URLS.get(checkpoint, checkpoint)
    name = "".join(c for c in os.path.basename(url) if c.isalnum() or c == "_")
    return os.path.join(cache_dir(), name)


def _wheel_file(checkpoint: str) -> str | None:
    """mace-torch may ship MPA-0 inside the package (foundations_models/mace-mpa-0-medium.model)."""
    if checkpoint != "medium-mpa-0":
        return None
    from . import package_dir

    d = package_dir("mace")
    p = os.path.join(d, "calculators", "foundations_models", "mace-mpa-0-medium.model") if d else None
    return p if p and os.path.isfile(p) else None


def weights_status(info: ModelInfo) -> dict:
    ckpt = info.kwargs["model"]
    wheel = _wheel_file(ckpt)
    if wheel:
        return weights_dict("in-wheel", wheel, info.weights_source)
    path = cached_file(ckpt)
    if os.path.isfile(path):
        return weights_dict("cached", path, info.weights_source)
    return weights_dict("download", path, info.weights_source, f"mace_mp downloads it into {path}")


def load(info: ModelInfo, *, device="cpu", dtype=None, model_path=None, options=None):
    options = dict(options or {})
    dtype = dtype or info.default_dtype
    head = options.get("head", info.kwargs.get("head"))
    checkpoint = info.kwargs["model"]
    with quiet_loading():
        import mace  # noqa: F401  (first: sets TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD before e3nn loads)
        from mace.calculators import mace_mp

        check_torch_device(device)
        kwargs = {"head": head} if head else {}
        if not model_path and not (_wheel_file(checkpoint) or os.path.isfile(cached_file(checkpoint))):
            why = network_unreachable(MACE_URLS.get(checkpoint, checkpoint))
            if why:
                raise weights_unavailable(info, cached_file(checkpoint), why, "FILE.model")
        try:
            calc = mace_mp(model=model_path or checkpoint, device=device, default_dtype=dtype, **kwargs)
        except Exception as exc:  # mace_mp wraps download errors in RuntimeError
            if model_path:
                raise load_failed(info, model_path, exc.__cause__ or exc, "a MACE .model file") from None
            raise weights_unavailable(info, cached_file(checkpoint), exc.__cause__ or exc, "FILE.model") from None
    if head and calc.head != head:
        raise DriverError(
            f"model {info.name!r}: the checkpoint has no head {head!r} (heads: {', '.join(calc.available_heads)})"
        )
    model = MACEModel(info, calc, device=device, dtype=dtype)
    if model_path:
        where = f"{model_path} (--model-path)"
    else:
        where = _wheel_file(checkpoint) or cached_file(checkpoint)
    announce_weights(model, where)
    return model


class MACEModel(CalculatorModel):
    def __init__(self, info, calc, device, dtype):
        super().__init__(info, calc, device=device, dtype=dtype)
        self.covered_numbers = frozenset(int(z) for z in calc.z_table.zs)
        self.n_params = torch_n_params(calc.models[0])
        self.version_packages = ("torch", "mace-torch", "e3nn")
        self.can_batch = (
            calc.num_models == 1
            and not getattr(calc, "use_compile", False)
            and not (getattr(calc, "pad_num_atoms", 0) or getattr(calc, "pad_num_edges", 0))
        )
        # the model's forward takes compute_stress: without it MACE differentiates the energy w.r.t.
        # the positions only, with no symmetric displacement in the graph. Single structures then
        # take the batch path too (a batch of one, as MACECalculator builds it): one numerical path
        self.skips_stress = self.can_batch

    def calculate(self, atoms, first: bool, stress: bool = True):
        if self.skips_stress:
            return self.calculate_batch([atoms], stress=stress)[0]
        return super().calculate(atoms, first, stress)

    def describe(self) -> dict:
        d = super().describe()
        d["head"] = self.calc.head
        return d

    def calculate_batch(self, atoms_list, stress: bool = True):
        import numpy as np
        import torch
        from ase.stress import full_3x3_to_voigt_6_stress
        from mace import data as mace_data
        from mace.tools import torch_geometric, torch_tools

        calc = self.calc
        calc.arrays_keys.update({calc.charges_key: "charges"})
        keyspec = mace_data.KeySpecification(info_keys=calc.info_keys, arrays_keys=calc.arrays_keys)
        with torch_tools.default_dtype(calc.default_dtype):
            graphs = [
                mace_data.AtomicData.from_config(
                    mace_data.config_from_atoms(a, key_specification=keyspec, head_name=calc.head),
                    z_table=calc.z_table,
                    cutoff=calc.r_max,
                    heads=calc.available_heads,
                )
                for a in atoms_list
            ]
        batch = torch_geometric.Batch.from_data_list(graphs).to(calc.device)
        model = calc.models[0]
        model_dtype = next(model.parameters()).dtype
        for key in batch.keys:
            value = batch[key]
            if torch.is_tensor(value) and torch.is_floating_point(value):
                batch[key] = value.to(dtype=model_dtype)
        out = model(batch.to_dict(), compute_stress=stress, training=False)
        energy = out["energy"].detach().cpu().numpy().reshape(-1) * calc.energy_units_to_eV
        forces = out["forces"].detach().cpu().numpy() * (calc.energy_units_to_eV / calc.length_units_to_A)
        stresses = out.get("stress") if stress else None
        stresses = None if stresses is None else stresses.detach().cpu().numpy() * (
            calc.energy_units_to_eV / calc.length_units_to_A**3
        )
        ptr = batch["ptr"].cpu().numpy()
        res = []
        for i, a in enumerate(atoms_list):
            s = None
            if stresses is not None and a.cell.rank == 3:
                s = np.asarray(full_3x3_to_voigt_6_stress(stresses[i]), dtype=np.float64)
            res.append((float(energy[i]), np.array(forces[ptr[i] : ptr[i + 1]], dtype=np.float64), s))
        return res


__all__ = ["MACEModel", "MACE_URLS", "cache_dir", "cached_file", "load", "weights_status"]
