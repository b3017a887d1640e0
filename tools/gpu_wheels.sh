#!/usr/bin/env bash
# What a bare CUDA machine (Python 3.12 and a CUDA build of torch, no OpenMMLab, no network)
# needs to run tools/gpu_check.py, fetched here into .whl/ (ignored by git):
#
#   bash tools/gpu_wheels.sh            # here, with the package registry in reach
#   bash tools/gpu_setup.sh             # there, in the repo root: install, build, check
#
# Pure-Python wheels for Python 3.12 (mmengine, mmsegmentation and their small needs that such a
# machine lacks) and mmcv 2.1.0's source, which gpu_setup.sh compiles there against that
# machine's torch (mmseg's models import mmcv's compiled ops; no check calls one).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${1:-$repo/.whl}
python_version=${GPU_PYTHON_VERSION:-3.12}
mkdir -p "$out"
venv=$(bash "$repo/tools/bootstrap.sh" | tail -n 1)
"$venv/bin/python" -m pip download --quiet --disable-pip-version-check --no-deps \
    --only-binary=:all: --python-version "$python_version" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$out" \
    mmengine==0.10.7 mmsegmentation==1.2.2 addict yapf termcolor prettytable ftfy wcwidth \
    regex platformdirs 'setuptools<80'
# mmcv's source (its metadata step imports torch: this project's venv has it)
"$venv/bin/python" -m pip download --quiet --disable-pip-version-check --no-deps \
    --no-binary=:all: --no-build-isolation -d "$out" mmcv==2.1.0
du -sh "$out"
