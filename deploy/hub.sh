#!/usr/bin/env bash
# Run the hub alone: embedded broker, echo assistant unless ANTHROPIC_API_KEY is set.
# Settings come from HUB_* environment variables (see the README's table); extra args go to `hub serve`.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
exec "$VENV/bin/hub" serve "$@"
