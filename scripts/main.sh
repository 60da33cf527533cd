#!/usr/bin/env bash
# The main job: build the small real multi-domain corpus (scripts/fetch-corpus.sh --small),
# then run a complete datamix study on it on the CPU (configs/study-small.toml).
# Results land in runs/study-small/results/ (report.md, CSV, JSON, SVG). Rerunning reuses
# the corpus and every trained model. Extra arguments go to `datamix study`
# (e.g. --backend wgpu when built with that feature).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/fetch-corpus.sh --small
# Share the build with the tests (the dev profile compiles dependencies at opt-level 3).
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/datamix-target}
cargo run -p datamix-cli -- study --config configs/study-small.toml "$@"
