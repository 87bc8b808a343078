#!/usr/bin/env bash
# The review page is tested in a real headless Chromium: Debian's chromium + chromium-driver.
# Idempotent; called by `make test` (not by `make run`, which needs no browser).
set -u
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
    exit 0
fi
if command -v apt-get >/dev/null && [ "$(id -u)" = "0" ]; then
    echo "setup: installing chromium and chromium-driver (review page tests)"
    apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium chromium-driver >/dev/null; } \
        || echo "setup: could not install chromium; the browser test will skip"
else
    echo "setup: chromium/chromedriver not found and apt-get is not usable here; the browser test will skip"
fi
