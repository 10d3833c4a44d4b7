"""FAIR Chemistry models, package ``fairchem-core``: two incompatible major versions.

fairchem-core 2.x (``uma-s-p1``, ``uma-m-p1``; zoo environment, torch 2.13)
    ``FAIRChemCalculator(pretrained_mlip.get_predict_unit("uma-s-1p1", device=...),
    task_name="omat")``. The checkpoint comes from the gated Hugging Face repository
    facebook/UMA (accept the licence there, then ``huggingface-cli login`` or ``HF_TOKEN``), kept
    in ``$FAIRCHEM_CACHE_DIR`` (default ``~/.cache/fairchem``) in the hub layout
    (``models--facebook--UMA/snapshots/<rev>/checkpoints/uma-s-1p1.pt``); a cached copy is
    used offline. ``--model-path FILE`` loads a local inference checkpoint with
    ``load_predict_unit(FILE, ...)``: fairchem then has no isolated-atom reference energies
    (used for single-atom systems; they come with the registered name), so the adapter adds the
    cached ``references/iso_atom_elem_refs.yaml`` when it finds it, or ``-o atom_refs=FILE.yaml``.

    Inference settings: fairchem's "default" is UMA Nitro / "multigpu" (torch.compile, TF32 and
    merged experts on CUDA). The paper times float32 without acceleration libraries, so the
    adapter uses ``InferenceSettings(tf32=False, compile=False, merge_mole=False,
    activation_checkpointing=False)`` in ``--dtype`` precision; ``-o settings=NAME`` selects one
    of fairchem's named presets instead (default, batch, multigpu, high-precision).
    Batched evaluation: ``atomicdata_list_to_batch`` + one ``predict`` call, split per structure.
    Stress on demand (``skips_stress``): ``stress=False`` switches the eSCN-MD ``regress_config.stress``
    off for the call (positions-only gradient, cell without grad); ``FAIRChemCalculator`` reads
    every implemented property, so those calls go through ``predict`` directly.

fairchem-core 1.x (``esen-30m-oam``, ``equiformer-v2``; its own environment)
    eSEN-30M-OAM and EquiformerV2 (OMat24) exist only for fairchem-core 1.x, which pins torch
    ~=2.4.0 and numpy < 2: ``run_scripts/make_driver_env.sh esen-30m-oam``. Loaded as
    ``OCPCalculator(model_name="eSEN-30M-OAM", local_cache=..., cpu=...)`` (checkpoint from the
    gated Hugging Face repository facebook/OMAT24, default hub cache) or
    ``OCPCalculator(checkpoint_path=FILE, cpu=...)`` with ``--model-path``; sequential
    evaluation. In an environment with fairchem-core 2.x the registry refuses these models with
    a one-line message naming the environment to create.
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


def fairchem_cache_dir() -> str:
    """fairchem.core._config.CACHE_DIR, computed without importing fairchem."""
    return os.environ.get("FAIRCHEM_CACHE_DIR", os.path.join(os.path.expanduser("~"), ".cache/fairchem"))


def _hub_cache(info: ModelInfo) -> str | None:
    """fairchem 2.x downloads into its own cache dir; fairchem 1.x into huggingface_hub's default."""
    return fairchem_cache_dir() if info.kwargs["api"] == 2 else None


def weights_status(info: ModelInfo) -> dict:
    repo, fname = info.kwargs["hf_repo"], info.kwargs["filename"]
    hit = hf_cached_file(repo, fname, _hub_cache(info))
    if hit:
        return weights_dict("cached", hit, info.weights_source)
    return weights_dict(
        "download", hf_cache_pattern(repo, fname, _hub_cache(info)), info.weights_source,
        "gated Hugging Face repository: accept the licence and log in (HF_TOKEN) before the first run",
    )


def _check_hub(info: ModelInfo) -> None:
    """Fail at once, offline, when the checkpoint is not cached (huggingface_hub retries for ~30 s)."""
    repo, fname = info.kwargs["hf_repo"], info.kwargs["filename"]
    if hf_cached_file(repo, fname, _hub_cache(info)) or os.environ.get("HF_HUB_OFFLINE") == "1":
        return
    why = network_unreachable(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    if why:
        raise weights_unavailable(info, hf_cache_pattern(repo, fname, _hub_cache(info)), why, "FILE.pt")


def load(info: ModelInfo, *, device="cpu", dtype=None, model_path=None, options=None):
    if info.kwargs["api"] == 1:
        return _load_v1(info, device=device, dtype=dtype, model_path=model_path, options=options or {})
    return _load_v2(info, device=device, dtype=dtype, model_path=model_path, options=options or {})


# --------------------------------------------------------------------------------------------
# fairchem-core 2.x: UMA
# --------------------------------------------------------------------------------------------


def _settings(name: str | None, dtype: str):
    from fairchem.core.units.mlip_unit.api.inference import InferenceSettings, guess_inference_settings

    if name:
        try:
            s = guess_inference_settings(name)
        except (AssertionError, ValueError) as exc:
            raise DriverError(f"-o settings={name}: {exc}") from None
        import copy

        s = copy.deepcopy(s)
        s.base_precision_dtype = torch_dtype(dtype)
        return s
    return InferenceSettings(
        tf32=False, activation_checkpointing=False, merge_mole=False, compile=False, external_graph_gen=False,
        internal_graph_gen_version=2, base_precision_dtype=torch_dtype(dtype),
    )


def _atom_refs(info: ModelInfo, options: dict):
    """Isolated-atom reference energies for a --model-path checkpoint: -o atom_refs=FILE, else the
    cached file of the registered model, else None (energies then lack them)."""
    path = options.get("atom_refs") or hf_cached_file(
        info.kwargs["hf_repo"], "references/iso_atom_elem_refs.yaml", _hub_cache(info)
    )
    if not path:
        return None, None
    from omegaconf import OmegaConf

    if not os.path.isfile(path):
        raise DriverError(f"-o atom_refs={path}: no such file")
    return OmegaConf.load(path), path  # as pretrained_mlip.get_reference_energies returns them


def _load_v2(info, *, device, dtype, model_path, options):
    dtype = dtype or info.default_dtype
    name, task = info.kwargs["name"], info.kwargs["task"]
    with quiet_loading():
        import torch  # noqa: F401
        from fairchem.core import FAIRChemCalculator
        from fairchem.core.calculate import pretrained_mlip
        from fairchem.core.units.mlip_unit import load_predict_unit

        check_torch_device(device)
        settings = _settings(options.get("settings"), dtype)
        refs_note = ""
        try:
            if model_path:
                refs, refs_path = _atom_refs(info, options)
                refs_note = f", isolated-atom references from {refs_path}" if refs_path else (
                    ", no isolated-atom references (pass -o atom_refs=iso_atom_elem_refs.yaml)"
                )
                unit = load_predict_unit(model_path, settings, None, device, refs)
            else:
                _check_hub(info)
                unit = pretrained_mlip.get_predict_unit(name, inference_settings=settings, device=device)
        except DriverError:
            raise
        except Exception as exc:
            if model_path:
                raise load_failed(info, model_path, exc, "a fairchem inference checkpoint") from None
            looked = hf_cache_pattern(info.kwargs["hf_repo"], info.kwargs["filename"], _hub_cache(info))
            raise weights_unavailable(info, looked, exc, "FILE.pt") from None
        try:
            calc = FAIRChemCalculator(unit, task_name=task)
        except Exception as exc:
            raise DriverError(f"model {info.name!r}: checkpoint has no task {task!r}: {exc}") from None
    model = UMAModel(info, calc, device=device, dtype=dtype)
    if model_path:
        where = f"{model_path} (--model-path{refs_note})"
    else:
        where = hf_cached_file(info.kwargs["hf_repo"], info.kwargs["filename"], _hub_cache(info)) or name
    announce_weights(model, where)
    return model


class UMAModel(CalculatorModel):
    can_batch = True

    def __init__(self, info, calc, device, dtype):
        super().__init__(info, calc, device=device, dtype=dtype)
        self.n_params = torch_n_params(calc.predictor.model)
        self.version_packages = ("torch", "fairchem-core")
        # eSCN-MD takes the stress as the cell derivative of the energy when its regress_config
        # (one object shared by the backbone and the MLP_EFS head) says stress: with it off, the
        # cell does not require grad and the head differentiates the energy w.r.t. positions only;
        # the predict unit then omits the stress task. Nitro and direct-stress models keep it.
        rc = self._regress_config()
        self.skips_stress = bool(
            rc is not None and rc.stress and not rc.direct_stress and not rc.direct_forces
            and hasattr(type(calc.predictor).predict, "__wrapped__")
        )

    def _regress_config(self):
        """The backbone's GradRegressConfig, looked up per call (a fallback may reload the model)."""
        module = getattr(getattr(self.calc.predictor, "model", None), "module", None)
        return getattr(getattr(module, "backbone", None), "regress_config", None)

    def calculate(self, atoms, first: bool, stress: bool = True):
        if self.skips_stress and not stress:
            # FAIRChemCalculator reads every implemented property, stress included: predict directly
            return self.calculate_batch([atoms], stress=False)[0]
        import numpy as np

        props = ["energy", "forces"] + (["stress"] if atoms.cell.rank == 3 else [])
        self.calc.calculate(atoms, props, ["positions", "cell"])
        r = self.calc.results
        s = np.asarray(r["stress"], dtype=np.float64).reshape(-1) if "stress" in props and "stress" in r else None
        return float(r["energy"]), np.array(r["forces"], dtype=np.float64), s

    def _predict(self, batch, stress: bool):
        """predictor.predict, or with the stress off: its per-task predictions (the undecorated
        method), collated per property as its ``collate_predictions`` does, less the omitted
        stress task (the package's collation looks up every task of the dataset)."""
        import torch

        predictor = self.calc.predictor
        if stress or not self.skips_stress:
            return predictor.predict(batch)
        rc = self._regress_config()
        rc.stress = False
        try:
            preds = type(predictor).predict.__wrapped__(predictor, batch)
        finally:
            rc.stress = True
        out: dict[str, list] = {}
        for i, dataset in enumerate(batch.dataset):
            for task in predictor.dataset_to_tasks[dataset]:
                if task.name in preds:
                    p = preds[task.name]
                    out.setdefault(task.property, []).append(
                        p[i].unsqueeze(0) if task.level == "system" else p[batch.batch == i]
                    )
        return {prop: torch.cat(v) for prop, v in out.items()}

    def calculate_batch(self, atoms_list, stress: bool = True):
        import numpy as np
        from ase.stress import full_3x3_to_voigt_6_stress
        from fairchem.core.datasets.atomic_data import atomicdata_list_to_batch

        calc = self.calc
        for a in atoms_list:
            calc.predictor.validate_atoms_data(a, calc.task_name)
        batch = atomicdata_list_to_batch([calc.a2g(a) for a in atoms_list])
        pred = self._predict(batch, stress)
        energy = pred["energy"].detach().cpu().numpy().reshape(-1)
        forces = pred["forces"].detach().cpu().numpy()
        stresses = (pred["stress"].detach().cpu().numpy().reshape(len(atoms_list), 3, 3)
                    if stress and "stress" in pred else None)
        counts = batch.natoms.cpu().numpy().reshape(-1)
        res, start = [], 0
        for i, a in enumerate(atoms_list):
            n = int(counts[i])
            s = None
            if stresses is not None and a.cell.rank == 3:
                s = np.asarray(full_3x3_to_voigt_6_stress(stresses[i]), dtype=np.float64)
            res.append((float(energy[i]), np.array(forces[start : start + n], dtype=np.float64), s))
            start += n
        return res


# --------------------------------------------------------------------------------------------
# fairchem-core 1.x: eSEN-30M-OAM, EquiformerV2
# --------------------------------------------------------------------------------------------


def _load_v1(info, *, device, dtype, model_path, options):
    dtype = dtype or info.default_dtype
    with quiet_loading():
        import torch  # noqa: F401
        from fairchem.core import OCPCalculator

        check_torch_device(device)
        cpu = device == "cpu"
        try:
            if model_path:
                calc = OCPCalculator(checkpoint_path=model_path, cpu=cpu)
            else:
                _check_hub(info)
                calc = OCPCalculator(model_name=info.kwargs["name"], local_cache=fairchem_cache_dir(), cpu=cpu)
        except Exception as exc:
            if model_path:
                raise load_failed(info, model_path, exc, "a fairchem-core 1.x checkpoint") from None
            looked = hf_cache_pattern(info.kwargs["hf_repo"], info.kwargs["filename"])
            raise weights_unavailable(info, looked, exc, "FILE.pt") from None
    model = CalculatorModel(info, calc, device=device, dtype=dtype)
    model.version_packages = ("torch", "fairchem-core")
    try:
        model.n_params = torch_n_params(calc.trainer.model)
    except Exception:
        pass
    announce_weights(
        model, f"{model_path} (--model-path)" if model_path
        else (hf_cached_file(info.kwargs["hf_repo"], info.kwargs["filename"]) or info.kwargs["name"]),
    )
    return model


__all__ = ["UMAModel", "fairchem_cache_dir", "load", "weights_status"]
