#!/usr/bin/env bash
# Make (or refresh) the project's virtualenv with the pinned OpenMMLab stack.
#
#   bash tools/bootstrap.sh          # prints the venv's path on its last line
#
# Idempotent: a stamp records a hash of the requirement files and of this script;
# when nothing changed, a second run returns in about a second.
#
# Where the environment lives: $HRNET_MM_VENV, default <repo>/.venv.
# Where the prebuilt mmcv wheel is looked for: $HRNET_MM_WHEELS, default <repo>/../shared/wheels
# (mmcv 2.1.0 has no wheel for torch 2.13 on PyPI; without one it is built from source,
# which takes about 25 minutes on 2 cores).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${HRNET_MM_VENV:-$repo/.venv}
wheels=${HRNET_MM_WHEELS:-$repo/../shared/wheels}
python=${PYTHON:-python3}

stamp_of() {
    cat "$repo/requirements/stack.txt" "$repo/requirements/constraints.txt" \
        "$repo/requirements/deploy.txt" \
        "$repo/tools/bootstrap.sh" "$repo/tools/patch_mmpose_torchvision.py" "$repo/setup.py" | sha256sum | cut -c1-16
}
# hrnet_mm itself is installed as a regular package (mim reads the installed package's .mim/:
# model-index and configs), so any change to its sources reinstalls it, which takes seconds.
package_stamp() {
    (cd "$repo" && find hrnet_mm configs model-index.yml setup.py README.md -type f \
        -not -path '*/__pycache__/*' -print0 | sort -z | xargs -0 sha256sum) | sha256sum | cut -c1-16
}
install_package() {
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps \
        --no-build-isolation --force-reinstall "$repo" 2> >(grep -v "^WARNING: Location '" >&2)
    rm -rf "$repo/build"
    package_stamp >"$venv/.hrnet_mm_package_stamp"
}
want=$(stamp_of)
if [[ -f "$venv/.hrnet_mm_stamp" && "$(cat "$venv/.hrnet_mm_stamp")" == "$want" ]]; then
    if [[ "$(cat "$venv/.hrnet_mm_package_stamp" 2>/dev/null)" != "$(package_stamp)" ]]; then
        echo "[bootstrap] hrnet_mm changed: reinstalling it" >&2
        install_package
    fi
    echo "$venv"
    exit 0
fi

log() { echo "[bootstrap] $*" >&2; }
log "creating $venv (this takes a few minutes the first time)"
[[ -x "$venv/bin/python" ]] || "$python" -m venv "$venv"
py="$venv/bin/python"
pip=("$py" -m pip install --quiet --disable-pip-version-check -c "$repo/requirements/constraints.txt")
# (pip's "Location ... is ignored" warnings about absent local index folders are dropped.)
exec 2> >(grep -v "^WARNING: Location '" >&2)

# Build tools first: mmcv's source build needs pkg_resources (setuptools<80), xtcocotools cython.
"${pip[@]}" --upgrade pip 'setuptools<80' wheel cython numpy

log "torch, mmengine, mmseg, mmdet and their needs"
"${pip[@]}" -r "$repo/requirements/stack.txt"

log "deployment runtimes: onnx, onnxscript, onnxruntime, openvino, nncf"
"${pip[@]}" -r "$repo/requirements/deploy.txt"

log "mmcv 2.1.0 with compiled ops"
if ! "$py" -c "import mmcv, mmcv.ops; assert mmcv.__version__ == '2.1.0'" 2>/dev/null; then
    if compgen -G "$wheels/mmcv-2.1.0-*.whl" >/dev/null; then
        "${pip[@]}" --no-index --find-links "$wheels" --no-deps mmcv==2.1.0
        "${pip[@]}" addict packaging pyyaml yapf
    else
        log "no prebuilt mmcv wheel in $wheels: building mmcv 2.1.0 from source (~25 min on 2 cores)"
        MMCV_WITH_OPS=1 MAX_JOBS=$(nproc) "${pip[@]}" --no-build-isolation mmcv==2.1.0
    fi
fi

# xtcocotools: the registry's wheel is built against numpy 1 and breaks under numpy 2.
log "xtcocotools (from source, against this numpy)"
if ! "$py" -c "import xtcocotools.coco" 2>/dev/null; then
    "${pip[@]}" --no-build-isolation --no-binary xtcocotools --force-reinstall --no-deps \
        xtcocotools
fi

# mmpose declares torchvision (whose registry build is CUDA-only and crashes next to CPU torch)
# and chumpy (unbuildable); neither is needed for what we use, so its real needs are listed instead.
log "mmpose 1.3.2 (without torchvision/chumpy)"
"${pip[@]}" --no-deps mmpose==1.3.2

# mmpose 1.3.2's visualizer imports torchvision at module level, only to draw SimCC heatmaps;
# without it no mmpose run starts. Make that one import optional (see the script).
"$py" "$repo/tools/patch_mmpose_torchvision.py"

# openmim's own dependency chain pins an old setuptools; install it alone with its real needs.
log "openmim 0.3.9"
"${pip[@]}" --no-deps openmim==0.3.9
"${pip[@]}" Click colorama model-index pandas requests rich tabulate

log "hrnet_mm"
install_package

"$py" - <<'EOF'
import torch, mmcv, mmengine, mmseg, mmdet, mmpose, mim, hrnet_mm  # noqa: F401
import onnx, onnxruntime, openvino, nncf  # noqa: F401
import mmcv.ops  # noqa: F401
assert torch.__version__.startswith('2.13.0'), torch.__version__
try:
    import torchvision  # noqa: F401
    raise SystemExit('torchvision must not be installed next to CPU torch')
except ImportError:
    pass
EOF
want=$(stamp_of)
echo "$want" >"$venv/.hrnet_mm_stamp"
log "ready"
echo "$venv"
