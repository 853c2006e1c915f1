#!/usr/bin/env bash
# The Python SDK's CI step: builds the extension into a virtual environment (maturin develop,
# debug, in the same CARGO_TARGET_DIR as the rest of CI, so the Rust SDK is not built twice),
# builds the real server and relay the end-to-end tests start, and runs the tests (pytest).
# Called by .ci/run; works the same by hand (`bash sdk/python/ci.sh`).
set -euo pipefail
cd "$(dirname "$0")"
repo="$(cd ../.. && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target}"
venv="${VEXIL_PY_VENV:-$HOME/.cache/vexil-ci/venv}"

if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
# Already-satisfied requirements are not fetched again: a warm venv costs no download.
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    'maturin>=1.9.4,<2' 'pytest>=8' 'openfeature-sdk>=0.8'

# The end-to-end tests run the real server and relay: the copies the end-to-end crate builds
# for `cargo test --workspace` (the same code as vexil-server and vexil-relay). This is the CI's
# test build itself, so right after CI's test step it only checks that they are up to date;
# building them with another command would unify features differently and rebuild the server.
if [ -z "${VEXIL_SERVER_BIN:-}" ] || [ -z "${VEXIL_RELAY_BIN:-}" ]; then
    (cd "$repo" && cargo test --workspace --no-run --quiet)
    export VEXIL_SERVER_BIN="$CARGO_TARGET_DIR/debug/vexil-e2e-server"
    export VEXIL_RELAY_BIN="$CARGO_TARGET_DIR/debug/vexil-e2e-relay"
fi

VIRTUAL_ENV="$venv" PATH="$venv/bin:$PATH" maturin develop --quiet

"$venv/bin/python" -m pytest -q tests "$@"
