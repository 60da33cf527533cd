"""The throughput table of benches/decoder.sh and benches/decoder-gpu.sh: from the JSON
rows of the Burn bench and the PyTorch twin, tokens/s, the ratio to PyTorch, and the
model FLOPs utilisation against every measured matmul peak in the rows.

    python3 benches/reference/decoder_table.py ROWS.jsonl
"""
import json
import sys

rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
peaks = [r for r in rows if r["impl"].startswith("sgemm-peak")]
torch = next(r for r in rows if r["impl"] == "pytorch")
for p in peaks:
    print(f"{p['impl']} ({p.get('device', 'cpu')}, {p['threads']} threads): {p['gflops']:,.1f} GFLOP/s")
print(f"{torch['preset']}, {torch['params']:,} params, batch {torch['batch']} x {torch['seq']}, {torch['steps']} steps\n")
print("| impl | tokens/s | vs PyTorch |" + "".join(f" MFU ({p['impl']}) |" for p in peaks))
print("|---|---:|---:|" + "---:|" * len(peaks))
for r in rows:
    if "tokens_per_s" not in r:
        continue
    # PaLM's model FLOPs per token: 6N + 12 L d T (N counts a tied head once).
    flops = r["tokens_per_s"] * (6 * r["params"] + 12 * r["layers"] * r["d_model"] * r["seq"])
    mfu = "".join(f" {100 * flops / (p['gflops'] * 1e9):.0f}% |" for p in peaks)
    print(f"| {r['impl']} | {r['tokens_per_s']:,.0f} | {r['tokens_per_s'] / torch['tokens_per_s']:.2f}x |{mfu}")
