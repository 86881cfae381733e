#!/usr/bin/env bash
# Install Debian's `redis-server` package if redis-server is missing. Its daemon is never started: the
# tests run their own on loopback (serve/local_redis.py), as can a developer.
exec bash "$(dirname "$0")/apt-install.sh" redis-server redis-server
