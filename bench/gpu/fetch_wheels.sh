#!/usr/bin/env bash
# Download (on the dev machine) the wheels bench/gpu/run.sh needs on a lent GPU machine, into .whl/.
# That machine runs Python 3.12 with torch, transformers, huggingface_hub, safetensors and regex already.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
PIP="${PIP:-.venv/bin/python -m pip}"
$PIP download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    -d .whl diffusers==0.42.1 importlib_metadata==10.2.0 torchao==0.18.0
ls -l .whl
