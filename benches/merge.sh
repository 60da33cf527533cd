#!/usr/bin/env bash
# Merge benchmark (issue 4): uniform linear merge of 8 random ~134M-parameter
# Llama-shaped f32 checkpoints with datamix (release) and with mergekit
# (method linear, CPU), against the hot-page-cache read bandwidth of the same
# files (and the disk's write+fsync bandwidth, the floor for merges to a file).
# Wall time, CPU time and peak RSS come from /usr/bin/time.
#
#   benches/merge.sh            # RUNS=3 rounds of datamix, MK_RUNS=1 mergekit run
#   flock /tmp/bench.lock env RUNS=3 MK_RUNS=2 benches/merge.sh   # docs/bench-merge.md
#
# Generated files (~4.3 GB + outputs) live in $MERGE_BENCH_DIR
# (default ~/.cache/merge-bench), mergekit's venv in $MERGE_BENCH_VENV.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${MERGE_BENCH_DIR:-$HOME/.cache/merge-bench}
VENV=${MERGE_BENCH_VENV:-$HOME/.cache/merge-venv}
N=8
RUNS=${RUNS:-3}
MK_RUNS=${MK_RUNS:-1}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/datamix-target}

cargo build -q --release -p datamix-merge --example merge_bench
BIN=$CARGO_TARGET_DIR/release/examples/merge_bench
[ -f "$DIR/m$((N - 1))/config.json" ] || "$BIN" gen "$DIR" "$N"
if [ ! -x "$VENV/bin/mergekit-yaml" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q mergekit
fi
# To check the recorded input hashes independently.
"$VENV/bin/python" -c 'import blake3' 2> /dev/null || "$VENV/bin/pip" install -q blake3
FILES=()
for i in $(seq 0 $((N - 1))); do FILES+=("$DIR/m$i/model.safetensors"); done
{
  echo "merge_method: linear"
  echo "dtype: float32"
  echo "models:"
  for i in $(seq 0 $((N - 1))); do
    echo "  - model: $DIR/m$i"
    echo "    parameters: {weight: 1.0}"
  done
} > "$DIR/mergekit.yml"

RESULTS="$DIR/results.tsv"
: > "$DIR/readbw.log"
: > "$DIR/writebw.log"
: > "$RESULTS"
# timed LABEL CMD...: one row "LABEL wall user sys maxrss_kb" in $RESULTS.
timed() {
  local label=$1
  shift
  /usr/bin/time -o "$DIR/time.txt" -f "%e %U %S %M" "$@" > "$DIR/last.log" 2>&1
  echo "$label $(cat "$DIR/time.txt")" >> "$RESULTS"
  echo "$label: $(tail -n 1 "$DIR/last.log") [wall user sys maxrss_kb: $(cat "$DIR/time.txt")]"
}

"$BIN" readbw "${FILES[@]}" > /dev/null # warm the page cache
for r in $(seq "$RUNS"); do
  echo "== round $r (load: $(cut -d' ' -f1-3 /proc/loadavg))"
  "$BIN" readbw "${FILES[@]}" | tee -a "$DIR/readbw.log"
  "$BIN" writebw "${FILES[0]}" "$DIR/writebw.tmp" | tee -a "$DIR/writebw.log"
  timed datamix-mem "$BIN" merge - "${FILES[@]}" --mem --no-hash
  timed datamix-mem-thp "$BIN" merge - "${FILES[@]}" --mem --no-hash --huge
  # Three more merges into the first one's buffers (a study scoring many
  # mixtures): their median wall and CPU time, and the process's peak RSS.
  /usr/bin/time -o "$DIR/time.txt" -f "%e %U %S %M" \
    "$BIN" merge - "${FILES[@]}" --mem --no-hash --reuse=3 > "$DIR/last.log" 2>&1
  reused=$(sed -n 's/.*reused buffers: median \([0-9.]*\) s, cpu \([0-9.]*\) s.*/\1 \2/p' "$DIR/last.log")
  echo "datamix-mem-reused $reused 0 $(cut -d' ' -f4 "$DIR/time.txt")" >> "$RESULTS"
  echo "datamix-mem-reused: $(tail -n 1 "$DIR/last.log")"
  timed datamix-mem-blake3 "$BIN" merge - "${FILES[@]}" --mem
  timed datamix-file "$BIN" merge "$DIR/datamix.safetensors" "${FILES[@]}" --no-hash
  timed datamix-file-blake3 "$BIN" merge "$DIR/datamix.safetensors" "${FILES[@]}"
  timed datamix-file-bf16 "$BIN" merge "$DIR/datamix-bf16.safetensors" "${FILES[@]}" --no-hash --bf16
done
for r in $(seq "$MK_RUNS"); do
  echo "== mergekit run $r (load: $(cut -d' ' -f1-3 /proc/loadavg))"
  rm -rf "$DIR/out-mergekit"
  timed mergekit "$VENV/bin/mergekit-yaml" "$DIR/mergekit.yml" "$DIR/out-mergekit" \
    --no-copy-tokenizer --no-write-model-card --quiet
done
"$VENV/bin/python" benches/reference/merge_report.py "$RESULTS" "$DIR/readbw.log" "$DIR/writebw.log" \
  "${FILES[0]}" "$DIR/datamix.safetensors" "$DIR/out-mergekit/model.safetensors"
