#!/usr/bin/env bash
# Debian ffmpeg (ffprobe): tests read durations and frame counts of the videos the service makes.
set -euo pipefail
exec bash "$(dirname "$0")/apt-install.sh" ffmpeg ffprobe
