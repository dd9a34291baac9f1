#!/usr/bin/env bash
# Programme-scale benchmark on PostgreSQL: `bash scripts/bench.sh [--mailboxes N] [--skip-build] …`
# (`--help` for every option). Sets up .venv as the test command does, then runs `python -m bench`,
# which prints each figure next to its target; docs/performance.md explains them.
set -euo pipefail
cd "$(dirname "$0")/.."

# The same .venv as the tests; its set-up output only if it fails.
if ! setup=$(bash scripts/test.sh --collect-only -q 2>&1); then
  echo "$setup" >&2
  exit 1
fi
export PORTAL_SECRET_KEY=${PORTAL_SECRET_KEY:-bench-only-secret-key}
export PORTAL_HTTPS=${PORTAL_HTTPS:-false}
exec .venv/bin/python -m bench "$@"
