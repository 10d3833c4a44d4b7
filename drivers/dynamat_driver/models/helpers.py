"""Helpers shared by the family adapters, none of which imports numpy or a model package at import
time: installation checks (from package metadata), where weights are (without loading them),
output suppression while a package loads, one-line messages, option parsing."""

from __future__ import annotations

import glob
import hashlib
import importlib
import importlib.metadata
import importlib.util
import os
import re
import sys
from typing import Mapping, Sequence

from .. import DriverError, __version__
from .registry import ModelInfo, get_model_info

# --------------------------------------------------------------------------------------------
# installed? (from metadata, without importing)
# --------------------------------------------------------------------------------------------


def _version_tuple(v: str) -> tuple[int, ...]:
    out = []
    for part in v.split("."):
        m = re.match(r"\d+", part)
        if not m:
            break
        out.append(int(m.group()))
    return tuple(out)


_REQ = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*(<=|>=|==|<|>)?\s*([0-9][0-9.]*)?\s*$")


def _requirement_ok(req: str) -> tuple[bool, str | None]:
    """(satisfied, installed version) for 'dist', 'dist>=2', 'dist<2' (one clause)."""
    m = _REQ.match(req)
    if not m:
        return True, None
    dist, op, ver = m.groups()
    try:
        have = importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return False, None
    if not op:
        return True, have
    a, b = _version_tuple(have), _version_tuple(ver)
    n = max(len(a), len(b))
    a, b = a + (0,) * (n - len(a)), b + (0,) * (n - len(b))
    ok = {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b, "==": a == b}[op]
    return ok, have


def missing_requirements(info: ModelInfo) -> list[str]:
    """Import names and distribution requirements the model lacks here (nothing is imported)."""
    missing = [p for p in info.packages if importlib.util.find_spec(p) is None]
    for req in info.requires:
        ok, have = _requirement_ok(req)
        if not ok:
            missing.append(f"{req} (installed: {have})" if have else req)
    return missing


def is_installed(info: ModelInfo) -> bool:
    """Whether the model's packages can be imported (checked without importing them)."""
    return not missing_requirements(info)


# --------------------------------------------------------------------------------------------
# weights: where they come from, checked without loading (the adapters' weights_status)
# --------------------------------------------------------------------------------------------


def weights_dict(status: str, path: str | None = None, source: str = "", detail: str = "") -> dict:
    """``status``: in-wheel | cached | download | local | missing | none | unknown."""
    return {"status": status, "path": path, "source": source, "detail": detail}


def hf_hub_cache_dir() -> str:
    """huggingface_hub's cache folder (HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.path.expanduser(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "huggingface"
    )
    return os.path.join(os.path.expanduser(home), "hub")


def hf_cached_file(repo_id: str, filename: str, cache_dir: str | None = None) -> str | None:
    """A file of a Hugging Face model repository already in the hub cache (any snapshot), or None."""
    root = os.path.join(cache_dir or hf_hub_cache_dir(), "models--" + repo_id.replace("/", "--"), "snapshots")
    hits = sorted(glob.glob(os.path.join(root, "*", filename)), key=os.path.getmtime, reverse=True)
    return hits[0] if hits else None


def hf_cache_pattern(repo_id: str, filename: str, cache_dir: str | None = None) -> str:
    root = os.path.join(cache_dir or hf_hub_cache_dir(), "models--" + repo_id.replace("/", "--"), "snapshots")
    return os.path.join(root, "*", filename)


def cached_path_file(url: str) -> str | None:
    """A URL already downloaded by the ``cached_path`` package (orb-models), or None."""
    root = os.environ.get("CACHED_PATH_CACHE_ROOT") or os.path.join(os.path.expanduser("~"), ".cache", "cached_path")
    stem = hashlib.sha256(url.encode("utf-8")).hexdigest()
    hits = [
        p for p in glob.glob(os.path.join(root, stem + "*"))
        if not p.endswith((".json", ".lock")) and os.path.isfile(p)
    ]
    return sorted(hits, key=os.path.getmtime)[-1] if hits else None


def cached_path_root() -> str:
    return os.environ.get("CACHED_PATH_CACHE_ROOT") or os.path.join(os.path.expanduser("~"), ".cache", "cached_path")


def package_dir(import_name: str) -> str | None:
    """Folder of an installed top-level package, found without importing it."""
    try:
        spec = importlib.util.find_spec(import_name)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return list(spec.submodule_search_locations)[0]
    return os.path.dirname(spec.origin) if spec.origin else None


def _in_wheel(package: str, pattern: str, source: str) -> dict:
    d = package_dir(package)
    if d is None:
        return weights_dict("unknown", None, source, f"package {package} is not installed here")
    hits = sorted(glob.glob(os.path.join(d, pattern)))
    if hits:
        return weights_dict("in-wheel", hits[0], source)


def import_family(family: str):
    """The family's adapter module, ``dynamat_driver.models.<family>``, or a plugin's (:mod:`.plugins`)."""
    from .plugins import BUILTIN_FAMILIES, family_module

    if family not in BUILTIN_FAMILIES:
        return family_module(family)
    return importlib.import_module(f"dynamat_driver.models.{family}")


def weights_status(name: str | ModelInfo, model_path: str | None = None) -> dict:
    """Whether the model's weights are reachable, without loading the model or its package:
    ``--model-path``, else none (analytic models), else in the package's wheel (the registry's
    ``wheel_weights``), else the family module's own ``weights_status``. ``name``: a registered
    model's or a plugin's (:mod:`.plugins`), or its ModelInfo."""
    info = name if isinstance(name, ModelInfo) else _registered_or_plugin(name)
    if model_path:
        p = os.path.expanduser(model_path)
        return weights_dict("local" if os.path.exists(p) else "missing", p, "--model-path")
    if not info.extra:
        return weights_dict("none", None, "analytic potential")
    try:
        if info.wheel_weights:
            package, _, pattern = info.wheel_weights.partition(":")
            return _in_wheel(package, pattern, info.weights_source)
        fn = getattr(import_family(info.family), "weights_status", None)
        if fn is None:
            return weights_dict("unknown", None, info.weights_source)
        return fn(info)
    except Exception as exc:  # a status check must never break --list
        return weights_dict("unknown", None, info.weights_source, f"{type(exc).__name__}: {exc}")


def _registered_or_plugin(name: str) -> ModelInfo:
    from .plugins import plugin_model_info

    try:
        return get_model_info(name)
    except DriverError:
        info = plugin_model_info(name)
        if info is None:
            raise
        return info


def package_versions(names: Sequence[str] = ()) -> dict[str, str]:
    """Installed versions (from metadata, without importing) of the driver's dependencies."""
    out = {"python": sys.version.split()[0], "dynamat-driver": __version__}
    for dist in ("numpy", "ase", "click", *names):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


# --------------------------------------------------------------------------------------------
# load-time helpers shared by the adapters
# --------------------------------------------------------------------------------------------

_VERBOSE = False


def set_verbose(flag: bool) -> None:
    """Whether model packages may print while loading (to stderr); else their output is dropped."""
    global _VERBOSE
    _VERBOSE = bool(flag)


def _quiet():
    """Where model packages' load-time chatter on stdout goes (stdout is never used for data)."""
    import io

    return sys.stderr if _VERBOSE else io.StringIO()


class quiet_loading:
    """Context manager for loading a model package: its stdout goes to stderr (``--verbose``) or
    nowhere; unless ``--verbose``, its stderr, Python warnings and logging below ERROR are
    dropped, at the file-descriptor level too (native libraries such as TensorFlow, Warp or CUDA
    probes write to fd 2 directly), so a failed load leaves only the driver's one-line error."""

    def __enter__(self):
        import contextlib
        import logging
        import warnings

        self._stack = contextlib.ExitStack()
        self._saved_fds: list[tuple[int, int]] = []
        if not _VERBOSE:
            for stream, fd in ((sys.stdout, 1), (sys.stderr, 2)):
                try:
                    stream.flush()
                    saved = os.dup(fd)
                except (OSError, ValueError):
                    continue
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, fd)
                os.close(devnull)
                self._saved_fds.append((fd, saved))
        self._stack.enter_context(contextlib.redirect_stdout(_quiet()))
        if not _VERBOSE:
            self._stack.enter_context(contextlib.redirect_stderr(_quiet()))
            self._stack.enter_context(warnings.catch_warnings())
            warnings.simplefilter("ignore")
            self._logging_disable = logging.root.manager.disable
            logging.disable(logging.WARNING)
        return self

    def __exit__(self, *exc):
        import logging

        if not _VERBOSE:
            logging.disable(self._logging_disable)
        try:
            return self._stack.__exit__(*exc)
        finally:
            for fd, saved in self._saved_fds:
                try:
                    os.dup2(saved, fd)
                finally:
                    os.close(saved)


def announce_weights(model, where: str) -> None:
    """One stderr line saying where the weights were loaded from (also kept in describe())."""
    model.weights = where
    sys.stderr.write(f"dynamat-driver: {model.name}: weights from {where}\n")
    sys.stderr.flush()


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def weights_unavailable(info: ModelInfo, looked_in: str, exc: BaseException | str, example: str = "FILE") -> DriverError:
    """The one-line error for weights that cannot be obtained (offline, gated, removed)."""
    why = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
    why = one_line(why)
    if len(why) > 240:
        why = why[:237] + "..."
    return DriverError(
        f"cannot obtain the {info.human_name} weights ({why}); not found in {looked_in}. "
        f"Download {info.weights_source} on a machine with access and pass it with --model-path {example}"
    )


_PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


def network_unreachable(url: str) -> str | None:
    """Why ``url`` cannot be downloaded from here (its host does not resolve: offline), or None.

    Checked before a package's own download, whose retries with back-off take ~30 s to fail
    offline. With a proxy configured the proxy resolves names, so nothing is concluded."""
    if any(os.environ.get(k) for k in _PROXY_VARS):
        return None
    import socket
    from urllib.parse import urlparse

    host = urlparse(url).hostname
    if not host:
        return None
    try:
        socket.getaddrinfo(host, 443, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return f"cannot resolve {host}: {exc.strerror or exc}; offline?"
    except OSError:
        return None
    return None


def load_failed(info: ModelInfo, model_path: str, exc: BaseException, kind: str) -> DriverError:
    why = one_line(f"{type(exc).__name__}: {exc}")
    if len(why) > 300:
        why = why[:297] + "..."
    return DriverError(f"cannot load the file {model_path} as {kind} for {info.name!r}: {why}")


def torch_dtype(name: str):
    import torch

    return {"float32": torch.float32, "float64": torch.float64}[name]


def check_torch_device(device: str) -> None:
    """Raises DriverError if torch cannot use ``device`` (call after importing torch)."""
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise DriverError("--device cuda was asked for, but torch sees no CUDA device here")


def parse_float_option(options: Mapping[str, str], key: str, default, model: str):
    if key not in options:
        return default
    raw = options[key]
    try:
        return float(raw)
    except (TypeError, ValueError):
        raise DriverError(f"model {model!r}: option {key}={raw!r} is not a number") from None


def reject_unknown_options(options: Mapping[str, str], known: Sequence[str], model: str) -> None:
    unknown = sorted(set(options) - set(known))
    if unknown:
        known_txt = ", ".join(known) if known else "none"
        raise DriverError(f"model {model!r} has no option(s) {', '.join(unknown)} (known: {known_txt})")


def is_verbose() -> bool:
    """Whether --verbose was given (read at call time: set_verbose changes it after imports)."""
    return _VERBOSE
