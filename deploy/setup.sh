#!/usr/bin/env bash
# Shared by hub.sh and test.sh: a virtualenv in .venv with the project installed.
# Usage: source deploy/setup.sh [extra]   (extra: "test" installs the test tools too)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="${PYTHON:-python3}"

if ! "$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
    echo "chat hub needs Python 3.11 or newer; set PYTHON=/path/to/python3.11" >&2
    exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
    echo "==> creating $VENV"
    "$PY" -m venv "$VENV"
fi
spec="."
[ "${1:-}" = "test" ] && spec=".[test]"
stamp="$VENV/.installed-$(echo "$spec" | tr -c 'a-z' '_')"
if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
    echo "==> installing the hub ($spec) into .venv"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$ROOT$([ "$spec" = "." ] || echo "${spec#.}")"
    touch "$stamp"
fi
