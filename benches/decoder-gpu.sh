#!/usr/bin/env bash
# GPU training throughput of datamix-decoder's `m130` preset (GPT-2 vocabulary 50,257,
# batch 8 x 1024 tokens, float32) on Burn's CUDA and WGPU backends beside the PyTorch
# twin on the same GPU (benches/reference/decoder_torch.py --device cuda), with torch's
# 8192^3 float32 matmul peak and MFU against it. Issue 2's GPU rows.
#
# The GPU machine lent through the `device` tool has PyTorch but no Rust, so the bench is
# built here and carried there:
#
#   benches/decoder-gpu.sh build         # here: release bench with cuda,wgpu -> .device/
#   benches/decoder-gpu.sh run [steps]   # there, from the repo root (default 20 steps)
#
# i.e. one device call: run(command="bash benches/decoder-gpu.sh run 20",
# carry=[".device"], timeout_s=500). Rows and the summary go to $OUT (or
# /tmp/decoder-gpu). WGPU needs a Vulkan loader there: carry `.gl` as the device
# tool's README describes and this script unpacks it. A failing backend is reported and
# the others still run.
#
# DECODER_GPU_BACKENDS (default cuda,wgpu), DECODER_GPU_DEVICE (default cuda),
# DECODER_GPU_PRESET / _BATCH / _SEQ / _VOCAB change what runs (e.g. a CPU smoke test:
# DECODER_GPU_BACKENDS=cpu DECODER_GPU_DEVICE=cpu DECODER_GPU_PRESET=small ...).
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-}"
case "$mode" in
build)
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/datamix-target}"
  exe=$(cargo bench -p datamix-decoder --features cuda,wgpu --bench train_throughput --no-run \
    --message-format=json-render-diagnostics |
    python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "train_throughput" and m.get("executable"):
        print(m["executable"])')
  mkdir -p .device
  cp "$exe" .device/train_throughput
  strip .device/train_throughput
  ls -l .device/train_throughput
  ;;
run)
  steps="${2:-20}"
  out="${OUT:-/tmp/decoder-gpu}"
  mkdir -p "$out"
  rows="$out/rows.jsonl"
  : >"$rows"
  backends="${DECODER_GPU_BACKENDS:-cuda,wgpu}"
  device="${DECODER_GPU_DEVICE:-cuda}"
  preset="${DECODER_GPU_PRESET:-m130}"
  batch="${DECODER_GPU_BATCH:-8}"
  seq="${DECODER_GPU_SEQ:-1024}"
  vocab="${DECODER_GPU_VOCAB:-50257}"
  if [ -d .gl ]; then
    for f in .gl/*.deb; do dpkg -x "$f" /; done
    ldconfig
  fi
  for d in /usr/local/cuda/lib64 /usr/local/nvidia/lib64; do
    [ -d "$d" ] && export LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"
  done
  (nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true) | tee "$out/gpu.txt"
  export PYTHONUNBUFFERED=1
  python3 benches/reference/decoder_torch.py --device "$device" --preset "$preset" --batch "$batch" \
    --seq "$seq" --vocab "$vocab" --steps "$steps" --threads "$(nproc)" | tee -a "$rows"
  for b in ${backends//,/ }; do
    DATAMIX_BENCH_BACKENDS="$b" DATAMIX_BENCH_PRESET="$preset" DATAMIX_BENCH_BATCH="$batch" \
      DATAMIX_BENCH_SEQ="$seq" .device/train_throughput "$steps" "$vocab" 2>"$out/$b.stderr" |
      grep '"burn-' | tee -a "$rows" || echo "burn-$b failed: $(tail -n 5 "$out/$b.stderr")"
  done
  python3 benches/reference/decoder_table.py "$rows" | tee "$out/summary.md"
  ;;
*)
  sed -n '2,22p' "$0"
  exit 2
  ;;
esac
