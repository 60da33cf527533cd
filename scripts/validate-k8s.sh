#!/usr/bin/env bash
# Validates the Kubernetes manifests of `datamix study emit k8s` against the Kubernetes
# API schema, offline: PyPI's `kubernetes-validate` (bundled JSON schemas, --strict:
# unknown fields are errors) in a venv under the repository (.venv-k8s, gitignored).
# Schema-checked only: the manifests have not run on a real cluster (docs/scale-out.md).
#
#   scripts/validate-k8s.sh [CONFIG] [extra `emit k8s` options...]
#
# CONFIG defaults to configs/study-small.toml (its data must be in data/small; planning
# prepares the tokenizer and packed corpus under its out_dir, but trains nothing).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/datamix-target}"
config="${1:-configs/study-small.toml}"
shift || true
k8s_version="${K8S_VERSION:-1.30.0}"

if [ ! -x .venv-k8s/bin/kubernetes-validate ]; then
  python3 -m venv .venv-k8s
  .venv-k8s/bin/pip install -q kubernetes-validate
fi
cargo build -q -p datamix-cli
datamix="$CARGO_TARGET_DIR/debug/datamix"

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
# Twice: defaults, and with GPUs and a custom name/claim (the optional fields).
"$datamix" --log warn study emit k8s --config "$config" --out "$out/plain" "$@"
"$datamix" --log warn study emit k8s --config "$config" --out "$out/gpu" \
  --name study-gpu --pvc shared-pool --mount /mnt/pool --parallelism 16 --gpus 1 "$@"
for dir in "$out/plain" "$out/gpu"; do
  for f in "$dir"/*.yaml; do
    .venv-k8s/bin/kubernetes-validate --strict -k "$k8s_version" "$f"
  done
  bash -n "$dir/apply.sh"
done
echo "k8s manifests valid against the Kubernetes $k8s_version API schema (strict)"
