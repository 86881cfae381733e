#!/usr/bin/env bash
# The prepared GPU run (about 8 minutes on one H100/H200), as one device call:
#   1. bench/gpu/serving_path.py: our serving path (RankWorker, memory options, step cache, split VAE) at
#      720p x 129 frames with random full-size HunyuanVideo weights, per GPU count present;
#   2. bench/gpu/hunyuan_step.py: the bare transformer step at 720p x 129 frames (bf16, FP8 storage, FP8
#      GEMMs), with what time is left.
#
# The lent machine has torch, transformers and accelerate but not diffusers, xfuser or pydantic, and
# nothing can be fetched there, so the wheels travel with the call:
#   here, once:      bash bench/gpu/fetch_wheels.sh          # -> .whl/ (git-ignored)
#   device tool:     run(command="bash bench/gpu/run.sh", carry=[".whl"], timeout_s=600)
#   afterwards:      copy $OUT/*.json and *.md to bench/results/gpu/<card>-<name>
# SERVING_SECONDS / STEP_SECONDS bound the two parts (no new measurement starts after them).
# DRY_RUN=1 runs both on the CPU with tiny configurations (tests/unit/test_parallel_bench_gpu.py does).
set -uo pipefail
OUT="${OUT:-out/gpu-bench}"
PYTHON="${PYTHON:-python3}"
mkdir -p "$OUT"
if [[ -n "${DRY_RUN:-}" ]]; then
    serving_args=(--dry-run)
    step_args=(--dry-run)
else
    serving_args=()
    step_args=(--sizes 720p-129f)
fi

if [[ -z "${DRY_RUN:-}" ]] && compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
if ! "$PYTHON" -c "import importlib.util as u; assert all(u.find_spec(m) for m in ('diffusers', 'xfuser', 'pydantic'))" 2>/dev/null; then
    echo "diffusers/xfuser/pydantic are not importable: run bench/gpu/fetch_wheels.sh here and carry .whl" >&2
    exit 2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv >"$OUT/gpu.csv" 2>&1 || true
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1

"$PYTHON" bench/gpu/serving_path.py --out "$OUT" --max-seconds "${SERVING_SECONDS:-300}" \
    "${serving_args[@]}" >"$OUT/serving_path.log" 2>&1
serving=$?
tail -n 20 "$OUT/serving_path.log"

# 720p x 129 frames costs ~38 s a step on one H100 (xDiT: 1904 s / 50 steps): one warm-up, one timed step.
"$PYTHON" bench/gpu/hunyuan_step.py --out "$OUT" "${step_args[@]}" --steps 1 --warmup 1 \
    --max-seconds "${STEP_SECONDS:-150}" "$@" 2>&1 | tee "$OUT/hunyuan_step.log"
step=${PIPESTATUS[0]}
echo "serving_path exit $serving, hunyuan_step exit $step"
exit $(( serving || step ))
