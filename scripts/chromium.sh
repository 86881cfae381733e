#!/usr/bin/env bash
# Install Debian's `chromium` package if chromium is missing: the browser the try-it page's test drives
# (headless, through Playwright's Python package with this binary as its executable).
exec bash "$(dirname "$0")/apt-install.sh" chromium chromium
