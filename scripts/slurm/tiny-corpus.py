#!/usr/bin/env python3
"""A tiny three-domain corpus and two study configs (local / slurm out_dirs) for
scripts/test-slurm.sh: `tiny-corpus.py DIR` writes DIR/corpus, DIR/eval, DIR/local.toml
and DIR/slurm.toml."""
import json
import os
import sys

d = sys.argv[1]
os.makedirs(f"{d}/corpus", exist_ok=True)
os.makedirs(f"{d}/eval", exist_ok=True)
words = [
    ["alpha", "beta", "gamma", "delta", "omega"],
    ["one", "two", "three", "four", "five", "six"],
    ["fn", "let", "mut", "impl", "match"],
]
x = 0x9E3779B9


def nxt():
    global x
    x = (x * 6364136223846793005 + 1442695040888963407) % 2**64
    return x >> 33


for i, name in enumerate(["greek", "numbers", "code"]):
    with open(f"{d}/corpus/{name}.jsonl", "w") as f:
        for doc in range(30):
            text = " ".join(words[i][nxt() % len(words[i])] for _ in range(80))
            f.write(json.dumps({"id": f"{name}-{doc}", "text": text, "metadata": {"domain": name}}) + "\n")
with open(f"{d}/eval/mixed.jsonl", "w") as f:
    f.write(json.dumps({"id": "m", "text": " ".join(words[i % 3][nxt() % 5] for i in range(60))}) + "\n")

for out in ["local", "slurm"]:
    with open(f"{d}/{out}.toml", "w") as f:
        f.write(f"""out_dir = "{d}/{out}"
backend = "cpu"
seed = 0
[data]
corpus = "{d}/corpus"
eval_sets = ["{d}/eval"]
vocab_size = 300
seq_len = 16
unit_tokens = 512
heldout_fraction = 0.2
eval_tokens = 256
[model]
preset = "tiny"
d_model = 32
[seed_model]
steps = 4
batch_size = 2
lr = 3e-3
warmup_steps = 1
[continued]
steps = 2
batch_size = 2
lr = 1e-3
warmup_steps = 1
[mixtures]
count = 7
test = 3
alpha = 1.0
[replicates]
mixtures = [0]
seeds = 1
[subsets]
count = 3
k = 2
[analysis]
folds = 0
family = "ridge"
[search]
min_weight = 0.0
validate = true
validate_seeds = 1
""")
