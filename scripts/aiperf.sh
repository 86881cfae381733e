#!/usr/bin/env bash
# aiperf.sh: install NVIDIA aiperf (pinned) into var/aiperf-venv, a venv of its own: its pins
# (prometheus-client 0.23, pillow 12.3, ...) cannot share one with the service. Used by bench/aiperf_load.py.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x var/aiperf-venv/bin/aiperf ] && exit 0
python3 -m venv var/aiperf-venv
var/aiperf-venv/bin/pip install -q aiperf==0.13.0
echo "aiperf.sh: installed aiperf into var/aiperf-venv"
