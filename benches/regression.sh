#!/usr/bin/env bash
# Regression benchmark: datamix-regression vs scikit-learn (Ridge, GaussianProcessRegressor)
# and LightGBM on one synthetic CSV, same folds and target, in one run.
# Usage: benches/regression.sh [rows=64] [folds=8] [candidates=100000]
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${1:-64}; FOLDS=${2:-8}; CANDS=${3:-100000}
python3 -c "import sklearn, lightgbm, pandas, scipy" 2>/dev/null \
  || pip install -q scikit-learn lightgbm pandas scipy || pip install -q --break-system-packages scikit-learn lightgbm pandas scipy
# One thread everywhere (BLAS, OpenMP in LightGBM, rayon): a like-for-like single-core comparison.
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 RAYON_NUM_THREADS=1
WORK=$(mktemp -d); trap 'rm -rf "$WORK"' EXIT
CSV="$WORK/mixtures.csv"
cargo bench -q -p datamix-regression --bench regression -- gen "$CSV" "$ROWS" 7
cargo bench -q -p datamix-regression --bench regression -- run "$CSV" "$FOLDS" "$CANDS" > "$WORK/rust.jsonl"
python3 benches/reference/regression_sklearn.py "$CSV" "$FOLDS" "$CANDS" > "$WORK/python.jsonl"
echo "rows=$ROWS folds=$FOLDS candidates=$CANDS; cores=$(nproc --all) (threads pinned to 1); $(lscpu | grep 'Model name' | sed 's/  */ /g')"
python3 benches/reference/regression_report.py "$WORK/rust.jsonl" "$WORK/python.jsonl"
