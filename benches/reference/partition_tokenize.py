"""Reference for benches/partition.sh: tokenize + pack with the Python `tokenizers`
package and numpy, the way a typical nanoGPT-style prepare script does it.

Reads Dolma-style JSONL, encodes every text (encode_batch, Rust threads: RAYON_NUM_THREADS),
appends the end-of-text id, concatenates, cuts into fixed-length sequences and writes a
uint16 (or uint32) shard. Prints MB/s of input text.
"""

import argparse
import json
import os
import time

import numpy as np
from tokenizers import Tokenizer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--input", required=True)
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--seq-len", type=int, default=1024)
    ap.add_argument("--out", required=True)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    best = max(run(args) for _ in range(args.repeat))
    print(f"python_mb_s={best:.4f}")


def run(args):
    """One cold run (fresh tokenizer); returns MB/s of input text."""
    t0 = time.perf_counter()
    tok = Tokenizer.from_file(args.tokenizer)
    eot = tok.token_to_id("<|endoftext|>")
    dtype = np.uint16 if tok.get_vocab_size() <= 1 << 16 else np.uint32
    chunks, nbytes, batch = [], 0, []

    def flush(batch):
        for enc in tok.encode_batch_fast(batch, add_special_tokens=False):
            ids = np.asarray(enc.ids, dtype=dtype)
            chunks.append(ids)
            chunks.append(np.array([eot], dtype=dtype))

    with open(args.input, encoding="utf-8") as f:
        for line in f:
            text = json.loads(line)["text"]
            nbytes += len(text.encode("utf-8"))
            batch.append(text)
            if len(batch) == args.batch:
                flush(batch)
                batch = []
    if batch:
        flush(batch)
    stream = np.concatenate(chunks)
    n = len(stream) // args.seq_len
    packed = stream[: n * args.seq_len].reshape(n, args.seq_len)
    tmp = args.out + ".tmp"
    packed.tofile(tmp)
    os.replace(tmp, args.out)
    dt = time.perf_counter() - t0
    print(f"python_tokenize_pack: {nbytes / 1e6:.2f} MB text, {len(stream)} tokens, {dt:.2f} s, "
          f"{nbytes / 1e6 / dt:.2f} MB/s")
    return nbytes / 1e6 / dt


if __name__ == "__main__":
    main()
