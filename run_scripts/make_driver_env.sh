#!/usr/bin/env bash
# Creates (or completes) the Python environment that serves MODEL's forces to i-PI, and prints the
# driver command to pass to `dynamat run --driver-cmd ...`.
#
#   run_scripts/make_driver_env.sh MODEL [DIR]
#
# MODEL  a model name as `dynamat-driver --list` shows it (aliases too), a family extra (orb, pet,
#        ...), or an environment group: zoo (every family that shares one torch 2.13 environment:
#        chgnet, sevennet, orb, mattersim, fairchem 2.x, nequip, pet), mace, grace, fairchem1.
# DIR    the virtual environment (default: <repo>/.venvs/<group>). An existing environment of the
#        same group is completed (another family added); one of another group is refused.
#
# Only the client wing is installed (pip install ./drivers[EXTRA]: numpy, ase, click and the model
# package), never the server wing. Groups that cannot share an environment:
#   mace       mace-torch pins e3nn 0.4.4 (its .model pickles load only under it)
#   grace      tensorpotential runs on TensorFlow; no torch. CPU TensorFlow by default (tensorpotential
#              itself asks for tensorflow[and-cuda], ~5 GB of CUDA wheels): DYNAMAT_GRACE_CUDA=1 for that
#   fairchem1  fairchem-core 1.x (eSEN-30M-OAM, EquiformerV2) pins torch ~=2.4.0 and numpy < 2; the
#              torch 2.13 CPU wheel on this machine does not fit, and PyPI's torch 2.4.1 for Linux is a
#              CUDA build (~2.5 GB of nvidia wheels): set DYNAMAT_TORCH_INDEX=https://download.pytorch.org/whl/cpu
#              where that index is reachable
#   zoo        everything else, on torch 2.13.0
#
# Environment variables:
#   PYTHON               interpreter for the venv (default: python3; fairchem1 needs Python < 3.13)
#   DYNAMAT_TORCH        torch requirement installed first (default torch==2.13.0; fairchem1: torch==2.4.1)
#   DYNAMAT_TORCH_INDEX  an --index-url for that torch install only (e.g. PyTorch's CPU index)
#   DYNAMAT_EDITABLE=1   install the driver editable (pip install -e), as the tests do
#   DYNAMAT_GRACE_CUDA=1 GRACE with TensorFlow's CUDA libraries (pip install ./drivers[grace])
#   DYNAMAT_UNPINNED=1   resolve the newest versions the extras allow, instead of the tested ones
#
# Every package version is pinned to the environment the zoo tests last passed with:
# drivers/constraints/<group>.txt (pip -c), so a new release of a model package or of one of its
# dependencies cannot change an environment (or turn CI red) overnight. fairchem1 has no tested
# pin set (it cannot be built here); it installs unpinned within its extra's bounds.
set -euo pipefail

usage() { sed -n '2,35p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }
[ $# -ge 1 ] && [ $# -le 2 ] || usage 2
case "$1" in -h|--help) usage 0 ;; esac

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-python3}
command -v "$PYTHON" >/dev/null || { echo "make_driver_env: $PYTHON not found (set PYTHON)" >&2; exit 1; }

# The registry imports nothing but the standard library, so any Python can read it.
read -r GROUP EXTRA NAME < <(PYTHONPATH="$REPO/drivers" "$PYTHON" - "$1" <<'EOF'
import sys
from dynamat_driver import DriverError
from dynamat_driver.models import ENVIRONMENTS, REGISTRY, canonical_name

arg = sys.argv[1]
try:
    m = REGISTRY[canonical_name(arg)]
    if not m.extra:
        print("main", "-", m.name)
    else:
        print(m.env, m.extra, m.name)
except DriverError:
    extras = {m.extra: m.env for m in REGISTRY.values() if m.extra}
    if arg in ("zoo",):
        print("zoo", "zoo", "-")
    elif arg in ENVIRONMENTS and arg != "main":
        print(arg, {"mace": "mace", "grace": "grace", "fairchem1": "fairchem1"}[arg], "-")
    elif arg in extras:
        print(extras[arg], arg, "-")
    else:
        sys.exit(f"make_driver_env: unknown model or group {arg!r}; models: {', '.join(REGISTRY)}; "
                 f"groups: zoo, mace, grace, fairchem1")
EOF
) || exit 1

if [ "$GROUP" = main ]; then
    echo "make_driver_env: $NAME is an analytic test model: it runs in any environment with dynamat-driver" >&2
    echo "driver command: $(command -v dynamat-driver || echo dynamat-driver)"
    exit 0
fi

DIR=${2:-$REPO/.venvs/$GROUP}
case "$DIR" in /*) ;; *) DIR=$(pwd)/$DIR ;; esac
MARK="$DIR/.dynamat-env"

if [ -x "$DIR/bin/python" ]; then
    have=$(cat "$MARK" 2>/dev/null || echo "?")
    if [ "$have" != "$GROUP" ]; then
        echo "make_driver_env: $DIR is a '$have' environment, not '$GROUP'; choose another DIR" >&2
        exit 1
    fi
    echo "make_driver_env: completing the '$GROUP' environment $DIR" >&2
else
    echo "make_driver_env: creating the '$GROUP' environment $DIR" >&2
    mkdir -p "$(dirname "$DIR")"
    "$PYTHON" -m venv "$DIR"
    echo "$GROUP" > "$MARK"
fi

PIP=("$DIR/bin/python" -m pip install -q --disable-pip-version-check)
PINS="$REPO/drivers/constraints/$GROUP.txt"
if [ "${DYNAMAT_UNPINNED:-0}" != 1 ] && [ -f "$PINS" ]; then
    PIP+=(-c "$PINS")
    echo "make_driver_env: tested versions from ${PINS#"$REPO"/} (DYNAMAT_UNPINNED=1 for the newest)" >&2
fi
EDIT=()
[ "${DYNAMAT_EDITABLE:-0}" = 1 ] && EDIT=(-e)

case "$GROUP" in
    fairchem1) TORCH=${DYNAMAT_TORCH:-torch==2.4.1} ;;
    grace) TORCH="" ;;
    *) TORCH=${DYNAMAT_TORCH:-torch==2.13.0} ;;
esac

# torch first, pinned, so that no model package makes pip choose another (multi-GB) torch build
if [ -n "$TORCH" ]; then
    if [ -n "${DYNAMAT_TORCH_INDEX:-}" ]; then
        "${PIP[@]}" "$TORCH" --index-url "$DYNAMAT_TORCH_INDEX"
    else
        "${PIP[@]}" "$TORCH"
    fi
fi

if [ "$GROUP" = grace ] && [ "${DYNAMAT_GRACE_CUDA:-0}" != 1 ]; then
    # tensorpotential's own requirements (0.6.x) with CPU TensorFlow instead of tensorflow[and-cuda]
    "${PIP[@]}" "${EDIT[@]}" "$REPO/drivers" "tensorflow<=2.20" tf_keras scipy matscipy sympy "pandas<3" \
        ase "pyyaml>=6.0.2" tqdm requests "questionary>=2.0" "rich>=13.0" "scikit-learn>=1.1"
    "${PIP[@]}" --no-deps "tensorpotential>=0.6"
else
    # the torch requirement again in the same resolve: mattersim otherwise swaps in a CUDA torch
    "${PIP[@]}" ${TORCH:+"$TORCH"} "${EDIT[@]}" "$REPO/drivers[$EXTRA]"
fi

# Some packages (mattersim) pull PyPI's torchvision/torchaudio, built for PyPI's CUDA torch: with the
# CPU torch they fail at import ("operator torchvision::nms does not exist") and break every package
# that imports them if present. Nothing the drivers use needs them: remove them when they are broken.
for mod in torchvision torchaudio; do
    if "$DIR/bin/python" -c "import importlib.util,sys; sys.exit(importlib.util.find_spec('$mod') is None)" 2>/dev/null \
       && ! "$DIR/bin/python" -c "import $mod" >/dev/null 2>&1; then
        echo "make_driver_env: removing $mod (built for another torch; it cannot be imported here)" >&2
        "$DIR/bin/python" -m pip uninstall -y -q "$mod"
    fi
done

"$DIR/bin/dynamat-driver" --list >/dev/null
# the extras installed so far (the tests reuse an environment only once its build has finished)
echo "$EXTRA" >> "$DIR/.dynamat-extras"

echo "make_driver_env: ready: $DIR ('$GROUP': $(
    "$DIR/bin/dynamat-driver" --list --json | "$DIR/bin/python" -c \
    'import json,sys; print(", ".join(m["name"] for m in json.load(sys.stdin) if m["installed"] and m["extra"]))'))" >&2
if [ "$NAME" != "-" ]; then
    echo "dynamat run --model $NAME --driver-cmd $DIR/bin/dynamat-driver --system SYSTEM"
else
    echo "dynamat run --model MODEL --driver-cmd $DIR/bin/dynamat-driver --system SYSTEM"
fi
