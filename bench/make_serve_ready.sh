#!/usr/bin/env bash
# Time from `make serve` to the first answered request (the README's first request), once installed.
set -euo pipefail
cd "$(dirname "$0")/.."
log=$(mktemp)
start=$(date +%s.%N)
make serve >"$log" 2>&1 &
until grep -q "videogen: serving" "$log"; do sleep 0.25; done
.venv/bin/videogen client generate --model hunyuanvideo --prompt "a red fox running in the snow" \
  --out out/fox.mp4 >/dev/null 2>&1
answered=$(date +%s.%N)
pkill -INT -f "bin/videogen serve" || true
wait || true
seconds=$(python3 -c "print(f'{$answered - $start:.1f}')")
{
  echo "# make serve: start to first answered request"
  echo
  echo "$(date -u +%F) on $(nproc) CPU cores: ${seconds} s from \`make serve\` to the first answered"
  echo "Generate (hunyuanvideo, 2 ranks; tiny checkpoints up to date). Target: <= 15 s."
  grep "videogen: serving" "$log"
} > bench/results/make_serve_ready.md
cat bench/results/make_serve_ready.md
