#!/usr/bin/env bash
# CI step for the Node.js SDK (.ci/run calls it): install the test dependencies, build the addon
# and the server and relay binaries the end-to-end test runs (one cargo invocation, the same
# CARGO_TARGET_DIR as the rest of CI), then node's test runner.
set -euo pipefail
cd "$(dirname "$0")"
npm ci --no-audit --no-fund
(cd ../.. && cargo build -p vexil-node -p vexil-server -p vexil-relay)
node scripts/build.js --no-cargo
npm test
