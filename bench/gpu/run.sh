#!/usr/bin/env bash
# One prepared run of bench/gpu/hunyuan_step.py on a lent H100/H200 (about 8 minutes).
#
# The lent machine has torch, transformers and accelerate but not diffusers, and nothing can be fetched
# there, so the wheels travel with the call:
#   here, once:      bash bench/gpu/fetch_wheels.sh          # -> .whl/ (git-ignored)
#   device tool:     run(command="bash bench/gpu/run.sh", carry=[".whl"], timeout_s=600)
#   afterwards:      copy $OUT/hunyuan_step.json to bench/results/<card>-hunyuan_step.json
# Extra arguments go to hunyuan_step.py (e.g. --sizes 360p-33f --variants bf16 for a quick check).
set -euo pipefail
OUT="${OUT:-out/gpu-bench}"
mkdir -p "$OUT"

if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
if ! python3 -c "import diffusers" 2>/dev/null; then
    echo "diffusers is not importable: run bench/gpu/fetch_wheels.sh on the dev machine and carry .whl" >&2
    exit 2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv >"$OUT/gpu.csv" 2>&1 || true

# 720p x 129 frames costs ~38 s a step on one H100 (xDiT: 1904 s / 50 steps): one warm-up, one timed step.
export PYTHONUNBUFFERED=1
python3 bench/gpu/hunyuan_step.py --out "$OUT" --steps 1 --warmup 1 --max-seconds "${MAX_SECONDS:-420}" "$@" \
    2>&1 | tee "$OUT/hunyuan_step.log"
