"""Summarise benches/merge.sh: medians per configuration, ratios to mergekit
and to hot-cache read bandwidth (by wall time, and by CPU time since the
bench machine may be shared), peak RSS relative to one model, and the
largest difference between the datamix and mergekit outputs, and the
disk's write+fsync bandwidth (the floor for merges to a file). Also checks
that the hashes recorded in the datamix output are BLAKE3 of the inputs."""
import os
import re
import statistics
import sys

import numpy as np
from safetensors.numpy import load_file

results, readbw_log, writebw_log, one_model, ours, theirs = sys.argv[1:7]
rows = {}
for line in open(results):
    label, wall, user, sys_, rss = line.split()
    rows.setdefault(label, []).append((float(wall), float(user) + float(sys_), int(rss) * 1024))
bw = {"read": [], "readpar": [], "mmap": []}
bw_cpu = {"read": [], "readpar": [], "mmap": []}
for line in open(readbw_log):
    m = re.search(r"\(([\d.]+) s, cpu ([\d.]+) s", line)
    key = next(k for prefix, k in [("read(2) all", "readpar"), ("read(2)", "read"), ("", "mmap")]
               if line.startswith(prefix))
    bw[key].append(float(m.group(1)))
    bw_cpu[key].append(float(m.group(2)))
model_bytes = os.path.getsize(one_model)
input_bytes = 8 * model_bytes
med = lambda xs: statistics.median(xs)
print(f"\ninputs: 8 x {model_bytes / 1e6:.0f} MB = {input_bytes / 1e9:.2f} GB")
for k, label in [("read", "read(2), 1 thread"), ("readpar", "read(2), all threads"),
                 ("mmap", "mmap touch, all threads")]:
    if not bw[k]:
        continue
    t = med(bw[k])
    print(f"hot-cache read bandwidth, {label}: {input_bytes / t / 1e9:.2f} GB/s "
          f"(median {t:.3f} s wall, {med(bw_cpu[k]):.2f} CPU-s, of {len(bw[k])})")
wt = [float(re.search(r"\(([\d.]+) s,", l).group(1)) for l in open(writebw_log)]
if wt:
    print(f"disk write(2) + fsync of one model: {model_bytes / med(wt) / 1e9:.2f} GB/s "
          f"(median {med(wt):.3f} s, of {len(wt)}): the floor for a merge to a file is ~{med(wt):.2f} s")
# The fastest reference (the mmap touch here) is the goal's yardstick; the
# share of the all-threads read(2) bandwidth (what `dd`/`fio` report) is shown too.
best_bw_time = min(med(v) for v in bw.values() if v)
best_bw_cpu = min(med(v) for v in bw_cpu.values() if v)
par_time = med(bw["readpar"]) if bw["readpar"] else None
mk = med([w for w, _, _ in rows["mergekit"]]) if "mergekit" in rows else None
print(f"\n{'config':<22}{'wall s':>8}{'cpu s':>8}{'GB/s':>7}{'% read bw':>10}{'% by cpu':>9}{'% read(2)':>10}{'rss/model':>10}{'x mergekit':>11}")
for label, xs in rows.items():
    wall = med([w for w, _, _ in xs])
    cpu = med([c for _, c, _ in xs])
    rss = max(r for _, _, r in xs)
    speed = f"{mk / wall:.1f}" if mk else "-"
    print(f"{label:<22}{wall:>8.2f}{cpu:>8.2f}{input_bytes / wall / 1e9:>7.2f}"
          f"{100 * best_bw_time / wall:>9.0f}%{100 * best_bw_cpu / cpu:>8.0f}%"
          f"{(f'{100 * par_time / wall:.0f}%' if par_time else '-'):>10}{rss / model_bytes:>10.2f}{speed:>11}")
if os.path.exists(theirs):
    a, b = load_file(ours), load_file(theirs)
    assert set(a) == set(b), "tensor names differ"
    diff = max(float(np.max(np.abs(a[k].astype(np.float64) - b[k].astype(np.float64)))) for k in a)
    print(f"\nmax |datamix - mergekit| over all tensors: {diff:.3g}")

# The recorded input hashes (the last merge with hashing on wrote `ours`).
import json
with open(ours, "rb") as f:
    n = int.from_bytes(f.read(8), "little")
    record = json.loads(json.loads(f.read(n))["__metadata__"]["datamix.merge"])
hashes = [i.get("hash") for i in record["inputs"]]
try:
    import blake3
    ok = all(h == "blake3:" + blake3.blake3(open(i["path"], "rb").read()).hexdigest()
             for h, i in zip(hashes, record["inputs"]))
    print(f"recorded input hashes are BLAKE3 of the inputs: {ok}")
except ImportError:
    print(f"recorded input hashes: {hashes[0]} ... (pip install blake3 to check them)")
