#!/usr/bin/env bash
# apt-install.sh PACKAGE COMMAND...: install Debian's PACKAGE unless every COMMAND is already on PATH.
# Idempotent and non-interactive; `apt-get update` runs at most once, only when installing. No service
# the package ships is started (policy-rc.d forbids it during the install): tests run their own.
set -euo pipefail
package="$1"
shift

missing=0
for command in "$@"; do
    command -v "$command" >/dev/null || missing=1
done
[ "$missing" -eq 0 ] && exit 0

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "apt-install.sh: run as root (or install sudo) to install $package" >&2; exit 1; }
    SUDO=(sudo -n)
fi

# invoke-rc.d honours policy-rc.d's exit code 101 ("action forbidden"). Keep an existing policy.
POLICY=/usr/sbin/policy-rc.d
if [ ! -e "$POLICY" ]; then
    "${SUDO[@]}" sh -c "printf '#!/bin/sh\nexit 101\n' > $POLICY && chmod 755 $POLICY"
    trap '"${SUDO[@]}" rm -f "$POLICY"' EXIT
fi

"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$package" >/dev/null
for command in "$@"; do
    command -v "$command" >/dev/null || { echo "apt-install.sh: $package did not provide $command" >&2; exit 1; }
done
echo "apt-install.sh: installed $package"
