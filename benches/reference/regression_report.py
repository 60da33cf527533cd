"""Side-by-side table of the Rust and Python regression bench outputs (JSON lines)."""
import json
import sys

REF = {"ridge": "sklearn Ridge", "gp": "sklearn GPR", "gbdt": "LightGBM"}


def load(path):
    return {(r["kind"], r["model"], r["features"]): r for r in map(json.loads, open(path))}


def f(v, fmt):
    return "n/a" if v is None else format(v, fmt)


rust, py = load(sys.argv[1]), load(sys.argv[2])
print("\n### Cross-validation (target: mean of all eval losses)\n")
print("| model | features | Rust MSE | ref MSE | Rust ρ | ref ρ | Rust top-1 rank | ref top-1 rank | Rust time (s) | ref time (s) | time ratio Rust/ref |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for key, r in rust.items():
    if key[0] != "cv":
        continue
    p = py.get(key)
    ratio = f"{r['seconds'] / p['seconds']:.3f}" if p else "n/a"
    name = f"{key[1]} vs {REF[key[1]]}" if p else key[1]
    print(f"| {name} | {key[2]} | {r['mse']:.3e} | {f(p and p['mse'], '.3e')} | {f(r['spearman'], '.4f')} | "
          f"{f(p and p['spearman'], '.4f')} | {r['top1_rank']:.0f} | {f(p and p['top1_rank'], '.0f')} | "
          f"{r['seconds']:.4f} | {f(p and p['seconds'], '.4f')} | {ratio} |")
print("\n### Batched prediction (features lambda+mde; GP includes std)\n")
print("| model | candidates | Rust (s) | ref (s) | ratio Rust/ref |")
print("|---|---:|---:|---:|---:|")
for key, r in rust.items():
    if key[0] == "predict" and key in py:
        p = py[key]
        print(f"| {key[1]} vs {REF[key[1]]} | {r['candidates']} | {r['seconds']:.4f} | {p['seconds']:.4f} | {r['seconds'] / p['seconds']:.3f} |")
