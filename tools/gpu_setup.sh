#!/usr/bin/env bash
# On a bare CUDA machine, in the repo root, with .whl/ from tools/gpu_wheels.sh: install the
# wheels into a folder of their own, compile mmcv's ops for this machine's torch, then run
# tools/gpu_check.py (arguments go to it). No network is used.
#
# mmcv's ops are compiled with their CPU kernels only (CUDA hidden during the build): that is
# what importing mmseg's models needs, and none of the checks calls an mmcv op; it takes a few
# minutes on 16 cores instead of the CUDA kernels' much longer build.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
site=${HRNET_MM_SITE:-/tmp/hrnet_mm_site}
python=${PYTHON:-python3}
mkdir -p "$site"
"$python" -m pip install --quiet --no-index --no-deps --no-compile --target "$site" .whl/*.whl
export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ! "$python" -c "import mmcv.ops" 2>/dev/null; then
    echo "[gpu_setup] compiling mmcv 2.1.0's ops for torch $("$python" -c 'import torch; print(torch.__version__)') on $(nproc) cores" >&2
    start=$(date +%s)
    CUDA_VISIBLE_DEVICES= MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS=$(nproc) \
        "$python" -m pip install --quiet --no-index --no-deps --no-build-isolation \
        --target "$site" .whl/mmcv-2.1.0.tar.gz
    echo "[gpu_setup] mmcv built in $(( $(date +%s) - start )) s" >&2
fi
exec "$python" tools/gpu_check.py "$@"
