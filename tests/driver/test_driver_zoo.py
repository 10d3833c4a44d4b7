"""The model zoo: the registry (paper tiers, aliases, ``--list --json``), the per-model
environments of ``run_scripts/make_driver_env.sh``, and every model family's real loading code
serving i-PI.

Foundation-model weights cannot be downloaded here. Each family is exercised with a tiny randomly
initialised model saved in the family's own checkpoint format and loaded through the same adapter
path as the real weights (``--model-path``); its forces through the socket are compared with the
package's own ASE calculator in the same environment, and batched with sequential evaluation.
Where the real weights are needed, the adapter's one-line offline message is checked.

Tests marked ``zoo`` build environments under ``<repo>/.venvs/{mace,zoo,grace}``
(``DYNAMAT_ZOO_VENVS`` moves them) with ``make_driver_env.sh`` (editable driver, so they run the
working tree), all three at once, and reuse them in later sessions (``DYNAMAT_ZOO_REBUILD=1``
reruns the script on them). The first run downloads ~4 GB of wheels; tiny models and their
reference values are cached in ``.venvs/zoo-tiny-models`` per environment state. Run them with
``pytest -m zoo``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "run_scripts" / "make_driver_env.sh"
VENVS = Path(os.environ.get("DYNAMAT_ZOO_VENVS", REPO / ".venvs"))
BIN = Path(sys.executable).parent

PAPER = {
    1: {"chgnet", "mace-mp-0", "grace-2l-mptrj"},
    2: {"mace-mpa-0", "orb-v2"},
    3: {"mattersim-v1-5m", "grace-2l-oam", "orb-v3-conservative-inf-mpa", "esen-30m-oam", "nequip-oam-xl",
        "equiformer-v2", "pet-oam-xl"},
    4: {"mace-mh-1-omat", "uma-s-p1", "uma-m-p1"},
}
WEIGHT_STATUSES = {"in-wheel", "cached", "download", "local", "missing", "none", "unknown"}


def main_driver() -> list[str]:
    exe = BIN / "dynamat-driver"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "dynamat_driver.cli"]


def one_error_line(stderr: str) -> str:
    """The driver's error line; asserts it is the only line on stderr, without a traceback."""
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1 and lines[0].startswith("dynamat-driver: error:"), stderr
    return lines[0]


# --------------------------------------------------------------------------------------------
# registry (no environments needed)
# --------------------------------------------------------------------------------------------


def test_registry_has_the_papers_models_with_their_tiers():
    from dynamat_driver.models import PAPER_TIERS, REGISTRY, get_model_info

    assert {t: set(v) for t, v in PAPER_TIERS.items()} == PAPER
    assert sum(len(v) for v in PAPER.values()) == 15  # "15 foundation MLIPs across four model tiers"
    for tier, names in PAPER.items():
        for n in names:
            info = get_model_info(n)
            assert info.tier == tier and info.family and info.extra and info.weights_source
            assert info.default_dtype in info.dtypes
    for n in ("emt", "lj", "harmonic"):
        assert REGISTRY[n].tier == "test" and REGISTRY[n].cost == "test"
    for n in ("sevennet-0", "sevennet-l3i5"):
        assert REGISTRY[n].tier is None and "not in the Dyna-Mat paper" in REGISTRY[n].description
    assert REGISTRY["chgnet"].human_name == "CHGNet 0.3.0"
    assert REGISTRY["mace-mh-1-omat"].kwargs["head"] == "omat_pbe"
    # parameter counts: cited or measured, never guessed
    for m in REGISTRY.values():
        if m.n_params and m.tier != "test":
            assert m.params_source, m.name
    assert {m.env for m in REGISTRY.values()} <= {"main", "zoo", "mace", "grace", "fairchem1"}


def test_aliases_resolve_to_the_canonical_name():
    from dynamat_driver import DriverError
    from dynamat_driver.models import canonical_name, get_model_info, model_info_dict

    assert canonical_name("orb-v3") == "orb-v3-conservative-inf-mpa"
    assert get_model_info("ORB-V3").name == "orb-v3-conservative-inf-mpa"
    assert canonical_name("uma-s-1p1") == "uma-s-p1"
    assert model_info_dict("orb-v3")["name"] == "orb-v3-conservative-inf-mpa"
    with pytest.raises(DriverError, match="unknown model"):
        canonical_name("orb-v4")


def test_registry_imports_no_model_package_not_even_numpy():
    code = (
        "import sys; import dynamat_driver.models as m; m.registry_table(); m.model_info_dict('mace-mp-0');"
        "bad = sorted(x for x in sys.modules if x.split('.')[0] in "
        "('torch', 'numpy', 'mace', 'orb_models', 'fairchem', 'tensorflow', 'upet', 'nequip', 'mattersim', 'chgnet'));"
        "print(','.join(bad))"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == ""


def test_list_json_reports_installed_and_weights(tmp_path):
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "xdg"))
    res = subprocess.run(main_driver() + ["--list", "--json"], capture_output=True, text=True, env=env, timeout=60)
    assert res.returncode == 0, res.stderr
    rows = {d["name"]: d for d in json.loads(res.stdout)}
    assert set().union(*PAPER.values()) <= set(rows)
    for d in rows.values():
        assert isinstance(d["installed"], bool)
        assert d["weights"]["status"] in WEIGHT_STATUSES
        assert "tier" in d and "family" in d and "n_params" in d
    assert rows["emt"]["weights"]["status"] == "none" and rows["emt"]["installed"]
    if rows["chgnet"]["installed"]:
        assert rows["chgnet"]["weights"]["status"] == "in-wheel"
        assert Path(rows["chgnet"]["weights"]["path"]).is_file()
    mace = rows["mace-mp-0"]["weights"]
    assert mace["status"] == "download"
    assert mace["path"] == str(tmp_path / "xdg" / "mace" / "20231203mace128L1_epoch199model")
    # a file placed in the cache is found without loading anything
    (tmp_path / "xdg" / "mace").mkdir(parents=True)
    Path(mace["path"]).write_bytes(b"x")
    res = subprocess.run(main_driver() + ["--list", "--json"], capture_output=True, text=True, env=env, timeout=60)
    assert {d["name"]: d for d in json.loads(res.stdout)}["mace-mp-0"]["weights"]["status"] == "cached"
    # the text table has the same columns
    res = subprocess.run(main_driver() + ["--list"], capture_output=True, text=True, env=env, timeout=60)
    assert "tier" in res.stdout.splitlines()[0] and "weights" in res.stdout.splitlines()[0]


def test_models_table_rows_from_a_driver_command():
    from click.testing import CliRunner

    try:  # the server wing's layout moves; either place works
        from dynamat.cli.models import models_command
    except ImportError:
        from dynamat.models_table import models_command
    from dynamat.models_table import model_rows

    rows = {r["name"]: r for r in model_rows(main_driver())}
    assert rows["uma-s-p1"]["tier"] == 4 and rows["uma-s-p1"]["family"] == "fairchem"
    assert rows["chgnet"]["n_params"] == 412_525 and rows["chgnet"]["package"] == "chgnet"
    assert rows["emt"]["weights"] == "none"
    out = CliRunner().invoke(models_command, ["--tier", "2"])
    assert out.exit_code == 0, out.output
    names = [ln.split()[0] for ln in out.output.splitlines()[1:]]
    assert names == ["mace-mpa-0", "orb-v2"]
    bad = CliRunner().invoke(models_command, ["--driver-cmd", "/nonexistent/dynamat-driver"])
    # resolved as every driver command is (dynamat.processes.driver_command); the message reaches the
    # output or, with the server wing's newer error handling, the exception
    assert bad.exit_code != 0 and "is not an executable program" in bad.output + str(bad.exception)


def test_make_driver_env_refuses_unknown_models_and_mixed_groups(tmp_path):
    res = subprocess.run(["bash", str(SCRIPT), "orb-v4"], capture_output=True, text=True, timeout=60)
    assert res.returncode != 0 and "unknown model or group 'orb-v4'" in res.stderr
    fake = tmp_path / "env"
    (fake / "bin").mkdir(parents=True)
    (fake / "bin" / "python").symlink_to(sys.executable)
    (fake / ".dynamat-env").write_text("zoo\n")
    res = subprocess.run(["bash", str(SCRIPT), "mace-mp-0", str(fake)], capture_output=True, text=True, timeout=60)
    assert res.returncode != 0 and "is a 'zoo' environment, not 'mace'" in res.stderr


def test_model_packages_missing_name_the_environment_to_create():
    from dynamat_driver.models import is_installed, REGISTRY

    if is_installed(REGISTRY["mace-mp-0"]):
        pytest.skip("mace-torch is installed in this environment")
    res = subprocess.run(main_driver() + ["--model", "mace-mp-0"], capture_output=True, text=True, timeout=60)
    line = one_error_line(res.stderr)
    assert "'mace' environment" in line and "make_driver_env.sh mace-mp-0" in line


# --------------------------------------------------------------------------------------------
# environments (built once, reused)
# --------------------------------------------------------------------------------------------

class EnvBuilder:
    """Builds the environments a session needs, all at once in parallel (pip is mostly waiting
    on downloads), and hands each test its own when it is ready."""

    def __init__(self, groups, logdir: Path):
        self.procs: dict[str, tuple[subprocess.Popen, Path, float] | None] = {}
        self.logdir = logdir
        for g in groups:
            self.start(g)

    @staticmethod
    def ready(group: str) -> bool:
        """An environment of this group from an earlier session, running this working tree's driver."""
        venv = VENVS / group
        try:
            if (venv / ".dynamat-env").read_text().strip() != group:
                return False
            if group not in (venv / ".dynamat-extras").read_text().split():  # written when the script succeeded
                return False
        except OSError:
            return False
        res = subprocess.run([str(venv / "bin" / "python"), "-c", "import dynamat_driver; print(dynamat_driver.__file__)"],
                             capture_output=True, text=True, timeout=60)
        return res.returncode == 0 and Path(res.stdout.strip()).resolve().is_relative_to(REPO / "drivers")

    def start(self, group: str):
        if group in self.procs:
            return
        if os.environ.get("DYNAMAT_ZOO_REBUILD") != "1" and self.ready(group):
            self.procs[group] = None
            return
        log = self.logdir / f"make_{group}.log"
        env = dict(os.environ, DYNAMAT_EDITABLE="1")
        proc = subprocess.Popen(["bash", str(SCRIPT), group, str(VENVS / group)], stdout=open(log, "w"),
                                stderr=subprocess.STDOUT, env=env)
        self.procs[group] = (proc, log, time.monotonic())

    def wait(self, group: str) -> Path:
        self.start(group)
        if self.procs[group] is None:
            return VENVS / group
        proc, log, t0 = self.procs[group]
        rc = proc.wait(timeout=1800)
        if rc != 0:
            tail = "\n".join([ln for ln in log.read_text().splitlines() if not ln.startswith("WARNING: Location")][-15:])
            pytest.fail(f"make_driver_env.sh {group} failed ({rc}):\n{tail}")
        return VENVS / group


def _env(group: str) -> Path:
    """The environment of ``group``, from the session's builder (see ``jobs``)."""
    return _BUILDER.wait(group)


_BUILDER: EnvBuilder | None = None


# --------------------------------------------------------------------------------------------
# tiny models: built and evaluated in-process with the package's own calculator, in its env
# --------------------------------------------------------------------------------------------

EVAL = """
import json, sys
import numpy as np
from ase import Atoms
data = np.load(sys.argv[2])
out = []
for pos, cell in zip(data["positions"], data["cells"]):
    a = Atoms(numbers=data["numbers"], positions=pos, cell=cell, pbc=True)
    a.calc = calc
    out.append({"energy": float(a.get_potential_energy()), "forces": np.asarray(a.get_forces(), float).tolist(),
                "stress": np.asarray(a.get_stress(voigt=True), float).tolist()})
json.dump(out, open(sys.argv[3], "w"))
"""

TORCH1 = "import torch\ntorch.set_num_threads(1)\n"

TINY = {
    # family: (model file name, builder + calculator code: sys.argv[1] is the model file)
    "mace": ("tiny.model", """
import os, sys
import numpy as np
from mace import modules  # first: it sets TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD, which e3nn 0.4.4 needs
from e3nn import o3
import torch
torch.set_num_threads(1)
if not os.path.exists(sys.argv[1]):
    torch.manual_seed(0)
    Z = list(range(1, 90))
    block = modules.interaction_classes["RealAgnosticResidualInteractionBlock"]
    m = modules.ScaleShiftMACE(
        r_max=5.0, num_bessel=4, num_polynomial_cutoff=5, max_ell=2, interaction_cls=block,
        interaction_cls_first=block, num_interactions=2, num_elements=len(Z),
        hidden_irreps=o3.Irreps("8x0e+8x1o"), MLP_irreps=o3.Irreps("8x0e"),
        atomic_energies=np.linspace(-5.0, -1.0, len(Z)), avg_num_neighbors=12.0, atomic_numbers=Z,
        correlation=2, gate=torch.nn.functional.silu, radial_MLP=[16, 16], radial_type="bessel",
        atomic_inter_scale=100.0, atomic_inter_shift=0.0)
    torch.save(m, sys.argv[1])
from mace.calculators import MACECalculator
calc = MACECalculator(model_paths=sys.argv[1], device="cpu", default_dtype="float32")
"""),
    "orb-v2": ("tiny-orb-v2.ckpt", TORCH1 + """
import os, sys
from orb_models.forcefield import pretrained
from orb_models.forcefield.atomic_system import SystemConfig
from orb_models.forcefield.calculator import ORBCalculator
if not os.path.exists(sys.argv[1]):  # orb's loaders take a state dict of the full architecture
    torch.manual_seed(0)
    net = pretrained.orb_v2_architecture(device="cpu", system_config=SystemConfig(radius=6.0, max_num_neighbors=20))
    torch.save(net.state_dict(), sys.argv[1])
calc = ORBCalculator(pretrained.orb_v2(weights_path=sys.argv[1], device="cpu", precision="float32-high",
                                       compile=False), device="cpu")
"""),
    "orb-v3": ("tiny-orb-v3.ckpt", TORCH1 + """
import os, sys
from orb_models.forcefield import pretrained
from orb_models.forcefield.atomic_system import SystemConfig
from orb_models.forcefield.calculator import ORBCalculator
if not os.path.exists(sys.argv[1]):
    torch.manual_seed(0)
    net = pretrained.orb_v3_conservative_architecture(
        device="cpu", system_config=SystemConfig(radius=6.0, max_num_neighbors=120))
    torch.save(net.state_dict(), sys.argv[1])
calc = ORBCalculator(pretrained.orb_v3_conservative_inf_mpa(
    weights_path=sys.argv[1], device="cpu", precision="float32-high", compile=False), device="cpu")
"""),
    "mattersim": ("tiny-mattersim.pth", TORCH1 + """
import os, sys
if not os.path.exists(sys.argv[1]):
    from mattersim.forcefield.m3gnet.m3gnet import M3Gnet
    torch.manual_seed(0)
    args = dict(num_blocks=2, units=16, max_l=2, max_n=3, cutoff=5.0, threebody_cutoff=4.0, max_z=94)
    m = M3Gnet(device="cpu", **args)
    torch.save({"model_name": "m3gnet", "model_args": args, "model": m.state_dict()}, sys.argv[1])
from mattersim.forcefield import MatterSimCalculator
calc = MatterSimCalculator(load_path=sys.argv[1], device="cpu")
"""),
    "uma": ("tiny-uma.pt", TORCH1 + """
import os, sys
if not os.path.exists(sys.argv[1]):
    # the layout of a UMA inference checkpoint, with a one-layer eSCN-MD backbone and an omat head
    import hydra
    from torch.optim.swa_utils import AveragedModel
    from fairchem.core.units.mlip_unit.api.inference import MLIPInferenceCheckpoint
    torch.manual_seed(0)
    model_config = {
        "_target_": "fairchem.core.models.base.HydraModel",
        "backbone": dict(model="fairchem.core.models.uma.escn_md.eSCNMDBackbone", max_num_elements=100,
                         sphere_channels=16, lmax=2, mmax=2, otf_graph=True, max_neighbors=40, cutoff=5.0,
                         edge_channels=16, num_distance_basis=16, direct_forces=False, regress_forces=True,
                         regress_stress=True, num_layers=1, hidden_channels=16, dataset_mapping={"omat": "omat"},
                         always_use_pbc=False),
        "heads": {"efs": {"module": "fairchem.core.models.uma.escn_md.MLP_EFS_Head", "prefix": "omat"}},
        "pass_through_head_outputs": True, "otf_graph": True,
    }
    def task(name, level, prop, dim, refs=False):
        t = {"_target_": "fairchem.core.units.mlip_unit.mlip_unit.Task", "name": name, "level": level,
             "property": prop, "datasets": ["omat"],
             "out_spec": {"_target_": "fairchem.core.units.mlip_unit.mlip_unit.OutputSpec", "dim": dim,
                          "dtype": "float32"},
             "normalizer": {"_target_": "fairchem.core.modules.normalization.normalizer.Normalizer",
                            "mean": 0.0, "rmsd": 1.0}}
        if refs:
            t["element_references"] = {
                "_target_": "fairchem.core.modules.normalization.element_references.ElementReferences",
                "element_references": {"_target_": "torch.DoubleTensor",
                                       "_args_": [[0.0] + [-1.0 - 0.01 * z for z in range(1, 100)]]}}
        return t
    tasks = [task("omat_energy", "system", "energy", [1], refs=True), task("omat_forces", "atom", "forces", [3]),
             task("omat_stress", "system", "stress", [1, 9])]
    m = hydra.utils.instantiate(model_config)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.3 * torch.randn_like(p))
    torch.save(MLIPInferenceCheckpoint(model_config=model_config, model_state_dict=m.state_dict(),
                                       ema_state_dict=AveragedModel(m).state_dict(), tasks_config=tasks), sys.argv[1])
from fairchem.core import FAIRChemCalculator
from fairchem.core.units.mlip_unit import load_predict_unit
from fairchem.core.units.mlip_unit.api.inference import InferenceSettings
settings = InferenceSettings(tf32=False, activation_checkpointing=False, merge_mole=False, compile=False,
                             external_graph_gen=False, internal_graph_gen_version=2)
calc = FAIRChemCalculator(load_predict_unit(sys.argv[1], settings, None, "cpu"), task_name="omat")
"""),
    "pet": ("tiny-pet.ckpt", TORCH1 + """
import copy, os, sys
if not os.path.exists(sys.argv[1]):
    from metatrain.pet import PET
    from metatrain.utils.architectures import get_default_hypers
    from metatrain.utils.data import DatasetInfo
    from metatrain.utils.data.target_info import get_energy_target_info
    torch.manual_seed(0)
    hypers = copy.deepcopy(get_default_hypers("pet")["model"])
    hypers.update({k: v for k, v in dict(d_pet=16, d_head=16, d_node=32, d_feedforward=32, num_heads=2,
                   num_attention_layers=1, num_gnn_layers=1, cutoff=5.0).items() if k in hypers})
    info = DatasetInfo(length_unit="Angstrom", atomic_types=list(range(1, 87)),
                       targets={"energy": get_energy_target_info("energy", {"quantity": "energy", "unit": "eV"})})
    m = PET(hypers, info)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.1 * torch.randn_like(p))
    torch.save(m.get_checkpoint(), sys.argv[1])
from upet.ase import UPETCalculator
calc = UPETCalculator(checkpoint_path=sys.argv[1], device="cpu")
"""),
    "grace": ("tiny-grace", """
import os, sys
os.environ["CUDA_VISIBLE_DEVICES"] = ""
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
if not os.path.exists(sys.argv[1]):
    import tensorflow as tf
    from tensorpotential.potentials.presets import GRACE_1LAYER_v1_24
    from tensorpotential.tpmodel import TPModel
    tf.random.set_seed(0)
    elements = {s: i for i, s in enumerate(["Al", "Ni", "Cu", "Pd", "Ag", "Pt", "Au", "Co", "Fe"])}
    ins = GRACE_1LAYER_v1_24(element_map=elements, rcut=5.0, avg_n_neigh=12.0, n_rad_base=4, embedding_size=8,
                             lmax=2, n_rad_max=4, n_mlp_dens=4, max_order=2)
    m = TPModel(instructions=ins.get_instructions())
    m.build(tf.float64, jit_compile=True)
    m.decorate_compute_function(jit_compile=True)
    m.save_model(sys.argv[1], jit_compile=True)  # a TensorFlow SavedModel folder, as grace_fm caches them
from tensorpotential.calculator.asecalculator import TPCalculator
calc = TPCalculator(model=sys.argv[1], pad_neighbors_fraction=0.05, pad_atoms_number=10,
                    max_number_reduction_recompilation=2, min_dist=None, enable_uq_if_available=False)
"""),
}

#: (family script, registry model, environment group)
CASES = {
    "mace": ("mace", "mace-mp-0", "mace"),
    "orb-v2": ("orb-v2", "orb-v2", "zoo"),
    "orb-v3": ("orb-v3", "orb-v3", "zoo"),
    "mattersim": ("mattersim", "mattersim-v1-5m", "zoo"),
    "uma": ("uma", "uma-s-p1", "zoo"),
    "pet": ("pet", "pet-oam-xl", "zoo"),
    "grace": ("grace", "grace-2l-oam", "grace"),
}


def structures(n: int = 3, seed: int = 11):
    """n rattled 32-atom Cu/Au fcc cells in a triclinic cell (one atom outside it)."""
    from ase.build import bulk
    from ase.geometry import cellpar_to_cell

    base = bulk("Cu", "fcc", a=3.75, cubic=True).repeat((2, 2, 2))
    base.symbols[[0, 5, 10, 23, 31]] = "Au"
    cell = cellpar_to_cell([7.6, 7.4, 7.5, 88.0, 93.0, 91.0])
    base.set_cell(cell, scale_atoms=True)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        a = base.copy()
        a.positions += rng.normal(scale=0.08, size=a.positions.shape)
        a.positions[3] += 7.5 * np.array(cell[0]) / np.linalg.norm(cell[0])
        out.append(a)
    return out


def _site_packages_key(venv: Path) -> str:
    """Changes when the environment's installed distributions change."""
    names = sorted(p.name for p in venv.glob("lib/python*/site-packages/*.dist-info"))
    return hashlib.sha256("\n".join(names).encode()).hexdigest()[:12]


TINY_DIR = VENVS / "zoo-tiny-models"
_TINY_LOCKS = {f: threading.Lock() for f in TINY}


def tiny_model(family: str, venv: Path, atoms) -> tuple[Path, list[dict]]:
    """Builds (once per environment state) the family's tiny model and evaluates ``atoms`` with
    the package's own ASE calculator in ``venv``; returns (model path, reference results)."""
    with _TINY_LOCKS[family]:
        return _tiny_model(family, venv, atoms)


def _tiny_model(family: str, venv: Path, atoms) -> tuple[Path, list[dict]]:
    fname, code = TINY[family]
    tiny_dir = TINY_DIR
    pos = np.stack([a.positions for a in atoms])
    key = hashlib.sha256((code + EVAL).encode() + pos.tobytes()).hexdigest()[:12] + "-" + _site_packages_key(venv)
    d = tiny_dir / f"{family}-{key}"
    model, ref = d / fname, d / "reference.json"
    data = d / "structures.npz"
    if not ref.exists():
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
        np.savez(data, numbers=atoms[0].numbers, positions=np.stack([a.positions for a in atoms]),
                 cells=np.stack([np.array(a.cell) for a in atoms]))
        script = d / "build_and_reference.py"
        script.write_text(textwrap.dedent(code) + EVAL)
        res = subprocess.run([str(venv / "bin" / "python"), str(script), str(model), str(data), str(ref) + ".tmp"],
                             capture_output=True, text=True, timeout=900, cwd=d)
        assert res.returncode == 0, f"tiny {family} model: {res.stderr[-3000:]}"
        os.replace(str(ref) + ".tmp", ref)
    return model, json.loads(ref.read_text())


# --------------------------------------------------------------------------------------------
# i-PI's server code in-process (as in test_driver_socket), drivers from the model environments
# --------------------------------------------------------------------------------------------


def ipi():
    units = pytest.importorskip("ipi.utils.units")
    from ipi.engine.forcefields import FFSocket
    from ipi.interfaces.sockets import InterfaceSocket

    return units, FFSocket, InterfaceSocket


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """i-PI's InterfaceSocket + FFSocket; the test queues force requests as i-PI's dynamics would."""

    def __init__(self, mode: str, batch_size: int, species: str):
        units, FFSocket, InterfaceSocket = ipi()
        self.bohr = units.unit_to_internal("length", "angstrom", 1.0)
        self.hartree = units.unit_to_internal("energy", "electronvolt", 1.0)
        self.tmp = tempfile.mkdtemp(prefix="dz")
        if mode == "unix":
            prefix, address, port = self.tmp + "/", "ipi", 0
            self.client_args = ["--unix", prefix + address]
        else:
            prefix, address, port = "/tmp/ipi_", "127.0.0.1", _free_port()
            self.client_args = ["--inet", f"127.0.0.1:{port}"]
        iface = InterfaceSocket(address=address, port=port, mode=mode, sockets_prefix=prefix, timeout=300.0,
                                batch_size=batch_size)
        self.ff = FFSocket(latency=1e-4, name="zoo", pars={"species": species}, dopbc=False, threaded=True,
                           interface=iface)
        self.ff.start()
        self.proc: subprocess.Popen | None = None

    def queue(self, atoms_list):
        from types import SimpleNamespace

        reqs = []
        for i, a in enumerate(atoms_list):
            h = np.ascontiguousarray(np.array(a.cell).T * self.bohr)
            q = (a.positions * self.bohr).reshape(-1).copy()
            reqs.append(self.ff.queue(SimpleNamespace(q=q), SimpleNamespace(h=h, ih=np.linalg.inv(h)), reqid=i))
        return reqs

    def start(self, cmd: list[str], env: dict | None = None):
        self.proc = subprocess.Popen(cmd + self.client_args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, cwd=self.tmp, env=env)

    def results(self, reqs, atoms_list, timeout: float = 600.0) -> list[dict]:
        """Results back in eV, eV/Å and eV/Å³ (ASE stress sign), via i-PI's own unit table."""
        deadline = time.monotonic() + timeout
        for r in reqs:
            while not r._event_done.wait(0.05):
                if self.proc.poll() is not None:
                    raise AssertionError(f"driver exited {self.proc.returncode}: {self.proc.stderr.read()}")
                assert time.monotonic() < deadline, "timed out waiting for forces"
        out = []
        for r, a in zip(reqs, atoms_list):
            pot, f, vir, _ = r["result"]
            out.append({
                "energy": pot / self.hartree,
                "forces": np.asarray(f).reshape(-1, 3) / (self.hartree / self.bohr),
                "stress": -np.asarray(vir).T / self.hartree / a.get_volume(),
            })
            self.ff.release(r)
        return out

    def finish(self) -> str:
        self.ff.stop()
        _, err = self.proc.communicate(timeout=60)
        assert self.proc.returncode == 0, err
        assert "Traceback" not in err
        shutil.rmtree(self.tmp, ignore_errors=True)
        return err


def voigt_to_3x3(s):
    s = np.asarray(s, float)
    return np.array([[s[0], s[5], s[4]], [s[5], s[1], s[3]], [s[4], s[3], s[2]]])


def max_diffs(a: list[dict], b: list[dict]) -> dict:
    """Largest differences: energy (eV), forces (eV/Å), stress (eV/Å³)."""
    de = max(abs(x["energy"] - y["energy"]) for x, y in zip(a, b))
    df = max(float(np.abs(np.asarray(x["forces"]) - np.asarray(y["forces"])).max()) for x, y in zip(a, b))
    ds = 0.0
    for x, y in zip(a, b):
        sx, sy = (voigt_to_3x3(s) if np.shape(s) == (6,) else np.asarray(s) for s in (x["stress"], y["stress"]))
        ds = max(ds, float(np.abs(sx - sy).max()))
    return {"energy": de, "forces": df, "stress": ds}


def serve(venv: Path, model: str, model_path: Path, atoms, tmp_path: Path, extra=()):
    """Serves [s0, s0, s1, s0] to i-PI with batch_size 2 through one driver: the first request
    holds s0 twice, evaluated once (the calculator's sequential path, on a fresh calculator as
    in-process), the second is a full batch (the batched path: s1, s0). Returns the four results
    (eV units) and the timing file."""
    species = atoms[0].get_chemical_formula(mode="reduce")
    timing = tmp_path / "timing.json"
    cmd = [str(venv / "bin" / "dynamat-driver"), "--model", model, "--model-path", str(model_path),
           "--threads", "1", "--timing-every", "1", "--timing-file", str(timing), *extra]
    queued = [atoms[0], atoms[0], atoms[1], atoms[0]]
    srv = Server("unix", 2, species)
    reqs = srv.queue(queued)
    srv.start(cmd)
    res = srv.results(reqs, queued)
    err = srv.finish()
    assert f"weights from {model_path} (--model-path" in err, err
    return res, json.loads(timing.read_text())


# --------------------------------------------------------------------------------------------
# the environment work runs in a thread pool started with the session (two or three driver
# processes at a time on the two cores), so the tests below mostly collect results
# --------------------------------------------------------------------------------------------


def job_family(case: str, tmp: Path, extra=()) -> dict:
    family, model, group = CASES[case]
    venv = _env(group)
    atoms = structures(2)
    path, ref = tiny_model(family, venv, atoms)
    res, t = serve(venv, model, path, atoms, tmp, extra=extra)
    return {"path": path, "ref": ref, "res": res, "timing": t, "model": model}


def job_ipi(tmp: Path) -> dict:
    """The i-pi program itself (2 beads, batch_size 2) with the MACE environment's driver."""
    try:  # the server wing's layout moves; either place works
        from dynamat.engines.ipi_input import MDSettings, write_inputs
    except ImportError:
        from dynamat.ipi_input import MDSettings, write_inputs

    venv = _env("mace")
    atoms = structures(2)
    path, ref = tiny_model("mace", venv, atoms)
    sockdir = tempfile.mkdtemp(prefix="dz")
    try:
        write_inputs(atoms[0], MDSettings("svr", 1.0, 50.0, 5, 10, 300.0, nbeads=2), tmp,
                     sockets_prefix=sockdir + "/", address="drv", batch_size=2)
        ipi_proc = subprocess.Popen([str(BIN / "i-pi"), "input.xml"], cwd=tmp, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True)
        drv = subprocess.Popen(
            [str(venv / "bin" / "dynamat-driver"), "--model", "mace-mp-0", "--model-path", str(path),
             "--unix", sockdir + "/drv", "--connect-timeout", "60", "--timing-file", str(tmp / "t.json"),
             "--threads", "1"],
            cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        ipi_out, _ = ipi_proc.communicate(timeout=300)
        _, drv_err = drv.communicate(timeout=60)
    finally:
        shutil.rmtree(sockdir, ignore_errors=True)
    return {"ref": ref, "ipi_rc": ipi_proc.returncode, "ipi_out": ipi_out, "drv_rc": drv.returncode,
            "drv_err": drv_err, "dir": tmp}


def _offline_env(tmp: Path) -> dict:
    """Every cache the adapters read, pointed at an empty folder (no stale weights interfere)."""
    return dict(
        os.environ, XDG_CACHE_HOME=str(tmp / "xdg"), CACHED_PATH_CACHE_ROOT=str(tmp / "cached_path"),
        FAIRCHEM_CACHE_DIR=str(tmp / "fairchem"), HF_HUB_CACHE=str(tmp / "hf"), HF_HOME=str(tmp / "hfhome"),
        GRACE_CACHE=str(tmp / "grace"), DYNAMAT_NEQUIP_CACHE=str(tmp / "nequip"), HOME=str(tmp / "home"),
    )


def _run_all(cmds: dict[str, list[str]], env: dict, timeout=600) -> dict[str, subprocess.CompletedProcess]:
    procs = {k: subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for k, c in cmds.items()}
    out = {}
    for k, p in procs.items():
        o, e = p.communicate(timeout=timeout)
        out[k] = subprocess.CompletedProcess(p.args, p.returncode, o, e)
    return out


OFFLINE = {
    "mace": ["mace-mp-0", "mace-mh-1-omat"],
    "zoo": ["orb-v3", "mattersim-v1-5m", "uma-s-p1", "pet-oam-xl", "nequip-oam-xl"],
    "grace": ["grace-2l-oam", "grace-2l-mptrj"],
}


def job_offline(group: str, tmp: Path) -> dict:
    venv = _env(group)
    drv = str(venv / "bin" / "dynamat-driver")
    env = _offline_env(tmp)
    cmds = {n: [drv, "--model", n, "--unix", str(tmp / "s")] for n in OFFLINE[group]}
    if group == "zoo":
        junk = tmp / "broken.nequip.zip"  # a NequIP package that nequip-compile cannot read
        junk.write_bytes(b"not a zip")
        cmds["nequip-local"] = [drv, "--model", "nequip-oam-xl", "--model-path", str(junk), "--unix", str(tmp / "s")]
        for name in ("esen-30m-oam", "equiformer-v2"):  # fairchem-core 1.x models in a 2.x environment
            cmds[name] = [drv, "--model", name]
        cmds["list"] = [drv, "--list", "--json"]
    return {"res": _run_all(cmds, env), "tmp": tmp, "drv": drv}


class Jobs:
    """Starts the environment work of the collected zoo tests at once, in test order."""

    def __init__(self, keys: list[tuple], tmp_factory):
        self.pool = ThreadPoolExecutor(max_workers=3)
        self.futures = {}
        for key in keys:
            tmp = tmp_factory.mktemp("-".join(key))
            if key[0] == "family":
                self.futures[key] = self.pool.submit(job_family, key[1], tmp)
            elif key[0] == "f64":
                self.futures[key] = self.pool.submit(job_family, key[1], tmp, ("--dtype", "float64"))
            elif key[0] == "ipi":
                self.futures[key] = self.pool.submit(job_ipi, tmp)
            elif key[0] == "offline":
                self.futures[key] = self.pool.submit(job_offline, key[1], tmp)
            elif key[0] == "stress":
                self.futures[key] = self.pool.submit(job_stress, key[1], tmp)
                if STRESS_CASES.get(key[1]) in ("float64", "reordered"):
                    self.futures[("stress64", key[1])] = self.pool.submit(
                        job_stress, key[1], tmp_factory.mktemp("stress64-" + key[1]), "float64")

    def result(self, key: tuple):
        return self.futures[key].result()


def _job_key(item) -> tuple | None:
    name = getattr(item, "originalname", item.name)
    params = getattr(getattr(item, "callspec", None), "params", {})
    return {
        "test_mace_tiny_model_through_the_socket": ("family", "mace"),
        "test_zoo_tiny_models_through_the_socket": ("family", params.get("case", "")),
        "test_stress_on_demand_changes_no_energy_or_force": ("stress", params.get("case", "")),
        "test_batched_equals_sequential_in_float64": ("f64", "pet"),
        "test_grace_tiny_model_through_the_socket": ("family", "grace"),
        "test_mace_tiny_model_runs_real_ipi_md_with_beads": ("ipi", "mace"),
        "test_mace_offline_message": ("offline", "mace"),
        "test_zoo_offline_messages_and_fairchem1_refusal": ("offline", "zoo"),
        "test_grace_offline_messages": ("offline", "grace"),
    }.get(name)


def _job_group(key: tuple) -> str:
    return CASES[key[1]][2] if key[0] in ("family", "f64", "stress") else ("mace" if key[0] == "ipi" else key[1])


@pytest.fixture(scope="session")
def jobs(request, tmp_path_factory):
    global _BUILDER
    # first imports in the main thread: concurrent first imports of i-PI deadlock in the workers
    ipi()
    try:
        import dynamat.engines.ipi_input  # noqa: F401
    except ImportError:
        import dynamat.ipi_input  # noqa: F401
    from dynamat_driver.models import canonical_name  # noqa: F401

    structures(2)
    keys = []
    for item in request.session.items:
        key = _job_key(item)
        if key and key not in keys:
            keys.append(key)
    _BUILDER = EnvBuilder(sorted({_job_group(k) for k in keys}), tmp_path_factory.mktemp("envlogs"))
    j = Jobs(keys, tmp_path_factory)
    yield j
    j.pool.shutdown(wait=True, cancel_futures=True)


# --------------------------------------------------------------------------------------------
# tiny models through the socket
# --------------------------------------------------------------------------------------------


#: float32 machine epsilon (2**-23): the spacing of float32 numbers at 1.0
EPS32 = float(np.finfo(np.float32).eps)


def n_graph_terms(atoms, cutoff: float = 6.0) -> int:
    """Edges of the structure's graph within ``cutoff`` (Å; the tiny models use 5-6 Å): the number
    of pair contributions the message-passing reductions sum into the energy and, by back-
    propagation through two layers, into each force of a 32-atom cell."""
    from ase.neighborlist import neighbor_list

    return len(neighbor_list("i", atoms, cutoff))


def float32_reorder_tolerance(scale: float, n_terms: int) -> float:
    """How far two float32 evaluations of the same model may differ when only the order of their
    sums differs (batched vs sequential: other segment-sum and matmul blocking orders).

    Derivation: each float32 operation rounds with relative error <= u = EPS32 / 2. Summing m
    terms in a different order changes the result by at most ~ m u sum|x_i| in the worst case, and
    by ~ sqrt(m) u sum|x_i| in the probabilistic model of rounding errors that holds for random
    summation orders (Higham & Mary, SIAM J. Sci. Comput. 41, A2815, 2019). With the summands of
    a force bounded by ``scale`` and the two evaluations each carrying such an error:
    |dF| <= 2 sqrt(m) u scale = sqrt(m) EPS32 scale. For the 32-atom cell here m ~ 2,300 edges
    (6 Å), i.e. 48 EPS32 scale ~ 5.7e-6 scale, about five times the largest difference seen on
    another machine (uma: 1.07e-6 eV/Å at |F|max 0.79 eV/Å, 11 EPS32 |F|max), while a real error (a
    missing neighbour, a wrong unit, a mixed-up structure) is >= 1e-3 of the forces. Energies and
    stresses take the same form with their own scale (|E| includes the atomic reference energies,
    so it bounds the partial sums of the per-atom energies)."""
    return float(np.sqrt(n_terms)) * EPS32 * scale


def check_family(case: str, jobs: Jobs) -> dict:
    """The tiny model through the socket equals the package's own calculator in-process on the
    sequential path (the same code and summation order, one thread in both: to a few float32
    ulps of the largest value, 8 EPS32 x scale); the batched path equals it and the sequential
    result for the same structure to float32 round-off of a reordered sum (see
    float32_reorder_tolerance; in float64 they agree to ~1e-15, test_batched_equals_sequential_in_float64)."""
    r = jobs.result(("family", case))
    res, ref, t, path = r["res"], r["ref"], r["timing"], r["path"]
    seq, bat = [res[0]], [res[3]]
    d_ref = max_diffs(seq, ref[:1])
    d_bat = max_diffs(bat, seq)
    d_bat1 = max_diffs(res[2:3], ref[1:2])
    fmax = max(float(np.abs(x["forces"]).max()) for x in res)
    smax = max(float(np.abs(x["stress"]).max()) for x in res)
    escale = max(1.0, max(abs(x["energy"]) for x in ref))
    m = n_graph_terms(structures(2)[0])
    # the summands of a force are per-edge forces, which cancel near equilibrium: the net |F|max
    # under-states them (orb-v3's tiny model: |F|max 0.09 eV/Å, reorder difference 4.7e-7 eV/Å).
    # 1 eV/Å is a bond force in a solid (k ~ 10 eV/Å² at 0.1 Å), as the earlier bound assumed.
    tol = {"forces": float32_reorder_tolerance(max(fmax, 1.0), m), "stress": float32_reorder_tolerance(smax, m),
           "energy": float32_reorder_tolerance(escale, m)}
    print(f"\n{case}: socket vs in-process {d_ref}; batched vs sequential {d_bat}; batched vs in-process "
          f"{d_bat1}; max |F| {fmax:.3g} eV/Å; float32 reorder tolerances ({m} terms) {tol}; model time "
          f"{t['model_seconds_total'] / t['n_evaluations'] * 1e3:.0f} ms/eval (32 atoms, 1 thread, mean of 3)")
    # same code path: a few ulps (the unit round trip through i-PI's atomic units is float64)
    assert d_ref["forces"] <= 8 * EPS32 * max(1.0, fmax), d_ref
    assert d_ref["stress"] <= 8 * EPS32 * max(1e-3, smax), d_ref
    assert d_ref["energy"] <= 8 * EPS32 * escale, d_ref
    for d in (d_bat, d_bat1):
        for k in ("forces", "stress", "energy"):
            assert d[k] <= tol[k], (k, d, tol)
    assert fmax > 1e-3  # a model with real forces
    from dynamat_driver.models import canonical_name

    assert t["model"]["model"] == canonical_name(r["model"]) and t["status"] == "finished"
    assert t["batch_size"] == 2 and t["n_evaluations"] == 3 and t["n_requests"] == 2  # the copy of s0: not recomputed
    assert t["n_batched_calls"] == (1 if t["model"]["batched"] else 0)
    assert t["model"]["n_params"] and t["model"]["weights"].startswith(str(path))
    return t


@pytest.mark.zoo
def test_mace_tiny_model_through_the_socket(jobs):
    t = check_family("mace", jobs)
    assert t["model"]["batched"] and t["dtype"] == "float32"


@pytest.mark.zoo
@pytest.mark.parametrize("case", ["orb-v2", "orb-v3", "mattersim", "uma", "pet"])
def test_zoo_tiny_models_through_the_socket(case, jobs):
    t = check_family(case, jobs)
    assert t["model"]["batched"] and t["dtype"] == "float32"


@pytest.mark.zoo
def test_batched_equals_sequential_in_float64(jobs):
    """PET, whose float32 batched/sequential difference is the largest, with --dtype float64: the
    two paths agree to double-precision round-off, so the float32 difference is summation order,
    not a different computation."""
    r = jobs.result(("f64", "pet"))
    res, t = r["res"], r["timing"]
    d = max_diffs(res[3:4], res[0:1])
    print(f"\npet float64: batched vs sequential {d}")
    assert t["dtype"] == "float64" and t["n_batched_calls"] == 1
    assert d["forces"] <= 1e-10 and d["stress"] <= 1e-10 and d["energy"] <= 1e-9, d


@pytest.mark.zoo
def test_grace_tiny_model_through_the_socket(jobs):
    t = check_family("grace", jobs)
    assert not t["model"]["batched"] and t["dtype"] == "float64"  # a float64 SavedModel; sequential only


@pytest.mark.zoo
def test_mace_tiny_model_runs_real_ipi_md_with_beads(jobs):
    pytest.importorskip("ipi")
    r = jobs.result(("ipi", "mace"))
    assert r["ipi_rc"] == 0, r["ipi_out"][-2000:]
    assert r["drv_rc"] == 0 and "Traceback" not in r["drv_err"], r["drv_err"]
    rows = np.loadtxt(r["dir"] / "simulation.out", ndmin=2)
    assert rows[:, 0].tolist() == [0, 5, 10]
    assert rows[0, 4] == pytest.approx(r["ref"][0]["energy"], abs=1e-4)  # both beads start at the structure
    t = json.loads((r["dir"] / "t.json").read_text())
    assert t["status"] == "finished" and t["batch_size"] == 2 and t["n_batched_calls"] >= 10


# --------------------------------------------------------------------------------------------
# stress on demand (dynamat-driver --stress-stride): the adapter's energy and forces without the
# stress are bitwise those with it, and its stress is the package calculator's
# --------------------------------------------------------------------------------------------

STRESS_EVAL = """
import json, sys
import numpy as np
import torch
torch.set_num_threads(1)  # one thread: bitwise reproducible torch on CPU
from ase import Atoms
from dynamat_driver.models import load_model
model = load_model(sys.argv[1], model_path=sys.argv[2], dtype=sys.argv[5])
data = np.load(sys.argv[3])
atoms = [Atoms(numbers=data["numbers"], positions=p, cell=c, pbc=True) for p, c in zip(data["positions"], data["cells"])]
out = {"skips_stress": bool(model.skips_stress), "runs": []}
for stress in (True, False, True):  # with, without, with again: the order cannot matter
    seq = [model.calculate(a, i == 0, stress=stress) for i, a in enumerate(atoms)]
    bat = model.calculate_batch(atoms, stress=stress) if model.can_batch else seq
    out["runs"].append([[e, np.asarray(f).tolist(), None if s is None else np.asarray(s).reshape(-1).tolist()]
                        for e, f, s in seq + bat])
json.dump(out, open(sys.argv[4], "w"))
"""

#: the zoo families whose adapter leaves the stress out (Model.skips_stress; README "Speed and memory"
#: says why orb, PET and NequIP do not), with the precision in which their forces with and without
#: stress are bitwise equal; "reordered": in none, because the package itself is not bitwise
#: repeatable (fairchem's UMA: two calls with the same input differ by reordered sums, ~1 ulp, in
#: float32 and float64 alike). SevenNet and CHGNet: test_driver_stress.py
STRESS_CASES = {"mace": "float64", "mattersim": "float32", "uma": "reordered"}


def job_stress(case: str, tmp: Path, dtype: str = "float32") -> dict:
    family, model, group = CASES[case]
    venv = _env(group)
    atoms = structures(2)
    path, ref = tiny_model(family, venv, atoms)
    data = tmp / "structures.npz"
    np.savez(data, numbers=atoms[0].numbers, positions=np.stack([a.positions for a in atoms]),
             cells=np.stack([np.array(a.cell) for a in atoms]))
    res = subprocess.run([str(venv / "bin" / "python"), "-c", STRESS_EVAL, model, str(path), str(data),
                          str(tmp / "out.json"), dtype], capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    return {"ref": ref, "out": json.loads((tmp / "out.json").read_text())}


def check_stress_runs(out: dict, exact: bool, atoms, repeatable: bool = True, eps: float = EPS32) -> float:
    """The three runs (with, without, with stress again): stress None when skipped; the two runs with
    stress identical (``repeatable``), else within the round-off of a reordered sum (scale 1 for
    forces in eV/Å, |E| for energies, ``eps`` the precision's epsilon); energy and forces with and
    without stress bitwise equal (``exact``), else within that round-off. Returns the largest
    energy or force difference with vs without stress."""
    assert out["skips_stress"]
    with_s, without, again = out["runs"]
    tol = float32_reorder_tolerance(1.0, n_graph_terms(atoms[0])) * eps / EPS32

    def close(x, y) -> float:
        d = float(np.abs(np.asarray(x[1]) - np.asarray(y[1])).max())
        assert abs(x[0] - y[0]) <= tol * max(1.0, abs(x[0])) and d <= tol, (x[0] - y[0], d, tol)
        return max(d, abs(x[0] - y[0]))

    worst = 0.0
    for a, b, c in zip(with_s, without, again):
        assert a[2] is not None and c[2] is not None and b[2] is None
        if repeatable:
            assert a[0] == c[0] and np.array_equal(a[1], c[1]) and a[2] == c[2]
        else:
            close(a, c)
        worst = max(worst, close(a, b))
        if exact:
            assert a[0] == b[0] and worst == 0.0
    return worst


@pytest.mark.zoo
@pytest.mark.parametrize("case", list(STRESS_CASES))
def test_stress_on_demand_changes_no_energy_or_force(case, jobs):
    """Sequential and batched, 1 thread. Energy and forces with the stress left out are bitwise those
    with it in ``STRESS_CASES[case]`` precision (the strain enters as x (I + 0), exact in floating
    point). MACE in float32 differs by round-off (with the displacement it recomputes the periodic
    shifts in float32 from the strained cell, without it it takes them as given): bounded like a
    reordered sum, and bitwise equal in float64. UMA is not repeatable bitwise even with the stress
    on, so in both precisions with and without agree to the round-off of a reordered sum (float64
    bound ~1e-14 eV/Å, where a stress path that changed the forces would show at >= 1e-3). The stress,
    when computed, is the package calculator's (the same code path: a few float32 ulps, as
    check_family; UMA: within the same run-to-run spread)."""
    atoms = structures(2)
    kind = STRESS_CASES[case]
    r32 = jobs.result(("stress", case))
    out, ref = r32["out"], r32["ref"]
    worst32 = check_stress_runs(out, kind == "float32", atoms, repeatable=kind != "reordered")
    smax = max(float(np.abs(x["stress"]).max()) for x in ref)
    for got, want in zip(out["runs"][0][:2], ref):  # sequential path, structures s0 and s1
        d = float(np.abs(voigt_to_3x3(got[2]) - voigt_to_3x3(want["stress"])).max())
        assert d <= 8 * EPS32 * max(1e-3, smax), (case, d)
        assert abs(got[0] - want["energy"]) <= 8 * EPS32 * max(1.0, abs(want["energy"]))
    msg = f"\n{case}: float32 energy/forces with vs without stress: {worst32:.3g}"
    if kind != "float32":
        eps64 = float(np.finfo(np.float64).eps)
        worst64 = check_stress_runs(jobs.result(("stress64", case))["out"], kind == "float64", atoms,
                                    repeatable=kind != "reordered", eps=eps64)
        msg += f"; float64: {worst64:.3g}"
    print(msg)


# --------------------------------------------------------------------------------------------
# the real weights: not reachable here, so each adapter must stop with one clear line
# --------------------------------------------------------------------------------------------


def check_offline(r: dict, expect: dict[str, tuple[str, ...]]):
    for name, needles in expect.items():
        res = r["res"][name]
        assert res.returncode == 1, (name, res.stderr)
        line = one_error_line(res.stderr)
        assert "--model-path" in line and "cannot obtain" in line, line
        for n in needles:
            assert n in line, (name, line)
        print(f"\n{name}: {line}")


@pytest.mark.zoo
def test_mace_offline_message(jobs):
    r = jobs.result(("offline", "mace"))
    tmp = r["tmp"]
    check_offline(r, {
        "mace-mp-0": (str(tmp / "xdg" / "mace" / "20231203mace128L1_epoch199model"), "2023-12-03-mace-128-L1"),
        "mace-mh-1-omat": ("mace-mh-1.model",),
    })


@pytest.mark.zoo
def test_zoo_offline_messages_and_fairchem1_refusal(jobs):
    r = jobs.result(("offline", "zoo"))
    tmp = r["tmp"]
    check_offline(r, {
        "orb-v3": (str(tmp / "cached_path"), "orb-v3-conservative-inf-mpa-20250404.ckpt"),
        "mattersim-v1-5m": (str(tmp / "home" / ".local" / "mattersim"),),
        "uma-s-p1": (str(tmp / "fairchem" / "models--facebook--UMA"), "uma-s-1p1.pt", "gated"),
        "pet-oam-xl": (str(tmp / "hf" / "models--lab-cosmo--upet"), "pet-oam-xl-v1.0.0.ckpt"),
        "nequip-oam-xl": (str(tmp / "nequip"), "NequIP-OAM-XL"),
    })
    line = one_error_line(r["res"]["nequip-local"].stderr)
    assert f"cannot load the file {tmp / 'broken.nequip.zip'} as a NequIP package" in line, line
    # fairchem-core 1.x models: this environment has 2.x; one line naming the environment to make
    for name in ("esen-30m-oam", "equiformer-v2"):
        line = one_error_line(r["res"][name].stderr)
        assert "fairchem-core<2 (installed: 2." in line and f"make_driver_env.sh {name}" in line, line
        assert "'fairchem1' environment" in line
    # the zoo environment serves every family it claims, and only those
    rows = {d["name"]: d for d in json.loads(r["res"]["list"].stdout)}
    for name, d in rows.items():
        if d["env"] == "zoo":
            assert d["installed"], (name, d["missing"])
        elif d["env"] in ("mace", "grace", "fairchem1"):
            assert not d["installed"], name


MATTERSIM_CRAFT = textwrap.dedent("""
    import os, sys, torch
    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + sys.argv[2],))
    torch.save({"model_name": "m3gnet", "model_args": {}, "model": {}, "x": Evil()}, sys.argv[1])
""")


@pytest.mark.zoo
def test_mattersim_crafted_checkpoint_is_refused_without_running(jobs, tmp_path):
    """MatterSim's own ``torch.load`` names no ``weights_only``: data-only under torch >= 2.6 only
    while ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` is unset (``import mace`` sets it). The adapter forces
    a weights-only load, so a crafted --model-path file is refused without running."""
    py = str(_env("zoo") / "bin" / "python")
    evil, marker = tmp_path / "evil.pth", tmp_path / "PWNED"
    subprocess.run([py, "-c", MATTERSIM_CRAFT, str(evil), str(marker)], check=True, timeout=300)
    env = dict(os.environ, TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1")
    # MatterSim's own loader in the same environment really runs it
    subprocess.run([py, "-c", "import sys; from mattersim.forcefield import MatterSimCalculator; "
                    "MatterSimCalculator(load_path=sys.argv[1], device='cpu')", str(evil)],
                   env=env, capture_output=True, timeout=300)
    assert marker.exists()
    marker.unlink()
    res = subprocess.run([py, "-c", "import sys; from dynamat_driver.models import load_model; "
                          "load_model('mattersim-v1-5m', model_path=sys.argv[1])", str(evil)],
                         env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode != 0 and "DriverError" in res.stderr, res.stderr[-2000:]
    assert not marker.exists(), "a crafted checkpoint ran code"


@pytest.mark.zoo
def test_grace_offline_messages(jobs):
    r = jobs.result(("offline", "grace"))
    tmp = r["tmp"]
    check_offline(r, {
        "grace-2l-oam": (str(tmp / "grace" / "GRACE-2L-OAM"), "GRACE-2L-OAM-model.tar.gz"),
        "grace-2l-mptrj": (str(tmp / "grace" / "GRACE-2L-MP-r6"), "sciebo", "no longer lists"),
    })


@pytest.mark.zoo
def test_fairchem1_environment():
    pytest.skip(
        "fairchem-core 1.x (eSEN-30M-OAM, EquiformerV2) pins torch ~=2.4.0: this machine has only the torch "
        "2.13 CPU wheel locally and PyPI's torch 2.4.1 for Linux is a CUDA build (~2.5 GB of nvidia wheels); "
        "make_driver_env.sh esen-30m-oam builds it where PyTorch's CPU index is reachable "
        "(DYNAMAT_TORCH_INDEX=https://download.pytorch.org/whl/cpu)"
    )
