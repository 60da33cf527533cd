#!/usr/bin/env bash
# The test command from README.md: every crate's unit and integration tests on CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/datamix-target}"
cargo test --workspace
