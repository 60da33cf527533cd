#!/usr/bin/env python3
"""Count training documents that share a word 13-gram with an eval set.

    overlap.py EVAL.jsonl TRAIN.jsonl... [--n 13] [--max-hits N]
    overlap.py --items TASKS.jsonl TRAIN.jsonl... [--n 13] [--max-hits N]

Words are lower-cased runs of letters/digits. Prints, per training file, the
documents containing at least one eval n-gram (with a few examples). Exits 1
if any training file has more than --max-hits such documents (default 0).
This is a coarse check of the out-of-domain claim in docs/corpus.md; the
partitioner's decontamination step is the real filter.

With --items the first file is an end-task set (context + answer per line) and
the count is of task items instead: an item is contaminated if its text
(context + answer) shares a word n-gram with any training document; an item
shorter than n words counts if all its words occur in that order in a training
document. Exits 1 if more than --max-hits items are.
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


def item_grams(text, n):
    """The word n-grams of a task item, or the whole item if it is shorter."""
    words = WORD.findall(text.lower())
    if len(words) < n:
        return [tuple(words)] if words else []
    return [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]


def contaminated_items(items, docs, n):
    """items: [(id, text)], docs: iterable of (id, text). Returns
    {item id: first training doc id sharing a gram}; reads each doc once."""
    index = {}  # length -> {first word -> {gram -> [item ids]}}
    for item_id, text in items:
        for g in item_grams(text, n):
            index.setdefault(len(g), {}).setdefault(g[0], {}).setdefault(g, []).append(item_id)
    found = {}
    for doc_id, text in docs:
        words = WORD.findall(text.lower())
        for length, by_first in index.items():
            for i in range(len(words) - length + 1):
                grams = by_first.get(words[i])
                if grams is None:
                    continue
                for item_id in grams.get(tuple(words[i:i + length]), ()):
                    found.setdefault(item_id, doc_id)
    return found


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)


def main_items(args):
    items = [(d["id"], d["context"] + d["answer"]) for d in read_jsonl(args.eval)]
    short = sum(1 for _, t in items if len(WORD.findall(t.lower())) < args.n)
    docs = ((d["id"], d["text"]) for path in args.train for d in read_jsonl(path))
    found = contaminated_items(items, docs, args.n)
    print(f"{args.eval}: {len(items)} items, {short} shorter than {args.n} words (matched whole)")
    print(f"{len(found)} of {len(items)} items share a word {args.n}-gram (or, if shorter, all their words "
          f"in order) with {len(args.train)} training file(s)"
          + (f" (e.g. {', '.join(f'{k} in {v}' for k, v in sorted(found.items())[:3])})" if found else ""))
    sys.exit(1 if len(found) > args.max_hits else 0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", action="store_true", help="the first file is an end-task set")
    ap.add_argument("eval")
    ap.add_argument("train", nargs="+")
    ap.add_argument("--n", type=int, default=13)
    ap.add_argument("--max-hits", type=int, default=0)
    args = ap.parse_args()
    if args.items:
        return main_items(args)
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
