#!/usr/bin/env bash
# The whole test suite, as CI runs it: system packages, Python packages, linters, type checks, tests.
# Extra args go to pytest (e.g. deploy/test.sh -k resume).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v chromium >/dev/null || need+=(chromium)
command -v npm >/dev/null || need+=(npm)
if [ ${#need[@]} -gt 0 ]; then
    echo "==> installing system packages: ${need[*]}"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

source deploy/setup.sh test
echo "==> npm: stock htmx 2 and htmx-ext-sse for the browser tests (tests/browser/package.json)"
npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error
export PATH="$VENV/bin:$PATH:/usr/sbin"

echo "==> ruff check"
ruff check .
echo "==> ruff format --check"
ruff format --check .
echo "==> mypy (strict on hub/)"
mypy
echo "==> pytest"
exec python -m pytest "$@"
