"""Side-by-side table for benches/swarm.sh: every Rust family and LightGBM (RegMix's
settings) on the held-out rows of the swarm. Each JSONL file is one run of one side on one
test block in one alternated round. Accuracy is deterministic per block (both sides are
seeded), so it is summarised over the disjoint test blocks: the mean and the SD across
blocks, and the paired difference from LightGBM on the same block; the time is the median
over every round and block, and its ratio to LightGBM's is also given per pair of
neighbouring runs (same round and block: `rust-R-B.jsonl` beside `python-R-B.jsonl`) as
median [min-max]."""
import os
import json
import statistics
import sys
from collections import defaultdict

acc = defaultdict(dict)  # (impl, model, features) -> block -> record
secs = defaultdict(list)  # (impl, model, features) -> seconds
paired = defaultdict(dict)  # (impl, model, features) -> (round, block) -> seconds
picks = defaultdict(list)  # features -> the family picked by CV, per block
for path in sys.argv[1:]:
    run = os.path.basename(path).split("-", 1)[-1]  # "R-B.jsonl": the round and block
    for r in map(json.loads, open(path)):
        b = r.get("block", 0)
        if r["kind"] == "pick":
            if b not in {x[0] for x in picks[r["features"]]}:
                picks[r["features"]].append((b, r["model"]))
            continue
        key = (r["impl"], r["model"], r["features"])
        acc[key][b] = r
        secs[key].append(r["seconds"])
        paired[key][run] = r["seconds"]


def mean_sd(xs):
    m = statistics.fmean(xs)
    return (f"{m:.4f} ± {statistics.stdev(xs):.4f}" if len(xs) > 1 else f"{m:.4f}"), m


ref = {k[2]: k for k in acc if k[0] == "python"}
blocks = sorted({b for v in acc.values() for b in v})
print(f"test blocks: {len(blocks)} disjoint blocks ({', '.join(map(str, blocks))}); "
      "Spearman: mean ± SD across blocks; Δ: paired difference from LightGBM on the same "
      "block (mean ± SD; blocks where datamix >= LightGBM)")
for fs, p in sorted(picks.items()):
    print(f"picked by 5-fold CV on the training rows ({fs}): "
          + ", ".join(f"block {b}: {m}" for b, m in sorted(p)))
print("| features | model | train/test rows | test Spearman | Δ Spearman vs LightGBM | test Pearson | test MSE | fit + predict s (median) | time / LightGBM's (medians) | paired time ratios, median [min-max] |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for key in sorted(acc, key=lambda k: (k[2], k[0] != "python", k[1])):
    impl, model, fs = key
    rs = acc[key]
    bs = sorted(rs)
    sp, _ = mean_sd([rs[b]["spearman"] for b in bs])
    pe, _ = mean_sd([rs[b]["pearson"] for b in bs])
    mse = statistics.fmean(rs[b]["mse"] for b in bs)
    t = statistics.median(secs[key])
    delta, ratio, pr = "", "n/a", ""
    if fs in ref:
        rb = acc[ref[fs]]
        ratio = f"{t / statistics.median(secs[ref[fs]]):.2f}"
        ps = paired[ref[fs]]
        rs_ = sorted(v / ps[k] for k, v in paired[key].items() if k in ps and ps[k] > 0)
        if rs_ and impl != "python":
            pr = f"{statistics.median(rs_):.2f} [{rs_[0]:.2f}-{rs_[-1]:.2f}]"
        if impl != "python":
            common = [b for b in bs if b in rb]
            ds = [rs[b]["spearman"] - rb[b]["spearman"] for b in common]
            txt, _ = mean_sd(ds)
            delta = f"{'+' if ds and statistics.fmean(ds) >= 0 else ''}{txt} ({sum(d >= 0 for d in ds)}/{len(ds)})"
    name = "LightGBM (RegMix settings)" if impl == "python" else f"datamix {model}"
    r0 = rs[bs[0]]
    print(f"| {fs} | {name} | {r0['train']}/{r0['test']} | {sp} | {delta} | {pe} | {mse:.3e} | {t:.4f} | {ratio} | {pr} |")
