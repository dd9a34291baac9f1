#!/usr/bin/env bash
# Run the portal locally with demo data: `bash scripts/demo.sh` (PORT=9000 for another port).
# Sets up .venv, keeps the demo's database, secret key, static files and logs in var/, loads the
# demo data once, then runs a worker in the background and the web server until Ctrl-C.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PORT=${PORT:-8000}
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  command -v "$PYTHON" >/dev/null || { echo "Python 3.11 or newer is needed: no $PYTHON found." >&2; exit 1; }
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || { echo "Python 3.11 or newer is needed (found $("$PYTHON" --version 2>&1))." >&2; exit 1; }
  echo "Creating .venv with $("$PYTHON" --version 2>&1)"
  "$PYTHON" -m venv .venv
fi

mkdir -p var
# Install again only when pyproject.toml has changed since the last install.
installed=$(.venv/bin/python -c 'import hashlib; print(hashlib.sha256(open("pyproject.toml", "rb").read()).hexdigest())')
if [ "$(cat .venv/.demo-installed 2>/dev/null)" != "$installed" ]; then
  echo "Installing the portal into .venv"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e . > var/pip.log 2>&1 \
    || { cat var/pip.log >&2; echo "pip install failed: see above (also in var/pip.log)." >&2; exit 1; }
  echo "$installed" > .venv/.demo-installed
fi

if [ ! -s var/demo-secret-key ]; then
  (umask 077 && .venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(50))' > var/demo-secret-key)
fi
# A local demo on loopback: debug on, plain HTTP and its own database, whatever the shell had set.
export PORTAL_DEBUG=true
export PORTAL_HTTPS=false
PORTAL_SECRET_KEY=$(cat var/demo-secret-key)
export PORTAL_SECRET_KEY
unset PORTAL_SECRET_KEY_FILE DATABASE_URL_FILE
export DATABASE_URL="sqlite:///$PWD/var/demo.sqlite3"
export PORTAL_STATIC_ROOT="$PWD/var/static"
export PORTAL_WAVE_POLL_SECONDS=3

.venv/bin/python manage.py migrate --noinput -v0
PORTAL_LOG_LEVEL=WARNING .venv/bin/python manage.py load_demo_data
.venv/bin/python manage.py load_demo_calls
.venv/bin/python manage.py collectstatic --noinput -v0

# The worker runs in its own process group, so Ctrl-C reaches only the web server and the trap
# below stops the worker with all of its processes.
worker=""
worker_alive() { kill -0 -- "-$worker" 2>/dev/null || kill -0 "$worker" 2>/dev/null; }
stop_worker() {
  [ -n "$worker" ] && worker_alive || return 0
  echo "Stopping the worker"
  kill -TERM -- "-$worker" 2>/dev/null || kill -TERM "$worker" 2>/dev/null || true
  for _ in $(seq 20); do
    worker_alive || return 0
    sleep 0.5
  done
  kill -KILL -- "-$worker" 2>/dev/null || kill -KILL "$worker" 2>/dev/null || true
}
trap stop_worker EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
.venv/bin/python -c 'import os, sys; os.setpgid(0, 0); os.execv(sys.argv[1], sys.argv[1:])' \
  .venv/bin/python manage.py qcluster > var/worker.log 2>&1 &
worker=$!

cat <<EOF

The portal:  http://127.0.0.1:$PORT/   (sign in with one of the accounts above)
Admin:       http://127.0.0.1:$PORT/admin/
Worker log:  var/worker.log
Stop with Ctrl-C. For fresh demo data (tonight's wave running again): rm -r var/ and run again.

EOF
.venv/bin/python manage.py runserver "127.0.0.1:$PORT"
