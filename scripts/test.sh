#!/usr/bin/env bash
# Set up and run the whole test suite: `bash scripts/test.sh [pytest arguments]`.
# SQLite by default; set DATABASE_URL (e.g. postgres://postgres@127.0.0.1:5432/portal) for PostgreSQL.
# Browser tests need Chromium at /usr/bin/chromium (Debian: apt-get install chromium); they skip without it.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || { echo "Python 3.11 or newer is needed (found $("$PYTHON" --version))." >&2; exit 1; }
  "$PYTHON" -m venv .venv
fi
# This machine's pip configuration names local mirrors that may be absent: skip those warnings.
quiet_pip() { .venv/bin/python -m pip "$@" 2> >(grep -v "^WARNING: Location" >&2); }
quiet_pip install --quiet --upgrade pip
quiet_pip install --quiet -e ".[dev]"

export PORTAL_SECRET_KEY=${PORTAL_SECRET_KEY:-test-only-secret-key}
export PORTAL_HTTPS=${PORTAL_HTTPS:-false}
echo "Running the suite on ${DATABASE_URL:-SQLite}"
exec .venv/bin/python -m pytest "$@"
