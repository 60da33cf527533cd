#!/usr/bin/env bash
# The test command from README.md (and what CI runs):
#   1. every crate's unit, integration and doc tests on the CPU backend, and the kill test
#      (scripts/test-kill.sh: 20 studies SIGKILLed at random points, each rerun and compared);
#   2. the CUDA and WGPU backends compile (no GPU needed);
#   3. the WGPU path runs for real on Mesa's lavapipe software Vulkan driver
#      (installed here with apt-get when missing and we are root);
#   4. the LibTorch (`tch`) path, when its torch venv exists (scripts/tch-env.sh; it is
#      ~7 GB of pip packages, so the tests do not install it);
#   5. the corpus scripts' unit tests;
#   6. the slim facade (regression + optimizer + mde) pulls no Burn, onig, parquet/arrow or
#      plotters (`cargo tree`), and the quick examples run in that slim build;
#   7. the two study examples (Na et al.'s ablation, the MDE study) on the built-in small
#      corpus (fetched by scripts/fetch-corpus.sh --small when missing);
#   8. every crate packages (`cargo package --workspace`, as `cargo publish` would).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/datamix-target}"

echo "== cargo test --workspace"
cargo test --workspace

echo "== studies SIGKILLed at random points and rerun (20 runs)"
./scripts/test-kill.sh

echo "== cargo check: cuda + wgpu backends"
cargo check -p datamix-decoder --features cuda,wgpu --tests

echo "== WGPU on lavapipe"
if ! ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mesa-vulkan-drivers libvulkan1) >/dev/null \
    || echo "could not install mesa-vulkan-drivers"
fi
if ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1; then
  VK_ICD_FILENAMES="$(ls /usr/share/vulkan/icd.d/lvp_icd*.json | head -n1)" \
    cargo test -p datamix-decoder --features wgpu --test wgpu
else
  echo "SKIPPED: no Vulkan driver (install mesa-vulkan-drivers to run the WGPU test)"
fi

echo "== LibTorch (tch)"
(
  if source scripts/tch-env.sh --if-present; then
    cargo test -p datamix-decoder --features tch --test tch
  else
    echo "SKIPPED: no torch venv (run 'source scripts/tch-env.sh' once to enable the tch tests)"
  fi
)

echo "== corpus scripts"
./scripts/test-corpus.sh --unit

echo "== slim facade: dependency check"
./scripts/check-slim.sh

echo "== examples (slim feature set, test profile)"
slim=(--profile test -p datamix --no-default-features --features regression,optimizer,mde,merge)
for ex in swarm_fit embed_optimizer merge_checkpoints; do
  echo "-- example $ex"
  cargo run "${slim[@]}" --example "$ex"
done

echo "== examples on the built-in small corpus (full feature set, test profile)"
[ -f data/small/MANIFEST.json ] || ./scripts/fetch-corpus.sh --small
for ex in na_ablation mde_study; do
  echo "-- example $ex"
  cargo run --profile test --example "$ex"
done

echo "== cargo package --workspace"
# --no-verify: verifying would rebuild every crate (Burn included) outside the workspace's
# profiles; the light crates are verified below, which also proves that their published
# form builds against the other packaged crates.
cargo package --workspace --no-verify --allow-dirty
# Cargo unpacks packaged workspace crates into its registry cache by name and version and
# does not unpack them again while the version is unchanged: drop our crates' old copies so
# the verification builds today's sources, not an earlier run's.
rm -rf "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/datamix-*
cargo package --allow-dirty -p datamix-io -p datamix-mde -p datamix-regression -p datamix-optimizer -p datamix-merge
