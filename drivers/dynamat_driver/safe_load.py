"""Model files are data: every ``torch.load`` of a model file runs with ``weights_only=True``.

Several packages call ``torch.load(weights_only=False)`` on the file a user names (CHGNet's
``from_file``, SevenNet's checkpoint reader, metatrain's for PET), so a crafted checkpoint runs code.
torch (2.4 and later) reads ``TORCH_FORCE_WEIGHTS_ONLY_LOAD`` at every ``torch.load`` call and it wins
over an explicit ``weights_only=False``; :func:`weights_only_torch_load` sets it around a package's
load call, with the few extra classes a checkpoint legitimately holds allowed by name.

Families whose file format *is* code cannot be loaded as data at all: MACE ``.model`` files (a whole
pickled ``nn.Module``, including torch.fx source that is ``exec``-ed), NequIP (compiled ``.pt2``
libraries, TorchScript, torch.package) and GRACE (TensorFlow SavedModels). Their adapters say so in
``--help`` and the README: give them only files you trust.
"""

from __future__ import annotations

import contextlib
import os

_KEYS = ("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")


@contextlib.contextmanager
def weights_only_torch_load(allow=()):
    """Inside the block every ``torch.load`` is a restricted (weights-only) unpickler; ``allow``:
    extra classes it may rebuild. Process-wide, which is fine in a one-model driver process."""
    import torch

    saved = {k: os.environ.get(k) for k in _KEYS}
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    os.environ.pop("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", None)  # `import mace` sets it; both set is an error
    ctx = getattr(torch.serialization, "safe_globals", None)  # torch >= 2.5
    try:
        if ctx is not None:
            with ctx(list(allow)):
                yield
        else:  # torch 2.4 (the fairchem 1.x environment): a process-wide allowlist
            if allow:
                torch.serialization.add_safe_globals(list(allow))
            yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def numpy_safe_globals() -> list:
    """numpy arrays of plain numeric dtypes (SevenNet's checkpoint config holds shift/scale arrays)."""
    import numpy as np

    core = getattr(np, "_core", None) or np.core
    return [np.ndarray, np.dtype, (core.multiarray._reconstruct, "numpy.core.multiarray._reconstruct"),
            *(type(np.dtype(t)) for t in (np.float32, np.float64, np.int32, np.int64, np.bool_))]
