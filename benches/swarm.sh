#!/usr/bin/env bash
# `datamix fit`'s families against LightGBM with RegMix's settings on a swarm of mixture
# models trained by the project itself (configs/swarm.toml: 256 Dirichlet mixtures over the
# built-in medium corpus' 8 domains, the `tiny` decoder continued from one seed), as RegMix
# fits one: λ → the objective (mean held-out CE over the 8 domains), fitted on the first
# 192 mixtures, scored on the last 64.
# Usage: benches/swarm.sh [n_test=64] [rounds=3] [config=configs/swarm.toml] [blocks=1]
#   The swarm is trained on the first run (8 domains: 17 min 51 s on 2 cores; the pool is
#   reused after that); the fits are then timed in alternating rounds (Rust, Python, ...).
#   configs/swarm12.toml: the same over 12 domains (four of the medium corpus' domains
#   split by source, benches/reference/split_domains.py), RegMix's dozen-odd (training
#   and scoring it: 18 min 36 s on 2 cores). docs/benchmarks.md records
#   `benches/swarm.sh 64 5 configs/swarm12.toml 4`.
#   blocks > 1: the fit is repeated with each of that many disjoint blocks of n_test rows
#   held out (block 0 the last rows, block 1 the n_test before them, ...), for the spread
#   of the held-out scores and the paired differences (4 blocks of 64 cover 256 rows).
set -euo pipefail
cd "$(dirname "$0")/.."
N_TEST=${1:-64}; ROUNDS=${2:-3}; CONFIG=${3:-configs/swarm.toml}; BLOCKS=${4:-1}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/datamix-target}
python3 -c "import lightgbm, pandas, scipy, sklearn" 2>/dev/null \
  || pip install -q lightgbm pandas scipy scikit-learn || pip install -q --break-system-packages lightgbm pandas scipy scikit-learn
OUT_DIR=$(sed -n 's/^out_dir *= *"\(.*\)".*/\1/p' "$CONFIG")
CSV=$PWD/$OUT_DIR/results/mixtures.csv
if [ ! -f "$CSV" ]; then
  [ -f data/medium/MANIFEST.json ] || DATAMIX_CORPUS_SMALL_BYTES=1000000 DATAMIX_CACHE=data/.cache \
    ./scripts/fetch-corpus.sh --small data/medium
  if grep -q 'data/medium12/' "$CONFIG" && [ ! -d data/medium12/corpus ]; then
    python3 benches/reference/split_domains.py data/medium/corpus data/medium12/corpus
  fi
  cargo build -q -p datamix-cli
  "$CARGO_TARGET_DIR/debug/datamix" study --config "$CONFIG"
fi
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 RAYON_NUM_THREADS=1
WORK=$(mktemp -d); trap 'rm -rf "$WORK"' EXIT
cargo bench -q -p datamix-regression --bench regression --no-run
for r in $(seq "$ROUNDS"); do
  for b in $(seq 0 $((BLOCKS - 1))); do
    cargo bench -q -p datamix-regression --bench regression -- holdout "$CSV" "$N_TEST" "$b" > "$WORK/rust-$r-$b.jsonl"
    python3 benches/reference/swarm_lightgbm.py "$CSV" "$N_TEST" "$b" > "$WORK/python-$r-$b.jsonl"
  done
done
echo "swarm: $(($(wc -l < "$CSV") - 1)) mixtures, test rows $N_TEST x $BLOCKS blocks, rounds $ROUNDS; cores=$(nproc --all) (threads pinned to 1); $(lscpu | grep 'Model name' | sed 's/  */ /g')"
python3 benches/reference/swarm_report.py "$WORK"/*.jsonl
