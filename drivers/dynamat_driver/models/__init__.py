"""Model registry: name → family adapter, loader arguments, paper tier, size, pip extra, environment.

One module per model family (like i-PI's ``ipi/pes/*.py``), each defining

* ``load(info, *, device, dtype, model_path, options) -> Model``, and
* ``weights_status(info) -> dict``: where the default weights are, found without importing the
  model package (no torch): ``in-wheel``, ``cached`` (path), ``download`` (where from, and the
  cache path the package would fill), or ``none`` (analytic models).

Importing this registry imports no model package, no torch and not even numpy, so
``run_scripts/make_driver_env.sh`` can read it with any Python.

Tiers (``ModelInfo.tier``) are the paper's (Dyna-Mat-v1.0, Results B), by training data:

* ``1``  MPtrj: CHGNet, MACE-MP-0, GRACE-2L-MPTrj.
* ``2``  MPtrj + Alexandria (or sAlex): MACE-MPA-0, orb-v2.
* ``3``  larger / more diverse sets, mostly OMat24 pre-training + MPtrj/sAlex fine-tuning ("OAM"):
  MatterSim-v1.0.0-5M, GRACE-2L-OAM, orb-v3-conservative-inf-mpa, eSEN-30M-OAM, NequIP-OAM-XL,
  EquiformerV2, PET-OAM-XL.
* ``4``  multi-head / multi-task models across several reference datasets: MACE-MH-1-OMAT,
  UMA-S-P1, UMA-M-P1.
* ``"test"`` analytic potentials (EMT, LJ, harmonic), not MLIPs.
* ``None``  MLIPs that are not in the paper (SevenNet-0, SevenNet-l3i5).

``ModelInfo.cost`` keeps a rough cost class for scheduling campaigns, from the parameter count:
``test`` (analytic, milliseconds), ``small`` (< 1 M parameters), ``medium`` (1–10 M), ``large``
(10–100 M), ``xlarge`` (> 100 M, or a mixture of experts with that many in total).

Parameter counts (``n_params``) are either measured (from the real checkpoint where it ships in
the wheel: CHGNet, SevenNet; or from the architecture the checkpoint loads into strictly: orb) or
copied from the model's Matbench Discovery entry (github.com/janosh/matbench-discovery,
``models/<family>/<model>.yml``, key ``model_params``), as noted per entry in ``params_source``;
None where no single published count exists (MACE-MH-1, the UMA mixtures of experts). A loaded
model reports its own measured count in the driver's timing file.

Precision: MLIPs default to float32 (the paper's timing protocol: "float32, no acceleration
libraries"); ``dtypes`` lists what ``--dtype`` accepts. The GRACE foundation models are float64
SavedModels (precision fixed at export), so they default to float64.

Environments (``ModelInfo.env``): MLIP packages conflict, so each model names the environment
group it installs into (``run_scripts/make_driver_env.sh MODEL``): see :data:`ENVIRONMENTS`.
"""

from __future__ import annotations

import glob
import hashlib
import importlib
import importlib.metadata
import importlib.util
import os
import re
import sys
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

from .. import DriverError, __version__


@dataclass(frozen=True)
class ModelInfo:
    name: str  # canonical CLI name, e.g. "chgnet"
    family: str  # module in dynamat_driver.models
    human_name: str  # as in the paper, e.g. "CHGNet 0.3.0"
    tier: int | str | None  # paper tier 1-4; "test" for analytic potentials; None = not in the paper
    n_params: int | None  # trainable parameters, if known (see params_source)
    extra: str | None  # pip extra of dynamat / dynamat-driver that installs the package
    packages: tuple[str, ...] = ()  # import names the family needs (checked without importing)
    kwargs: Mapping[str, Any] = field(default_factory=dict)  # loader arguments
    default_dtype: str = "float32"  # the paper's timing protocol runs MLIPs in float32
    dtypes: tuple[str, ...] = ("float32",)
    description: str = ""
    cost: str = ""  # "test" | "small" | "medium" | "large" | "xlarge"
    aliases: tuple[str, ...] = ()  # other names users type; resolve to ``name``
    env: str = "zoo"  # environment group, a key of ENVIRONMENTS
    requires: tuple[str, ...] = ()  # distribution requirements checked from metadata, e.g. "fairchem-core>=2"
    params_source: str = ""  # where n_params comes from
    weights_source: str = ""  # where the default weights come from (wheel, URL, hub repo)

    @property
    def pip_hint(self) -> str:
        return f"pip install 'dynamat[{self.extra}]'" if self.extra else ""

    @property
    def env_hint(self) -> str:
        return f"run_scripts/make_driver_env.sh {self.name}"


#: Environment groups. Packages of one group install together; groups do not mix.
ENVIRONMENTS: dict[str, str] = {
    "main": "any environment with the driver (analytic models need no model package)",
    "zoo": "shared torch 2.13 environment: chgnet, sevenn, orb-models, mattersim, fairchem-core 2.x, "
    "nequip, upet (all e3nn >= 0.5)",
    "mace": "MACE alone: mace-torch pins e3nn 0.4.4 (its official .model files are pickled under it)",
    "grace": "GRACE alone: tensorpotential runs on TensorFlow (no torch)",
    "fairchem1": "fairchem-core 1.x alone (eSEN-30M-OAM, EquiformerV2): it pins torch ~2.4 and numpy < 2",
}

#: analytic models accept either dtype and always compute in float64
ANALYTIC_DTYPES = ("float64", "float32")
_BOTH = ("float32", "float64")
_MBD = "Matbench Discovery models/{}.yml model_params"

REGISTRY: dict[str, ModelInfo] = {
    m.name: m
    for m in [
        # ---------------------------------------------------------------- analytic (tests)
        ModelInfo(
            "emt", "ase_builtin", "ASE EMT", "test", 0, None,
            kwargs={"kind": "emt"}, default_dtype="float64", dtypes=ANALYTIC_DTYPES, cost="test", env="main",
            description="ASE's effective-medium theory (H C N O Al Ni Cu Pd Ag Pt Au); a test model",
        ),
        ModelInfo(
            "lj", "ase_builtin", "Lennard-Jones (ASE)", "test", 0, None,
            kwargs={"kind": "lj"}, default_dtype="float64", dtypes=ANALYTIC_DTYPES, cost="test", env="main",
            description="one smooth LJ pair potential for all species; options epsilon (eV, default 0.1), "
            "sigma (Å, default 'auto': nearest-neighbour distance of the first structure / 2^(1/6)), "
            "rc (Å, default 3 sigma)",
        ),
        ModelInfo(
            "null", "null", "no model (zero forces)", "test", 0, None,
            default_dtype="float64", dtypes=ANALYTIC_DTYPES, cost="test", env="main",
            description="zero energy, forces and stress in no time: measures the harness (i-PI, socket, "
            "driver) in the overhead benchmark; not physics",
        ),
        ModelInfo(
            "harmonic", "harmonic", "Einstein crystal (harmonic springs)", "test", 0, None,
            default_dtype="float64", dtypes=ANALYTIC_DTYPES, cost="test", env="main",
            description="each atom tied by a spring to its template site (fractional coordinates); "
            "option k (eV/Å², default 1.0)",
        ),
        # ---------------------------------------------------------------- Tier 1: MPtrj
        ModelInfo(
            "chgnet", "chgnet", "CHGNet 0.3.0", 1, 412_525, "chgnet",
            packages=("chgnet", "torch"), kwargs={"model_name": "0.3.0"}, dtypes=_BOTH, cost="small",
            aliases=("chgnet-0.3.0",), params_source="measured: CHGNet.load('0.3.0').n_params",
            weights_source="chgnet wheel (chgnet/pretrained/0.3.0)",
            description="CHGNet 0.3.0 (MPtrj), weights shipped in the chgnet wheel",
        ),
        ModelInfo(
            "mace-mp-0", "mace", "MACE-MP-0", 1, 4_688_656, "mace",
            packages=("mace", "torch", "e3nn"), kwargs={"model": "medium"}, dtypes=_BOTH, cost="medium",
            env="mace", params_source=_MBD.format("mace/mace-mp-0") + " (2023-12-03-mace-128-L1)",
            weights_source="https://github.com/ACEsuit/mace-mp/releases/download/mace_mp_0/"
            "2023-12-03-mace-128-L1_epoch-199.model",
            description="MACE-MP-0 medium (MPtrj), mace_mp(model='medium')",
        ),
        ModelInfo(
            "grace-2l-mptrj", "grace", "GRACE-2L-MPTrj", 1, 15_346_704, "grace",
            packages=("tensorpotential", "tensorflow"), kwargs={"model": "GRACE-2L-MP-r6"},
            default_dtype="float64", dtypes=("float64", "float32"),
            cost="large", env="grace", params_source=_MBD.format("grace/grace-2l-mptrj"),
            weights_source="https://ruhr-uni-bochum.sciebo.de/s/42Ivgi3eaLCynwC (tensorpotential <= 0.5.7.2 "
            "names it GRACE-2L-MP-r6)",
            description="GRACE-2L-MP-r6 (MPtrj, 6 Å cutoff, 11 Nov 2024); TensorFlow SavedModel",
        ),
        # ---------------------------------------------------------------- Tier 2: MPtrj + Alexandria
        ModelInfo(
            "mace-mpa-0", "mace", "MACE-MPA-0", 2, 9_063_204, "mace",
            packages=("mace", "torch", "e3nn"), kwargs={"model": "medium-mpa-0"}, dtypes=_BOTH, cost="medium",
            env="mace", params_source=_MBD.format("mace/mace-mpa-0"),
            weights_source="https://github.com/ACEsuit/mace-mp/releases/download/mace_mpa_0/mace-mpa-0-medium.model",
            description="MACE-MPA-0 medium (MPtrj + sAlex), mace_mp(model='medium-mpa-0')",
        ),
        ModelInfo(
            "orb-v2", "orb", "orb-v2", 2, 25_213_601, "orb",
            packages=("orb_models", "torch"), kwargs={"loader": "orb_v2"}, dtypes=_BOTH, cost="large",
            params_source="measured: orb_v2_architecture() of orb-models 0.5.5, into which the checkpoint loads "
            "with strict=True (Matbench Discovery models/orb/orb-v2.yml lists 25,161,727, for orb-models 0.4.0)",
            weights_source="https://orbitalmaterials-public-models.s3.us-west-1.amazonaws.com/forcefields/"
            "orb-v2-20241011.ckpt",
            description="orb-v2 (diffusion pre-training, MPtrj + Alexandria), direct forces, 20 neighbours",
        ),
        # ---------------------------------------------------------------- Tier 3: OAM-type and larger sets
        ModelInfo(
            "mattersim-v1-5m", "mattersim", "MatterSim-v1.0.0-5M", 3, 4_549_142, "mattersim",
            packages=("mattersim", "torch"), kwargs={"load_path": "MatterSim-v1.0.0-5M"}, cost="medium",
            aliases=("mattersim-v1.0.0-5m",), params_source=_MBD.format("mattersim/mattersim-v1-5m"),
            weights_source="https://raw.githubusercontent.com/microsoft/mattersim/main/pretrained_models/"
            "mattersim-v1.0.0-5M.pth",
            description="MatterSim v1.0.0 5M (M3GNet architecture, MatterSim dataset)",
        ),
        ModelInfo(
            "grace-2l-oam", "grace", "GRACE-2L-OAM", 3, 12_597_516, "grace",
            packages=("tensorpotential", "tensorflow"), kwargs={"model": "GRACE-2L-OAM"},
            default_dtype="float64", dtypes=("float64", "float32"),
            cost="large", env="grace", params_source=_MBD.format("grace/grace-2l-oam"),
            weights_source="https://huggingface.co/AMS-ICAMS-RUB/grace-foundation-models/resolve/kk/models/"
            "GRACE-2L-OAM-model.tar.gz",
            description="GRACE-2L-OAM (OMat24 pre-training, sAlex + MPtrj fine-tuning)",
        ),
        ModelInfo(
            "orb-v3-conservative-inf-mpa", "orb", "orb-v3-conservative-inf-mpa", 3, 25_510_582, "orb",
            packages=("orb_models", "torch"), kwargs={"loader": "orb_v3_conservative_inf_mpa"}, dtypes=_BOTH,
            cost="large", aliases=("orb-v3",),
            params_source=_MBD.format("orb/orb-v3") + "; equal to orb_v3_conservative_architecture() in orb-models 0.5.5",
            weights_source="https://orbitalmaterials-public-models.s3.us-west-1.amazonaws.com/forcefields/orb-v3/"
            "orb-v3-conservative-inf-mpa-20250404.ckpt",
            description="orb-v3 conservative, unlimited neighbours within 6 Å, MPtrj + Alexandria (+ OMat24 subset)",
        ),
        ModelInfo(
            "esen-30m-oam", "fairchem", "eSEN-30M-OAM", 3, 30_161_153, "fairchem1",
            packages=("fairchem", "torch"), requires=("fairchem-core<2",),
            kwargs={"api": 1, "name": "eSEN-30M-OAM", "hf_repo": "facebook/OMAT24", "filename": "esen_30m_oam.pt"},
            cost="large", env="fairchem1", params_source=_MBD.format("esen/esen-30m-oam"),
            weights_source="hf://facebook/OMAT24/esen_30m_oam.pt (gated: accept the licence, then HF token)",
            description="eSEN-30M-OAM (fairchem-core 1.x only: OCPCalculator)",
        ),
        ModelInfo(
            "nequip-oam-xl", "nequip", "NequIP-OAM-XL", 3, 32_100_000, "nequip",
            packages=("nequip", "torch"), kwargs={"model_id": "nequip.net:mir-group/NequIP-OAM-XL:0.1"}, dtypes=_BOTH,
            cost="large", params_source=_MBD.format("nequip/nequip-oam-xl-0.1") + " (published rounded: 32.1 M)",
            weights_source="nequip.net:mir-group/NequIP-OAM-XL:0.1 (https://www.nequip.net/models/mir-group/"
            "NequIP-OAM-XL:0.1), compiled with nequip-compile --target ase",
            description="NequIP-OAM-XL 0.1 (OMat24 pre-training, MPtrj + sAlex fine-tuning); a compiled model",
        ),
        ModelInfo(
            # The paper names "EquiformerV2 ... pretrained on OMat24 and fine-tuned on MPTrj" without a
            # size; Matbench Discovery's leaderboard entry of that description, whose F1/kappa the paper
            # correlates with, is eqV2 M (86M, omat -> mp + salex).
            "equiformer-v2", "fairchem", "EquiformerV2 (eqV2-M OMat24 + MPtrj/sAlex)", 3, 86_589_068, "fairchem1",
            packages=("fairchem", "torch"), requires=("fairchem-core<2",),
            kwargs={"api": 1, "name": "EquiformerV2-86M-OMAT24-MP-sAlex", "hf_repo": "facebook/OMAT24",
                    "filename": "eqV2_86M_omat_mp_salex.pt"},
            cost="large", env="fairchem1", aliases=("eqv2-m-omat-salex-mp",),
            params_source=_MBD.format("eqv2/eqv2-m-omat-salex-mp"),
            weights_source="hf://facebook/OMAT24/eqV2_86M_omat_mp_salex.pt (gated)",
            description="EquiformerV2 86M, OMat24 pre-training + MPtrj/sAlex fine-tuning (fairchem-core 1.x only); "
            "cannot evaluate an isolated atom (empty graph)",
        ),
        ModelInfo(
            "pet-oam-xl", "pet", "PET-OAM-XL", 3, 730_000_000, "pet",
            packages=("upet", "torch"), kwargs={"model": "pet-oam-xl", "version": "1.0.0",
                                               "hf_repo": "lab-cosmo/upet", "filename": "models/pet-oam-xl-v1.0.0.ckpt"},
            dtypes=_BOTH, cost="xlarge", params_source=_MBD.format("pet/pet-oam-xl-1.0.0") + " (published rounded)",
            weights_source="hf://lab-cosmo/upet/models/pet-oam-xl-v1.0.0.ckpt",
            description="PET-OAM-XL 1.0.0 (upet / metatomic)",
        ),
        # ---------------------------------------------------------------- Tier 4: multi-head / multi-task
        ModelInfo(
            "mace-mh-1-omat", "mace", "MACE-MH-1-OMAT", 4, None, "mace",
            packages=("mace", "torch", "e3nn"), kwargs={"model": "mh-1", "head": "omat_pbe"}, dtypes=_BOTH,
            cost="medium", env="mace", aliases=("mace-mh-1",),
            params_source="not published in a form we could verify; measure it from the checkpoint",
            weights_source="https://github.com/ACEsuit/mace-foundations/releases/download/mace_mh_1/mace-mh-1.model",
            description="MACE-MH-1 (OMat24 pre-training, multi-head fine-tuning), head omat_pbe",
        ),
        ModelInfo(
            "uma-s-p1", "fairchem", "UMA-S-P1", 4, None, "fairchem",
            packages=("fairchem", "torch"), requires=("fairchem-core>=2",),
            kwargs={"api": 2, "name": "uma-s-1p1", "task": "omat", "hf_repo": "facebook/UMA",
                    "filename": "checkpoints/uma-s-1p1.pt"},
            dtypes=_BOTH, cost="xlarge", aliases=("uma-s-1p1",),
            params_source="mixture of linear experts: ~6 M active of ~145 M total (fairchem docs/core/uma.md); "
            "not a single count",
            weights_source="hf://facebook/UMA/checkpoints/uma-s-1p1.pt (gated: accept the licence, then HF token)",
            description="UMA small 1.1 (fairchem-core 2.x), task omat",
        ),
        ModelInfo(
            "uma-m-p1", "fairchem", "UMA-M-P1", 4, None, "fairchem",
            packages=("fairchem", "torch"), requires=("fairchem-core>=2",),
            kwargs={"api": 2, "name": "uma-m-1p1", "task": "omat", "hf_repo": "facebook/UMA",
                    "filename": "checkpoints/uma-m-1p1.pt"},
            dtypes=_BOTH, cost="xlarge", aliases=("uma-m-1p1",),
            params_source="mixture of linear experts (arXiv:2506.23971); no single count",
            weights_source="hf://facebook/UMA/checkpoints/uma-m-1p1.pt (gated)",
            description="UMA medium 1.1 (fairchem-core 2.x), task omat",
        ),
        # ---------------------------------------------------------------- not in the paper
        ModelInfo(
            "sevennet-0", "sevennet", "SevenNet-0 (11Jul2024)", None, 842_623, "sevennet",
            packages=("sevenn", "torch"), kwargs={"checkpoint": "7net-0"}, cost="small",
            params_source="measured: sum of SevenNetCalculator('7net-0').model parameters",
            weights_source="sevenn wheel (7net-0)",
            description="SevenNet-0 (MPtrj), weights shipped in the sevenn wheel; not in the Dyna-Mat paper",
        ),
        ModelInfo(
            "sevennet-l3i5", "sevennet", "SevenNet-l3i5", None, 1_171_327, "sevennet",
            packages=("sevenn", "torch"), kwargs={"checkpoint": "7net-l3i5"}, cost="medium",
            params_source="measured: sum of SevenNetCalculator('7net-l3i5').model parameters",
            weights_source="sevenn wheel (7net-l3i5)",
            description="SevenNet l_max=3, 5 interaction layers (MPtrj), weights in the sevenn wheel; "
            "not in the Dyna-Mat paper",
        ),
    ]
}

#: other spellings → canonical name
ALIASES: dict[str, str] = {a: m.name for m in REGISTRY.values() for a in m.aliases}

#: the 15 models of the paper, by tier (Results B)
PAPER_TIERS: dict[int, tuple[str, ...]] = {
    t: tuple(m.name for m in REGISTRY.values() if m.tier == t) for t in (1, 2, 3, 4)
}


def list_models() -> list[ModelInfo]:
    """All registered models, in registry order."""
    return list(REGISTRY.values())


def canonical_name(name: str) -> str:
    """The registry name for ``name`` or one of its aliases (case-insensitive)."""
    key = (name or "").strip()
    if key in REGISTRY:
        return key
    low = key.lower()
    if low in REGISTRY:
        return low
    if low in ALIASES:
        return ALIASES[low]
    raise DriverError(f"unknown model {name!r}; known models: {', '.join(REGISTRY)} (see --list)")


def get_model_info(name: str) -> ModelInfo:
    return REGISTRY[canonical_name(name)]


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
    return weights_dict("missing", os.path.join(d, pattern), source, "not in this version of the wheel")


_SEVENN_FILES = {"7net-0": "SevenNet_0__11Jul2024/checkpoint_sevennet_0.pth", "7net-l3i5": "SevenNet_l3i5/checkpoint_l3i5.pth"}

#: weights_status of the families whose adapters predate it (weights in the wheel, or none)
_BUILTIN_WEIGHTS_STATUS = {
    "ase_builtin": lambda info: weights_dict("none", None, "analytic potential"),
    "harmonic": lambda info: weights_dict("none", None, "analytic potential"),
    "chgnet": lambda info: _in_wheel(
        "chgnet", f"pretrained/{info.kwargs.get('model_name', '0.3.0')}/*.pth.tar", info.weights_source
    ),
    "sevennet": lambda info: _in_wheel(
        "sevenn", "pretrained_potentials/" + _SEVENN_FILES.get(info.kwargs.get("checkpoint"), "*/*.pth"),
        info.weights_source,
    ),
}


def weights_status(name: str, model_path: str | None = None) -> dict:
    """Whether the model's weights are reachable, without loading the model or its package."""
    info = get_model_info(name)
    if model_path:
        p = os.path.expanduser(model_path)
        return weights_dict("local" if os.path.exists(p) else "missing", p, "--model-path")
    fn = _BUILTIN_WEIGHTS_STATUS.get(info.family) or getattr(_import_family(info.family), "weights_status", None)
    if fn is None:
        return weights_dict("unknown", None, info.weights_source)
    try:
        return fn(info)
    except Exception as exc:  # a status check must never break --list
        return weights_dict("unknown", None, info.weights_source, f"{type(exc).__name__}: {exc}")


def model_info_dict(name: str) -> dict:
    """A JSON-able description of one model (for --list --json, run.json, reports)."""
    info = get_model_info(name)
    d = asdict(info)
    d["kwargs"] = dict(info.kwargs)
    for k in ("packages", "dtypes", "aliases", "requires"):
        d[k] = list(getattr(info, k))
    missing = missing_requirements(info)
    d["installed"] = not missing
    d["missing"] = missing
    d["pip"] = info.pip_hint
    d["make_env"] = info.env_hint if info.extra else ""
    d["weights"] = weights_status(info.name)
    return d


def tier_label(tier) -> str:
    if tier is None:
        return "-"
    return str(tier)


def registry_table() -> str:
    rows = [("name", "model", "tier", "family", "params", "dtype", "extra", "env", "installed", "weights")]
    for m in list_models():
        w = weights_status(m.name)
        rows.append(
            (
                m.name + (f" ({', '.join(m.aliases)})" if m.aliases else ""),
                m.human_name,
                tier_label(m.tier),
                m.family,
                f"{m.n_params:,}" if m.n_params else "-",
                m.default_dtype,
                m.extra or "-",
                m.env,
                "yes" if is_installed(m) else "no",
                w["status"],
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


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
# the model interface
# --------------------------------------------------------------------------------------------


class Model:
    """One loaded model. Subclasses implement :meth:`calculate` and, if the model can evaluate
    several structures in one call, :meth:`calculate_batch` with ``can_batch = True``.

    Results are ``(energy eV, forces (n,3) eV/Å, stress eV/Å³ (Voigt or 3×3) or None)``.
    """

    can_batch = False
    #: whether calculate/calculate_batch take ``stress=False`` and then skip the model's stress
    #: (``--stress-stride``); models without it always compute it (the driver still returns the
    #: placeholder virial on unwritten steps, so outputs do not depend on the family)
    skips_stress = False
    #: atomic numbers the model covers; None = all
    covered_numbers: frozenset[int] | None = None

    def __init__(self, info: ModelInfo, device: str = "cpu", dtype: str | None = None):
        self.info = info
        self.name = info.name
        self.device = device
        self.dtype = dtype or info.default_dtype
        self.n_params: int | None = info.n_params
        self.version_packages: tuple[str, ...] = ()
        self.weights: str | None = None  # where the weights were loaded from

    # hooks -------------------------------------------------------------------------------
    def check_species(self, numbers: Sequence[int]) -> None:
        """Raises DriverError naming the elements the model does not cover."""
        if self.covered_numbers is None:
            return
        from ase.data import chemical_symbols

        missing = sorted({int(z) for z in numbers} - set(self.covered_numbers))
        if missing:
            cov = " ".join(chemical_symbols[z] for z in sorted(self.covered_numbers))
            raise DriverError(
                f"model {self.name!r} does not cover element(s) "
                f"{' '.join(chemical_symbols[z] for z in missing)} (it covers: {cov})"
            )

    def prepare(self, atoms) -> None:
        """Called once before the first evaluation, with the template structure (or the first
        structure received). Models that depend on a reference structure use it."""

    def calculate(self, atoms, first: bool):  # pragma: no cover - abstract
        """(plus ``stress=True`` where ``skips_stress``)"""
        raise NotImplementedError

    def calculate_batch(self, atoms_list: Sequence) -> list:
        return [self.calculate(a, False) for a in atoms_list]

    def versions(self) -> dict[str, str]:
        return package_versions(self.version_packages)

    def describe(self) -> dict:
        return {
            "model": self.name,
            "human_name": self.info.human_name,
            "family": self.info.family,
            "tier": self.info.tier,
            "device": self.device,
            "dtype": self.dtype,
            "n_params": self.n_params,
            "batched": self.can_batch,
            "weights": self.weights,
        }


class CalculatorModel(Model):
    """A model behind an ASE calculator. After the first call only ``['positions', 'cell']``
    are passed as system changes, so calculators that rebuild their neighbour list on
    ``numbers``/``pbc`` changes (EMT) do not rebuild it on every step."""

    def __init__(self, info: ModelInfo, calc, device: str = "cpu", dtype: str | None = None):
        super().__init__(info, device, dtype)
        self.calc = calc

    def calculate(self, atoms, first: bool, stress: bool = True):
        import numpy as np
        from ase.calculators.calculator import all_changes

        props = ["energy", "forces"]
        want_stress = stress and atoms.cell.rank == 3
        if want_stress:
            props.append("stress")
        self.calc.calculate(atoms, props, list(all_changes) if first else ["positions", "cell"])
        res = self.calc.results
        return float(res["energy"]), np.array(res["forces"], dtype=np.float64), (
            np.array(res["stress"], dtype=np.float64) if want_stress and "stress" in res else None
        )


def torch_n_params(module) -> int:
    return int(sum(p.numel() for p in module.parameters()))


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


def announce_weights(model: Model, where: str) -> None:
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


def _import_family(family: str):
    return importlib.import_module(f"{__name__}.{family}")


def load_model(
    name: str,
    *,
    device: str = "cpu",
    dtype: str | None = None,
    model_path: str | None = None,
    options: Mapping[str, str] | None = None,
) -> Model:
    """Loads a registered model. Errors (missing package, weights, bad options, unsupported
    dtype or device) are raised as one-line DriverError messages."""
    info = get_model_info(name)
    if dtype is not None and dtype not in info.dtypes:
        raise DriverError(f"model {info.name!r} supports dtype {' or '.join(info.dtypes)}, not {dtype}")
    missing = missing_requirements(info)
    if missing:
        raise DriverError(
            f"model {info.name!r} needs {', '.join(missing)}, not available in this environment "
            f"({sys.executable}); its packages belong in a '{info.env}' environment ({ENVIRONMENTS[info.env]}): "
            f"create one with {info.env_hint} (or pip install './drivers[{info.extra}]' there)"
        )
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise DriverError(f"device must be cpu or cuda, got {device!r}")
    if model_path is not None and not os.path.exists(os.path.expanduser(model_path)):
        raise DriverError(f"--model-path {model_path} does not exist")
    module = _import_family(info.family)
    return module.load(
        info, device=device, dtype=dtype,
        model_path=os.path.expanduser(model_path) if model_path else None, options=dict(options or {}),
    )


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


__all__ = [
    "ALIASES",
    "ENVIRONMENTS",
    "PAPER_TIERS",
    "REGISTRY",
    "ModelInfo",
    "Model",
    "CalculatorModel",
    "list_models",
    "canonical_name",
    "get_model_info",
    "is_installed",
    "missing_requirements",
    "model_info_dict",
    "registry_table",
    "load_model",
    "package_versions",
    "weights_status",
]
