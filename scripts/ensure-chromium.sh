#!/usr/bin/env bash
# The browser test drives Debian's Chromium (Playwright's own browser download cannot work here).
# Install it when missing; if that is impossible, the browser test skips with a reason.
set -u
if command -v chromium >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian's chromium for the browser test..."
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "could not install chromium; the browser test will skip"
else
  echo "chromium is missing and cannot be installed here; the browser test will skip"
fi
exit 0
