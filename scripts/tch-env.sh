#!/usr/bin/env bash
# Environment for the `tch` (LibTorch) backend: a Python venv with the pip `torch` whose
# libtorch Burn 0.21's `tch` crate (0.22) binds (torch 2.9.0), and the variables its build
# script (LIBTORCH_USE_PYTORCH) and the dynamic linker (LD_LIBRARY_PATH) need.
#
#   source scripts/tch-env.sh            # create the venv if missing (pip, ~7 GB), export
#   source scripts/tch-env.sh --if-present   # export only if the venv exists (tests)
#
# Then: cargo build --features tch ...; `--backend tch` at run time.
TORCH_VERSION="2.9.0"
TORCH_VENV="${TORCH_VENV:-$HOME/.cache/tch-venv}"
# The venv's torch lib directory, if its torch is the right version (one Python start).
torch_lib() {
  "$TORCH_VENV/bin/python" -c "import os, torch; assert torch.__version__.startswith('$TORCH_VERSION'); print(os.path.join(os.path.dirname(torch.__file__), 'lib'))" 2>/dev/null
}
if ! TORCH_LIB="$(torch_lib)"; then
  if [ "${1:-}" = "--if-present" ]; then
    return 1 2>/dev/null || exit 1
  fi
  echo "tch-env: installing torch==$TORCH_VERSION into $TORCH_VENV" >&2
  python3 -m venv "$TORCH_VENV"
  "$TORCH_VENV/bin/python" -m pip install -q "torch==$TORCH_VERSION" numpy
  TORCH_LIB="$(torch_lib)"
fi
export VIRTUAL_ENV="$TORCH_VENV"
export PATH="$TORCH_VENV/bin:$PATH"
export LIBTORCH_USE_PYTORCH=1
export LD_LIBRARY_PATH="$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
