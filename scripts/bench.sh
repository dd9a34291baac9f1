#!/usr/bin/env bash
# Programme-scale benchmark on PostgreSQL: `bash scripts/bench.sh [--mailboxes N] [--skip-build] …`
# (`--help` for every option). Sets up .venv as the test command does, then runs `python -m bench`,
# which prints each figure next to its target; docs/performance.md explains them.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/test.sh --collect-only -q >/dev/null  # the same .venv as the tests
export PORTAL_SECRET_KEY=${PORTAL_SECRET_KEY:-bench-only-secret-key}
export PORTAL_HTTPS=${PORTAL_HTTPS:-false}
exec .venv/bin/python -m bench "$@"
