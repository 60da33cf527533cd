#!/usr/bin/env bash
# The main job: reproduce both papers' findings on a real multi-domain corpus, on the CPU.
#
#   1. builds the corpus (scripts/fetch-corpus.sh --small with ~1 MB per domain into
#      data/medium/: 8 domains, the State of the Union eval set, two end-task sets);
#   2. lays it out for configs/reproduce.toml: 6 training domains (data/medium/study/train),
#      3 out-of-domain eval sets (sotu, plus the legal and academic domains held out of
#      training: data/medium/study/ood) and the end-task sets (symbolic links, no copies);
#   3. runs `datamix study --config configs/reproduce.toml` (docs/reproduction.md says what
#      it measures and what it measured).
#
# Results land in runs/reproduce/results/ (report.md, CSV, JSON, SVG/PNG plots). Rerunning
# reuses the corpus and every trained model. Extra arguments go to `datamix study`
# (e.g. --config configs/study-small.toml for the quick study, or --backend wgpu when built
# with that feature). The build is the dev profile, which shares its dependencies with the
# tests and runs at release speed (Cargo.toml; docs/reproduction.md has the measurement).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=data/medium
DATAMIX_CORPUS_SMALL_BYTES=${DATAMIX_CORPUS_SMALL_BYTES:-1000000} DATAMIX_CACHE=data/.cache \
  ./scripts/fetch-corpus.sh --small "$DATA"
layout() { # layout DIR FILE...: DIR holds exactly links to FILE...
  local dir=$1; shift
  rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
  for f in "$@"; do ln -s "$(realpath "$f")" "$dir.tmp/$(basename "$f")"; done
  rm -rf "$dir" && mv "$dir.tmp" "$dir"
}
layout "$DATA/study/train" "$DATA"/corpus/{books,wikipedia,kernel_docs,rust_code,python_code,email}.jsonl
layout "$DATA/study/ood" "$DATA"/eval/sotu.jsonl "$DATA"/corpus/{legal,academic}.jsonl
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/datamix-target}
cargo build -p datamix-cli
time "$CARGO_TARGET_DIR/debug/datamix" study --config configs/reproduce.toml "$@"
