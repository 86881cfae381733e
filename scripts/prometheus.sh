#!/usr/bin/env bash
# Install Debian's `prometheus` package (prometheus + promtool) if either is missing. Its daemon is
# never started: the tests run their own Prometheus on loopback (serve/local_prometheus.py).
exec bash "$(dirname "$0")/apt-install.sh" prometheus prometheus promtool
