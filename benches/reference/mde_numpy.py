"""numpy reference for the MDE loss (datamix-mde), same formula and data as the Rust bench.

L(lam) = -(1/T) sum_t [shift_t + ln sum_i lam_i exp(logp_i(t) - shift_t)],
shift_t = max_i logp_i(t); per-token probabilities precomputed once (not timed, as in
Rust), then chunked float32 matmul (T_chunk x k)(k x m) + np.log + float64 sums.
Reads DIR/table.safetensors and DIR/mixtures.f64 written by `cargo bench --bench mde`,
checks against DIR/rust_losses.f64 and prints key=value lines.
"""
import argparse
import json
import struct
import time

import numpy as np


def load_table(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    info = header["logp"]
    start, end = info["data_offsets"]
    assert info["dtype"] == "F32"
    return np.frombuffer(data[start:end], dtype="<f4").reshape(info["shape"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--mixtures", type=int, default=500)
    ap.add_argument("--chunk", type=int, default=4096)
    ap.add_argument("--reps", type=int, default=2)
    a = ap.parse_args()

    logp = load_table(f"{a.dir}/table.safetensors")  # k x T
    k, t = logp.shape
    lam = np.fromfile(f"{a.dir}/mixtures.f64", dtype="<f8").reshape(-1, k)[: a.mixtures]
    m = lam.shape[0]
    shift = logp.max(axis=0)
    p = np.ascontiguousarray(np.exp(logp - shift).T)  # T x k float32
    lam_t = np.ascontiguousarray(lam.T.astype(np.float32))  # k x m
    shift_sum = shift.sum(dtype=np.float64)

    best = float("inf")
    for _ in range(a.reps):
        start = time.perf_counter()
        acc = np.zeros(m, dtype=np.float64)
        for c in range(0, t, a.chunk):
            s = p[c : c + a.chunk] @ lam_t
            np.log(s, out=s)
            acc += s.sum(axis=0, dtype=np.float64)
        losses = -(shift_sum + acc) / t
        best = min(best, time.perf_counter() - start)

    rust = np.fromfile(f"{a.dir}/rust_losses.f64", dtype="<f8")
    n = min(len(rust), m)
    print(f"numpy_version={np.__version__}")
    print(f"numpy_mixtures={m}")
    print(f"numpy_s={best:.3f}")
    print(f"numpy_mixtures_per_s={m / best:.1f}")
    print(f"numpy_ns_per_token_mixture={best * 1e9 / (t * m):.4f}")
    print(f"max_abs_diff_vs_rust={np.max(np.abs(losses[:n] - rust[:n])):.3e} (over {n} mixtures)")


if __name__ == "__main__":
    main()
