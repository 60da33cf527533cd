#!/usr/bin/env bash
# MDE throughput: datamix-mde batched loss vs numpy (same formula, same data) vs the
# measured `ln` bound, in one run. Sizes via env: T (tokens), K (experts), M (mixtures
# for Rust), M_PY (mixtures for numpy, a subset: numpy is timed per mixture), REPS (best
# of, within a round), ROUNDS (Rust and numpy alternate ROUNDS times so that both get
# the same chances on a shared machine; the summary takes each one's best round).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/datamix-target}"
T="${T:-1000000}"; K="${K:-8}"; M="${M:-10000}"; M_PY="${M_PY:-500}"; REPS="${REPS:-3}"
ROUNDS="${ROUNDS:-5}"
OUT="${OUT:-$(mktemp -d)}"
python3 -c "import numpy" 2>/dev/null || pip install -q numpy
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq "$ROUNDS"); do
    echo "--- round $r, load $(cut -d' ' -f1-3 /proc/loadavg)"
    cargo bench -q -p datamix-mde --bench mde -- --tokens "$T" --experts "$K" --mixtures "$M" \
        --check "$M_PY" --reps "$REPS" --out "$OUT" | tee "$OUT/rust.$r.txt"
    python3 benches/reference/mde_numpy.py --dir "$OUT" --mixtures "$M_PY" --reps "$REPS" \
        | tee "$OUT/numpy.$r.txt"
done
echo "--- summary (best round of each), load $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$OUT" "$ROUNDS" <<'PY'
import sys

out, rounds = sys.argv[1], int(sys.argv[2])


def read(name):
    rows = []
    for r in range(1, rounds + 1):
        kv = {}
        for line in open(f"{out}/{name}.{r}.txt"):
            if "=" in line and " " not in line.split("=", 1)[0]:
                key, value = line.strip().split("=", 1)
                kv[key] = value.split()[0]
        rows.append(kv)
    return rows


rust, numpy = read("rust"), read("numpy")
for r, (a, b) in enumerate(zip(rust, numpy), 1):
    ratio = float(a["rust_mixtures_per_s"]) / float(b["numpy_mixtures_per_s"])
    print(f"round {r}: speedup_vs_numpy={ratio:.1f} rust_over_bound={a['rust_over_bound']}")
best = lambda rows, key, f: f(float(x[key]) for x in rows)
rust_mps = best(rust, "rust_mixtures_per_s", max)
numpy_mps = best(numpy, "numpy_mixtures_per_s", max)
rust_ns = best(rust, "rust_ns_per_token_mixture", min)
bound_ns = best(rust, "bound_ns_per_ln", min)
print(f"best_rust_mixtures_per_s={rust_mps:.1f}")
print(f"best_rust_ns_per_token_mixture={rust_ns:.4f}")
if "rust_avx2_mixtures_per_s" in rust[0]:
    print(f"best_rust_avx2_mixtures_per_s={best(rust, 'rust_avx2_mixtures_per_s', max):.1f}")
    print(f"best_bound_avx2_ns_per_ln={best(rust, 'bound_avx2_ns_per_ln', min):.4f}")
print(f"best_numpy_mixtures_per_s={numpy_mps:.1f}")
print(f"best_numpy_ns_per_token_mixture={best(numpy, 'numpy_ns_per_token_mixture', min):.4f}")
print(f"best_bound_ns_per_ln={bound_ns:.4f}")
print(f"speedup_vs_numpy={rust_mps / numpy_mps:.1f}")
print(f"rust_over_bound={rust_ns / bound_ns:.2f}")
PY
