#!/usr/bin/env python3
"""`same-outcome.py A B`: exits 0 when two results/outcome.json files hold the same
numbers (wall-clock `seconds` fields aside), else prints the first difference."""
import json
import sys


def strip(v):
    if isinstance(v, dict):
        return {k: strip(x) for k, x in v.items() if k != "seconds"}
    if isinstance(v, list):
        return [strip(x) for x in v]
    return v


def diff(a, b, at):
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                return f"{at}.{k}: missing on one side"
            d = diff(a[k], b[k], f"{at}.{k}")
            if d:
                return d
        return None
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            d = diff(x, y, f"{at}[{i}]")
            if d:
                return d
        return None
    return None if a == b else f"{at}: {a!r} vs {b!r}"


a, b = (strip(json.load(open(p))) for p in sys.argv[1:3])
d = diff(a, b, "outcome")
if d:
    print(f"outcomes differ at {d}")
    sys.exit(1)
print("outcomes identical (timings aside)")
