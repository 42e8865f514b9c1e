#!/usr/bin/env bash
# Create or refresh .venv from requirements.lock (plus this project, editable).
# Cheap when nothing changed: the lock's hash is stamped into the venv.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# The interpreter: $PYTHON, else python<X.Y> from .python-version where it runs, else python3.
min_py=3.11
if [ -s .python-version ]; then min_py=$(head -n1 .python-version | tr -d '[:space:]'); fi
if [ -z "${PYTHON:-}" ]; then
  PYTHON=python3
  if "python$min_py" -c pass >/dev/null 2>&1; then PYTHON="python$min_py"; fi
fi
VENV=${VENV:-.venv}
UV_VERSION=0.13.9
py_version() { "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null; }
have_py=$(py_version "$PYTHON" || true)
want=$({ cat requirements.lock pyproject.toml; echo "$have_py"; } | sha256sum | cut -c1-16)
stamp="$VENV/.hpc-lock-hash"

if [ -x "$VENV/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi

if ! "$PYTHON" -c "import sys; sys.exit(not (tuple(map(int, '$min_py'.split('.'))) <= sys.version_info[:2] < (3, 14)))" 2>/dev/null; then
  echo "bootstrap: Python $min_py-3.13 is required, $PYTHON is ${have_py:-not runnable}." >&2
  echo "bootstrap: install Python $min_py, or set PYTHON=/path/to/python$min_py, and run again." >&2
  exit 1
fi
if [ -x "$VENV/bin/python" ] && [ "$(py_version "$VENV/bin/python")" != "$have_py" ]; then
  echo "bootstrap: $VENV has Python $(py_version "$VENV/bin/python"), not $have_py: recreating it" >&2
  rm -rf "$VENV"
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
