#!/usr/bin/env bash
# Install Debian's `prometheus` package (prometheus + promtool) if either is missing.
# Idempotent and non-interactive; `apt-get update` runs at most once, only when installing.
# The package's daemon is never started: the tests run their own Prometheus on loopback.
set -euo pipefail

if command -v prometheus >/dev/null && command -v promtool >/dev/null; then
    exit 0
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "prometheus.sh: run as root (or install sudo) to install prometheus" >&2; exit 1; }
    SUDO=(sudo -n)
fi

# Stop the package's postinst from starting a system-wide Prometheus (on :9090, scraping its defaults):
# invoke-rc.d honours policy-rc.d's exit code 101 ("action forbidden"). Keep an existing policy.
POLICY=/usr/sbin/policy-rc.d
if [ ! -e "$POLICY" ]; then
    "${SUDO[@]}" sh -c "printf '#!/bin/sh\nexit 101\n' > $POLICY && chmod 755 $POLICY"
    trap '"${SUDO[@]}" rm -f "$POLICY"' EXIT
fi

export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
command -v prometheus >/dev/null && command -v promtool >/dev/null
echo "prometheus.sh: installed $(prometheus --version 2>&1 | head -n 1)"
