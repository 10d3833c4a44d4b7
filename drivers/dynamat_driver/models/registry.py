"""The model registry, data only: name → family adapter, loader arguments, paper tier, size, pip
extra, environment (see the package docstring for tiers, costs, parameter counts, precision).

Importing it imports nothing beyond the standard library (not even numpy), so
``run_scripts/make_driver_env.sh`` and ``dynamat-driver --list`` read it with any Python.

**Adding a family**: one module ``dynamat_driver/models/<family>.py`` defining ``load(info, *,
device, dtype, model_path, options) -> Model`` and, for weights that are neither shipped in a
wheel (``wheel_weights``) nor absent (analytic, ``extra=None``), ``weights_status(info) -> dict``
(found without importing numpy or the model package); plus its line(s) in :data:`REGISTRY` below
and its extra in ``drivers/pyproject.toml``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from .. import DriverError


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
    #: weights shipped inside the package's wheel: "import_name:glob inside the package folder"
    wheel_weights: str = ""
    #: the ``-o KEY=VALUE`` names its loader takes: data, so a server refuses a wrong one before a run starts
    options: tuple[str, ...] = ()

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
            options=("epsilon", "sigma", "rc"),
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
            default_dtype="float64", dtypes=ANALYTIC_DTYPES, cost="test", env="main", options=("k",),
            description="each atom tied by a spring to its template site (fractional coordinates); "
            "option k (eV/Å², default 1.0)",
        ),
        # ---------------------------------------------------------------- Tier 1: MPtrj
        ModelInfo(
            "chgnet", "chgnet", "CHGNet 0.3.0", 1, 412_525, "chgnet",
            options=("batch_edges",),
            packages=("chgnet", "torch"), kwargs={"model_name": "0.3.0"}, dtypes=_BOTH, cost="small",
            wheel_weights="chgnet:pretrained/0.3.0/*.pth.tar",
            aliases=("chgnet-0.3.0",), params_source="measured: CHGNet.load('0.3.0').n_params",
            weights_source="chgnet wheel (chgnet/pretrained/0.3.0)",
            description="CHGNet 0.3.0 (MPtrj), weights shipped in the chgnet wheel",
        ),
        ModelInfo(
            "mace-mp-0", "mace", "MACE-MP-0", 1, 4_688_656, "mace",
            options=("head",),
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
            options=("head",),
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
            options=("head",),
            packages=("mace", "torch", "e3nn"), kwargs={"model": "mh-1", "head": "omat_pbe"}, dtypes=_BOTH,
            cost="medium", env="mace", aliases=("mace-mh-1",),
            params_source="not published in a form we could verify; measure it from the checkpoint",
            weights_source="https://github.com/ACEsuit/mace-foundations/releases/download/mace_mh_1/mace-mh-1.model",
            description="MACE-MH-1 (OMat24 pre-training, multi-head fine-tuning), head omat_pbe",
        ),
        ModelInfo(
            "uma-s-p1", "fairchem", "UMA-S-P1", 4, None, "fairchem",
            options=("settings", "atom_refs"),
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
            options=("settings", "atom_refs"),
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
            wheel_weights="sevenn:pretrained_potentials/SevenNet_0__11Jul2024/checkpoint_sevennet_0.pth",
            params_source="measured: sum of SevenNetCalculator('7net-0').model parameters",
            weights_source="sevenn wheel (7net-0)",
            description="SevenNet-0 (MPtrj), weights shipped in the sevenn wheel; not in the Dyna-Mat paper",
        ),
        ModelInfo(
            "sevennet-l3i5", "sevennet", "SevenNet-l3i5", None, 1_171_327, "sevennet",
            packages=("sevenn", "torch"), kwargs={"checkpoint": "7net-l3i5"}, cost="medium",
            wheel_weights="sevenn:pretrained_potentials/SevenNet_l3i5/checkpoint_l3i5.pth",
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


__all__ = ["ALIASES", "ANALYTIC_DTYPES", "ENVIRONMENTS", "PAPER_TIERS", "REGISTRY", "ModelInfo", "canonical_name",
           "get_model_info", "list_models"]
