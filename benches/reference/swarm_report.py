"""Side-by-side table for benches/swarm.sh: every Rust family and LightGBM (RegMix's
settings) on the held-out rows of the swarm; each JSONL file is one alternated round."""
import json
import statistics
import sys
from collections import defaultdict

runs = defaultdict(list)
picks = {}
for path in sys.argv[1:]:
    for r in map(json.loads, open(path)):
        if r["kind"] == "pick":
            picks[r["features"]] = r["model"]
        else:
            runs[(r["impl"], r["model"], r["features"])].append(r)
ref = {k[2]: v for k, v in runs.items() if k[0] == "python"}
print("| features | model | train/test rows | test Spearman | test Pearson | test MSE | fit + predict s (median of rounds) | time / LightGBM's |")
print("|---|---|---:|---:|---:|---:|---:|---:|")
for (impl, model, fs), rs in sorted(runs.items(), key=lambda kv: (kv[0][2], kv[0][0] != "python", kv[0][1])):
    r = rs[-1]
    secs = statistics.median(x["seconds"] for x in rs)
    base = statistics.median(x["seconds"] for x in ref[fs]) if fs in ref else None
    name = "LightGBM (RegMix settings)" if impl == "python" else f"datamix {model}" + (" (picked by CV)" if picks.get(fs) == model else "")
    ratio = f"{secs / base:.2f}" if base else "n/a"
    print(f"| {fs} | {name} | {r['train']}/{r['test']} | {r['spearman']:.4f} | {r['pearson']:.4f} | {r['mse']:.3e} | {secs:.4f} | {ratio} |")
