#!/usr/bin/env bash
# Create or refresh .venv from requirements.lock (plus this project, editable).
# Cheap when nothing changed: the lock's hash is stamped into the venv.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
UV_VERSION=0.13.9
want=$(cat requirements.lock pyproject.toml | sha256sum | cut -c1-16)
stamp="$VENV/.hpc-lock-hash"

if [ -x "$VENV/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi

if ! "$PYTHON" -c 'import sys; sys.exit(not ((3, 11) <= sys.version_info[:2] < (3, 14)))'; then
  echo "bootstrap: Python 3.11-3.13 is required, $PYTHON is $("$PYTHON" --version 2>&1)." >&2
  echo "bootstrap: set PYTHON=/path/to/python3.11 and run again." >&2
  exit 1
fi

t0=$SECONDS
echo "bootstrap: creating $VENV from requirements.lock" >&2
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"
# torch is locked as the CPU build (constraints/torch-cpu.txt), which PyPI does not carry.
if ls /opt/wheels/torch-*+cpu-*.whl >/dev/null 2>&1; then
  torch_source=(--find-links /opt/wheels)
else
  torch_source=(--extra-index-url https://download.pytorch.org/whl/cpu --index-strategy unsafe-best-match)
fi
"$VENV/bin/uv" pip sync --quiet --python "$VENV/bin/python" "${torch_source[@]}" requirements.lock
"$VENV/bin/uv" pip install --quiet --python "$VENV/bin/python" --no-deps -e .
echo "$want" > "$stamp"
echo "bootstrap: ready in $((SECONDS - t0))s" >&2
