#!/usr/bin/env bash
# Smoke test of a corpus built by scripts/fetch-corpus.sh.
#
# usage: scripts/test-corpus.sh [--build] [--small] [--overlap] [--unit] [DATA_DIR]
#   DATA_DIR   default: $DATAMIX_DATA, else data/ (data/small/ with --small)
#   --build    run fetch-corpus.sh first (same --small / DATA_DIR)
#   --overlap  also count training documents sharing a word 13-gram with the
#              eval set (at most 5 per domain allowed; ~45 s on the full corpus)
#              and end-task items whose text (context + answer) occurs in the
#              training corpus (13-gram, or the whole item if shorter; at most
#              1% of a task set's items allowed)
#   --unit     only run the helpers' unit tests (synthetic inputs; no data needed)
# First runs the helpers' unit tests, then checks valid JSON documents, every
# domain and eval set non-empty, counts and sha256 against MANIFEST.json, every
# end-task set (DATA_DIR/tasks/*.jsonl) present and parsing, each line with a
# non-empty context and answer, and the tokenizer file. Ends with
# 'N passed, N failed'.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD=0 SMALL=0 OVERLAP=0 UNIT_ONLY=0 DATA="${DATAMIX_DATA:-}"
[[ "${DATAMIX_CORPUS_SMALL:-0}" == 1 ]] && SMALL=1
while (($#)); do
  case "$1" in
    --build) BUILD=1 ;;
    --small) SMALL=1 ;;
    --overlap) OVERLAP=1 ;;
    --unit) UNIT_ONLY=1 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; exit 0 ;;
    -*) echo "test-corpus: unknown option $1" >&2; exit 2 ;;
    *) DATA="$1" ;;
  esac
  shift
done
python3 "$ROOT/scripts/corpus/test_helpers.py"
((UNIT_ONLY)) && exit 0
if [[ -z "$DATA" ]]; then
  if ((SMALL)); then DATA="$ROOT/data/small"; else DATA="$ROOT/data"; fi
fi
if ((BUILD)); then
  args=("$DATA"); ((SMALL)) && args=(--small "$DATA")
  bash "$ROOT/scripts/fetch-corpus.sh" "${args[@]}"
fi
[[ -f "$DATA/MANIFEST.json" ]] || { echo "test-corpus: $DATA/MANIFEST.json not found; run scripts/fetch-corpus.sh (or pass --build)" >&2; exit 1; }
python3 "$ROOT/scripts/corpus/check.py" "$DATA"
if ((OVERLAP)); then
  for e in "$DATA"/eval/*.jsonl; do
    python3 "$ROOT/scripts/corpus/overlap.py" --max-hits 5 "$e" "$DATA"/corpus/*.jsonl
  done
  for t in "$DATA"/tasks/*.jsonl; do
    n=$(wc -l <"$t")
    python3 "$ROOT/scripts/corpus/overlap.py" --items --max-hits $((n / 100)) "$t" "$DATA"/corpus/*.jsonl
  done
fi
