#!/usr/bin/env bash
# Issue 19's kill test: 20 studies SIGKILLed at random points (one-command, --workers 2, and
# hand-started workers + finish), each rerun to completion and compared with an uninterrupted
# run (numbers, pool bytes, no model trained twice, no stray files). About 40 s on 2
# cores (after the build); scripts/test.sh runs it after the
# other tests (it is an ignored test, so that `cargo test` alone never kills processes).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/datamix-target}"
cargo test -p datamix-cli --test jobs -- --ignored --nocapture sigkill_at_random_points
