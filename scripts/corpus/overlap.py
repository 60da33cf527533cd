#!/usr/bin/env python3
"""Count training documents that share a word 13-gram with an eval set.

    overlap.py EVAL.jsonl TRAIN.jsonl... [--n 13] [--max-hits N]

Words are lower-cased runs of letters/digits. Prints, per training file, the
documents containing at least one eval n-gram (with a few examples). Exits 1
if any training file has more than --max-hits such documents (default 0).
This is a coarse check of the out-of-domain claim in docs/corpus.md; the
partitioner's decontamination step is the real filter.
"""

import argparse
import hashlib
import json
import re
import sys

WORD = re.compile(r"[a-z0-9]+")


def ngrams(text, n):
    words = WORD.findall(text.lower())
    for i in range(len(words) - n + 1):
        yield hashlib.blake2b(" ".join(words[i:i + n]).encode(), digest_size=8).digest()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("eval")
    ap.add_argument("train", nargs="+")
    ap.add_argument("--n", type=int, default=13)
    ap.add_argument("--max-hits", type=int, default=0)
    args = ap.parse_args()
    grams = set()
    with open(args.eval, encoding="utf-8") as f:
        for line in f:
            grams.update(ngrams(json.loads(line)["text"], args.n))
    print(f"{args.eval}: {len(grams)} distinct {args.n}-grams")
    bad = False
    for path in args.train:
        hits, total = [], 0
        with open(path, encoding="utf-8") as f:
            for line in f:
                d = json.loads(line)
                total += 1
                shared = sum(1 for g in ngrams(d["text"], args.n) if g in grams)
                if shared:
                    hits.append((shared, d["id"]))
        hits.sort(reverse=True)
        print(f"{path}: {len(hits)} of {total} documents share a {args.n}-gram"
              + (f" (top: {', '.join(f'{i} x{c}' for c, i in hits[:3])})" if hits else ""))
        bad |= len(hits) > args.max_hits
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
