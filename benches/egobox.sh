#!/usr/bin/env bash
# datamix's Gaussian process and Bayesian-optimisation loop beside egobox-gp / egobox-ego
# (issue 22, item 7), one thread each, in one run (benches/egobox/: a package outside the
# workspace, so that nobody else builds egobox):
#   GP: cross-validated accuracy and time on the main study's 44 mixtures (8 folds) and on
#       the 256-mixture swarm (5 folds, and fitted on 192 / scored on the last 64), on λ
#       and λ+MDE; ROUNDS rounds, every round running each GP in turn, times = medians.
#   BO: minimise the mean MDE loss of the swarm's expert tables (exact optimum known) with
#       41 evaluations in batches of 4 from 9 initial points, 5 seeds: regret and time.
# Needs runs/reproduce (./scripts/main.sh) and runs/swarm (benches/swarm.sh) once.
# Usage: benches/egobox.sh [rounds=2]
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-2}
export CARGO_TARGET_DIR=${EGOBOX_TARGET_DIR:-$HOME/.cache/datamix-target-ego}
export RAYON_NUM_THREADS=1 OMP_NUM_THREADS=1
MAIN=${MAIN_CSV:-runs/reproduce/results/mixtures.csv}
SWARM=runs/swarm/results/mixtures.csv
[ -f "$MAIN" ] || { echo "$MAIN missing: run ./scripts/main.sh once (or set MAIN_CSV)" >&2; exit 1; }
[ -f "$SWARM" ] || { echo "$SWARM missing: run benches/swarm.sh once" >&2; exit 1; }
cargo build -q --release --manifest-path benches/egobox/Cargo.toml
BIN=$CARGO_TARGET_DIR/release/datamix-egobox-compare
WORK=$(mktemp -d); trap 'rm -rf "$WORK"' EXIT
for r in $(seq "$ROUNDS"); do
  "$BIN" gp "$MAIN" 8 | sed 's/^{/{"data":"main",/' >> "$WORK/gp.jsonl"
  "$BIN" gp "$SWARM" 5 64 | sed 's/^{/{"data":"swarm",/' >> "$WORK/gp.jsonl"
done
"$BIN" bo runs/swarm/tables 41 4 5 2>/dev/null | grep '^{' > "$WORK/bo.jsonl"
echo "rounds=$ROUNDS; cores=$(nproc --all) (threads pinned to 1); $(lscpu | grep 'Model name' | sed 's/  */ /g')"
python3 - "$WORK" <<'PY'
import collections, json, statistics as st, sys
w = sys.argv[1]
rows = [json.loads(l) for l in open(f"{w}/gp.jsonl")]
groups = collections.defaultdict(list)
for r in rows:
    groups[(r["data"], r["kind"], r["features"], r["model"])].append(r)
print("| data | evaluation | features | GP | MSE | Spearman | seconds (median) | time vs datamix-gp |")
print("|---|---|---|---|---:|---:|---:|---:|")
for (data, kind, feats, model), rs in groups.items():
    if "error" in rs[0]:
        print(f"| {data} | {kind} | {feats} | {model} | error: {rs[0]['error']} | | | |")
        continue
    secs = st.median(r["seconds"] for r in rs)
    base = st.median(r["seconds"] for r in groups[(data, kind, feats, "datamix-gp")])
    r = rs[0]
    print(f"| {data} | {kind} | {feats} | {model} | {r['mse']:.3g} | {r['spearman']:.4f} | {secs:.3f} | {secs / base:.2f}x |")
bo = [json.loads(l) for l in open(f"{w}/bo.jsonl")]
opt = [b for b in bo if b["kind"] == "bo-optimum"][0]
print(f"\nBO: mean MDE loss over {opt['eval_domains']} eval domains, {opt['experts']} experts, exact optimum {opt['value']:.6f}")
print("| loop | seeds | evaluations | regret median (min-max) | regret mean | seconds median | time vs datamix |")
print("|---|---:|---:|---|---:|---:|---:|")
by = collections.defaultdict(list)
for b in bo:
    if b["kind"] == "bo":
        by[b["impl"]].append(b)
base = st.median(b["seconds"] for b in by["datamix"])
for impl, bs in by.items():
    reg = [b["regret"] for b in bs]
    secs = st.median(b["seconds"] for b in bs)
    print(f"| {impl} | {len(bs)} | {bs[0]['evaluations']} | {st.median(reg):.2e} ({min(reg):.2e}-{max(reg):.2e}) | {st.mean(reg):.2e} | {secs:.2f} | {secs / base:.2f}x |")
PY
