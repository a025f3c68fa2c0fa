#!/usr/bin/env bash
# The Python environment (.venv) of this clone, from uv.lock. Never downloads Python.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if ! command -v uv >/dev/null 2>&1; then
    log "python: uv not found; installing it with pip"
    python3 -m pip install --quiet uv || python3 -m pip install --quiet --break-system-packages uv
    hash -r
    command -v uv >/dev/null 2>&1 || die "python: uv still not on PATH after pip install"
fi

cd "$REPO"
uv sync --frozen --all-packages --quiet
log "python: $("$PY" --version) in $REPO/.venv ($(uv --version))"
