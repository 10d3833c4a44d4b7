"""``grace-2l-mptrj`` and ``grace-2l-oam``: GRACE foundation models (ICAMS), package
``tensorpotential`` (TensorFlow; no torch).

Loaded as ``TPCalculator(model=DIR)`` on the model's TensorFlow SavedModel folder, which
``tensorpotential.calculator.grace_fm(name)`` downloads into ``$GRACE_CACHE/<name>`` (default
``~/.cache/grace/<name>``). A folder already there is loaded directly (offline too);
``--model-path DIR`` passes any SavedModel folder.

GRACE-2L-MPTrj is ``GRACE-2L-MP-r6`` (MPtrj, 6 Å, 11 Nov 2024): tensorpotential <= 0.5.7.2 lists
it, 0.6 no longer does. The adapter loads it from ``$GRACE_CACHE/GRACE-2L-MP-r6`` when present,
downloads it with ``grace_fm`` when the installed tensorpotential still knows the name, and else
says where to put it (URL in the registry).

Environment: tensorpotential requires ``tensorflow[and-cuda]`` on Linux (~5 GB of CUDA wheels);
``run_scripts/make_driver_env.sh grace-2l-oam`` installs CPU TensorFlow and tensorpotential
without that extra (``DYNAMAT_GRACE_CUDA=1`` for the CUDA build). It shares no environment with
the torch families (``pandas < 3``, TensorFlow's pins).

Precision: the foundation models are exported in float64 (tensorpotential's registry: "fp64");
the SavedModel fixes the precision, so ``--dtype`` accepts only the model's own.

Evaluation is sequential (TPCalculator pads and compiles per shape; no batched API), with the
calculator's default padding as ``grace_fm`` sets it.
"""

from __future__ import annotations

import os

from . import (
    CalculatorModel,
    DriverError,
    ModelInfo,
    announce_weights,
    load_failed,
    network_unreachable,
    quiet_loading,
    weights_dict,
    weights_unavailable,
)

#: TPCalculator settings as tensorpotential's grace_fm() passes them
GRACE_FM_KWARGS = dict(pad_neighbors_fraction=0.05, pad_atoms_number=10, max_number_reduction_recompilation=2,
                       min_dist=None)


def cache_dir() -> str:
    return os.environ.get("GRACE_CACHE") or os.path.expanduser("~/.cache/grace")


def cached_dir(info: ModelInfo) -> str:
    return os.path.join(cache_dir(), info.kwargs["model"])


def _is_saved_model(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "saved_model.pb"))


def weights_status(info: ModelInfo) -> dict:
    d = cached_dir(info)
    if _is_saved_model(d):
        return weights_dict("cached", d, info.weights_source)
    return weights_dict("download", d, info.weights_source, "grace_fm downloads and unpacks it there")


def load(info: ModelInfo, *, device="cpu", dtype=None, model_path=None, options=None):
    if device != "cpu":
        os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
    else:
        os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # TensorFlow places on a GPU whenever it sees one
    from .helpers import _VERBOSE  # the current value (set_verbose runs after import)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if _VERBOSE else "3")  # TensorFlow's C++ log goes to fd 2
    name = info.kwargs["model"]
    with quiet_loading():
        from tensorpotential.calculator import foundation_models as fm
        from tensorpotential.calculator.asecalculator import TPCalculator

        path = model_path
        if path is None:
            path = cached_dir(info)
            if not _is_saved_model(path):
                if name not in getattr(fm, "MODELS_NAME_LIST", ()):
                    raise weights_unavailable(
                        info, path, f"tensorpotential {_version()} no longer lists {name}", "SAVED_MODEL_DIR (unpacked)"
                    )
                why = network_unreachable(info.weights_source.split()[0])
                if why:
                    raise weights_unavailable(info, path, why, "SAVED_MODEL_DIR (unpacked)")
                try:
                    path = fm.get_or_download_model(name)
                except Exception as exc:
                    raise weights_unavailable(info, path, exc, "SAVED_MODEL_DIR (unpacked)") from None
        try:
            calc = TPCalculator(model=path, enable_uq_if_available=False, **GRACE_FM_KWARGS)
        except Exception as exc:
            if model_path:
                raise load_failed(info, model_path, exc, "a GRACE SavedModel folder") from None
            raise weights_unavailable(info, path, exc, "SAVED_MODEL_DIR (unpacked)") from None
    n_params, model_dtype = _saved_model_stats(path)
    model_dtype = model_dtype or info.default_dtype
    if dtype and dtype != model_dtype:
        raise DriverError(f"model {info.name!r}: this SavedModel computes in {model_dtype}; --dtype {dtype} is not possible")
    model = GraceModel(info, calc, device=device, dtype=model_dtype, n_params=n_params)
    announce_weights(model, f"{model_path} (--model-path)" if model_path else path)
    return model


def _version() -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version("tensorpotential")
    except importlib.metadata.PackageNotFoundError:
        return "?"


def _saved_model_stats(path: str) -> tuple[int | None, str | None]:
    """(trainable parameter count, float dtype) read from the SavedModel's variables checkpoint."""
    try:
        import tensorflow as tf

        reader = tf.train.load_checkpoint(os.path.join(path, "variables", "variables"))
        shapes, dtypes = reader.get_variable_to_shape_map(), reader.get_variable_to_dtype_map()
        keys = [k for k in shapes if k.startswith("_variables_to_train/") and dtypes[k].is_floating]
        n = 0
        for k in keys:
            size = 1
            for d in shapes[k]:
                size *= int(d)
            n += size
        return (n or None), (dtypes[keys[0]].name if keys else None)
    except Exception:
        return None, None


class GraceModel(CalculatorModel):
    def __init__(self, info, calc, device, dtype, n_params=None):
        super().__init__(info, calc, device=device, dtype=dtype)
        self.version_packages = ("tensorflow", "tensorpotential")
        self.n_params = n_params
        try:
            from ase.data import atomic_numbers

            self.covered_numbers = frozenset(atomic_numbers[s] for s in calc.element_map)
        except Exception:
            pass

    def calculate(self, atoms, first: bool):
        import numpy as np

        self.calc.calculate(atoms, ["energy", "forces", "stress"], ["positions", "numbers", "cell", "pbc"])
        r = self.calc.results
        s = np.asarray(r["stress"], dtype=np.float64).reshape(-1) if atoms.cell.rank == 3 and "stress" in r else None
        return float(np.asarray(r["energy"]).reshape(-1)[0]), np.array(r["forces"], dtype=np.float64), s


__all__ = ["GraceModel", "cache_dir", "cached_dir", "load", "weights_status"]
