#!/usr/bin/env bash
# Training throughput of datamix-decoder's `small` preset (seq 256, batch 8,
# vocab 4096) on Burn's CPU backends (flex, LibTorch, ndarray) beside its
# PyTorch twin, plus the sgemm peaks (torch's and the gemm crate's) and model FLOPs
# utilisation against each, in one run.
# Run on a quiet machine. PyTorch and Burn's LibTorch backend use the same
# pip torch (scripts/tch-env.sh creates its venv on first use).
#
# Then `rounds` alternating pairs (PyTorch, then the default `flex`) in the same window:
# on a shared machine neighbouring runs compare better than two long sequential ones.
#
#   benches/decoder.sh [steps] [rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
steps="${1:-10}"
rounds="${2:-5}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/datamix-target}"
source scripts/tch-env.sh
cargo bench -p datamix-decoder --features ndarray,tch --bench train_throughput --no-run -q
out=$(mktemp)
# Two threads everywhere: the CI machine's cores.
export RAYON_NUM_THREADS=2 OMP_NUM_THREADS=2
python3 benches/reference/decoder_torch.py --steps "$steps" --threads 2 | tee -a "$out"
# The twin again with the composites Burn records (no fused SDPA / cross-entropy).
python3 benches/reference/decoder_torch.py --steps "$steps" --threads 2 --unfused | tee -a "$out"
# DATAMIX_BENCH_COMPOSITES: also time flex and LibTorch with the fused ops off.
DATAMIX_BENCH_COMPOSITES=1 cargo bench -p datamix-decoder --features ndarray,tch --bench train_throughput -q -- "$steps" 4096 8 | tee -a "$out"
pairs=$(mktemp)
for _ in $(seq "$rounds"); do
  python3 benches/reference/decoder_torch.py --steps "$steps" --threads 2 | grep '"pytorch"' >>"$pairs"
  DATAMIX_BENCH_BACKENDS=cpu cargo bench -p datamix-decoder --features ndarray,tch --bench train_throughput -q -- "$steps" 4096 8 | grep '"burn-cpu"' >>"$pairs"
done
echo
python3 benches/reference/decoder_table.py "$out"
python3 - "$pairs" <<'PY'
import json, statistics, sys
pairs = [json.loads(l) for l in open(sys.argv[1])]
ratios = [b["tokens_per_s"] / a["tokens_per_s"] for a, b in zip(pairs[::2], pairs[1::2])]
if ratios:
    print(f"\n{len(ratios)} alternating rounds, flex / PyTorch tokens/s:")
    for i, (a, b) in enumerate(zip(pairs[::2], pairs[1::2])):
        print(f"  round {i + 1}: PyTorch {a['tokens_per_s']:,.0f}, flex {b['tokens_per_s']:,.0f}: {ratios[i]:.2f}x")
    print(f"  median {statistics.median(ratios):.2f}x, range {min(ratios):.2f}-{max(ratios):.2f}x")
PY
