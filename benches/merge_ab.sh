#!/usr/bin/env bash
# Alternating A/B rounds of the reused in-memory merge (issue 4,
# docs/bench-merge.md): each round measures the hot-cache references (one-thread
# and all-thread read(2), mmap touch) and then every variant once, as
# `merge_bench merge - FILES --mem --no-hash --reuse=10` (the median of 10
# merges into reused buffers, and the first, fresh merge). Round 1 only warms
# up and is dropped; the summary gives medians over the other rounds.
#
#   benches/merge_ab.sh ROUNDS "LABEL|ENV|BINARY|ARGS" ...
#
# ENV (e.g. `RAYON_NUM_THREADS=1`) and ARGS (e.g. `--batch-mb=16`) may be
# empty. BINARY is a release build of the merge_bench example, e.g. of another
# commit:
#   git worktree add /tmp/wt-C C && cargo build --release --manifest-path /tmp/wt-C/Cargo.toml \
#     -p datamix-merge --example merge_bench --target-dir /tmp/t-C
#   flock /tmp/bench.lock benches/merge_ab.sh 10 "old||/tmp/t-C/release/examples/merge_bench" \
#     "new||$HOME/.cache/datamix-target/release/examples/merge_bench"
# The references are measured with the first variant's binary. TLB shootdowns
# per merge come from /proc/interrupts (all processes; keep the machine quiet).
set -euo pipefail
ROUNDS=$1
shift
DIR=${MERGE_BENCH_DIR:-$HOME/.cache/merge-bench}
FILES=("$DIR"/m*/model.safetensors)
[ -f "${FILES[0]}" ] || { echo "no checkpoints in $DIR: run benches/merge.sh once" >&2; exit 1; }
IFS='|' read -r _ _ REF _ <<< "$1"
ROWS=$(mktemp)
trap 'rm -f "$ROWS"' EXIT
secs() { sed -n "s/.*$1[^(]*(\([0-9.]*\) s.*/\1/p" | head -n 1; }
tlb() { awk '/TLB/ { for (i = 2; i <= NF && $i ~ /^[0-9]+$/; i++) n += $i } END { print n + 0 }' /proc/interrupts; }
for r in $(seq "$ROUNDS"); do
  refs=$("$REF" readbw "${FILES[@]}")
  echo "$r read1 $(secs "1 thread" <<< "$refs") 0 0 0" >> "$ROWS"
  echo "$r readall $(secs "read(2) all threads" <<< "$refs") 0 0 0" >> "$ROWS"
  echo "$r touch $(secs "mmap touch" <<< "$refs") 0 0 0" >> "$ROWS"
  for v in "$@"; do
    IFS='|' read -r label envs bin args <<< "$v"
    t0=$(tlb)
    # shellcheck disable=SC2086 # ENV and ARGS are word lists
    out=$(env $envs "$bin" merge - "${FILES[@]}" --mem --no-hash --reuse=10 $args 2>&1)
    t1=$(tlb)
    reused=$(sed -n 's/.*median \([0-9.]*\) s, cpu \([0-9.]*\) s.*/\1 \2/p' <<< "$out")
    fresh=$(sed -n 's/.*tensors: \([0-9.]*\) s.*/\1/p' <<< "$out")
    echo "$r $label $reused $(((t1 - t0) / 11)) $fresh" >> "$ROWS"
  done
  echo "round $r of $ROUNDS done" >&2
done
python3 - "$ROWS" << 'EOF'
import collections, statistics as st, sys

rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    r, label, *vals = line.split()
    if int(r) > 1:
        rows[label].append([float(v) for v in vals])
med = lambda label, i=0: st.median(v[i] for v in rows[label])
refs = {"touch": med("touch"), "all-thread read(2)": med("readall"), "one-thread read(2)": med("read1")}
n = len(rows["touch"])
print(f"medians of {n} rounds (round 1 dropped)")
for name, t in refs.items():
    print(f"  {name:20s} {t:.3f} s")
print("variant     reused s  [min-max]      cpu s  " + "  ".join(f"% {k}" for k in refs) + "  TLB/merge  fresh s")
for label, v in rows.items():
    if label in ("touch", "readall", "read1"):
        continue
    w = med(label)
    shares = "  ".join(f"{100 * t / w:{len(k) + 1}.0f}%" for k, t in refs.items())
    print(f"{label:10s}  {w:8.3f}  [{min(x[0] for x in v):.3f}-{max(x[0] for x in v):.3f}]  {med(label, 1):5.2f}  "
          f"{shares}  {med(label, 2):9.0f}  {med(label, 3):7.3f}")
EOF
