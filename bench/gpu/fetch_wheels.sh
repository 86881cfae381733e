#!/usr/bin/env bash
# Download (on the dev machine) the wheels bench/gpu/run.sh needs on a lent GPU machine, into .whl/.
# That machine runs Python 3.12 with torch, transformers, accelerate, huggingface_hub, safetensors, regex, numpy,
# pillow, einops and sentencepiece already; our serving path (bench/gpu/serving_path.py) needs xfuser and
# its parallel libraries, and pydantic for serve/ (no Ray, gRPC or FFmpeg: the harness encodes no video).
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
PIP="${PIP:-.venv/bin/python -m pip}"
$PIP download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    -d .whl diffusers==0.42.1 importlib_metadata==10.2.0 torchao==0.18.0 \
    xfuser==0.7.0 yunchang==0.6.4 distvae==0.1.0 \
    pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
ls -l .whl
