#!/usr/bin/env bash
# MDE throughput: datamix-mde batched loss vs numpy (same formula, same data) vs the
# measured `ln` bound, in one run. Sizes via env: T (tokens), K (experts), M (mixtures
# for Rust), M_PY (mixtures for numpy, a subset: numpy is timed per mixture), REPS.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/datamix-target}"
T="${T:-1000000}"; K="${K:-8}"; M="${M:-10000}"; M_PY="${M_PY:-500}"; REPS="${REPS:-3}"
OUT="${OUT:-$(mktemp -d)}"
python3 -c "import numpy" 2>/dev/null || pip install -q numpy
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load $(cut -d' ' -f1-3 /proc/loadavg)"
cargo bench -q -p datamix-mde --bench mde -- --tokens "$T" --experts "$K" --mixtures "$M" \
    --check "$M_PY" --reps "$REPS" --out "$OUT" | tee "$OUT/rust.txt"
python3 benches/reference/mde_numpy.py --dir "$OUT" --mixtures "$M_PY" --reps "$REPS" | tee "$OUT/numpy.txt"
rust=$(grep '^rust_mixtures_per_s=' "$OUT/rust.txt" | cut -d= -f2)
numpy=$(grep '^numpy_mixtures_per_s=' "$OUT/numpy.txt" | cut -d= -f2)
echo "speedup_vs_numpy=$(python3 -c "print(f'{$rust / $numpy:.1f}')")"
