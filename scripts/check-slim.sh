#!/usr/bin/env bash
# The slim facade builds without the heavy dependencies (issue 20): with only the
# regression, optimizer and MDE crates, `datamix` must not depend on Burn, the tokenizers'
# onig (a C build), parquet/arrow, plotters or resvg. `cargo tree` only: no compilation.
set -euo pipefail
cd "$(dirname "$0")/.."

heavy='^(burn|burn-[a-z-]+|onig|onig_sys|tokenizers|parquet|arrow|arrow-[a-z-]+|plotters|plotters-[a-z-]+|resvg|datamix-decoder|datamix-partition) '
check() {
  local features=$1
  local deps
  deps=$(cargo tree -e normal --prefix none --no-default-features --features "$features" -p datamix)
  if grep -E "$heavy" <<<"$deps" | sort -u | grep .; then
    echo "FAIL: 'datamix --no-default-features --features $features' pulls the heavy crates above" >&2
    exit 1
  fi
  echo "ok: --features $features -> $(sort -u <<<"$deps" | wc -l) crates, none heavy"
}
check regression,optimizer,mde
check regression
check optimizer
check mde
check merge
