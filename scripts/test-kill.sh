#!/usr/bin/env bash
# Issue 19's kill test: 20 studies SIGKILLed at random points (one-command, --workers 2, and
# hand-started workers + finish), each rerun to completion and compared with an uninterrupted
# run (numbers, pool bytes, no model trained twice, no stray files). About 3 minutes on 2
# cores; not part of scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/datamix-target}"
cargo test -p datamix-cli --test jobs -- --ignored --nocapture sigkill_at_random_points
