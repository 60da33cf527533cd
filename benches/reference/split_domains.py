"""Derives a 12-domain corpus from the built-in medium corpus (8 domains) for the
published-style swarm of benches/swarm.sh (RegMix fits a dozen-odd domains): four domains
are split by where their documents come from, the other four are kept.

  books       -> books_austen (r-cran-janeaustenr), books_moby (@stdlib moby-dick)
  email       -> email_ham (easy/hard ham groups), email_spam (spam groups)
  python_code -> python_stdlib (libpython3.11-stdlib), python_minimal (libpython3.11-minimal)
  academic    -> academic_a (survival, partykit, flexmix, pscl), academic_b (the others)

Usage: python3 split_domains.py <medium corpus dir> <out corpus dir>
Writes one JSON-lines file per domain, documents unchanged but for metadata.domain.
"""
import json
import os
import sys

ACADEMIC_A = {"survival", "partykit", "flexmix", "pscl"}


def domain(d):
    m = d["metadata"]
    base, src = m["domain"], m.get("source", "")
    if base == "books":
        return "books_austen" if "janeaustenr" in src else "books_moby"
    if base == "email":
        return "email_spam" if m.get("group", "").startswith("spam") else "email_ham"
    if base == "python_code":
        return "python_stdlib" if "stdlib" in src else "python_minimal"
    if base == "academic":
        return "academic_a" if m.get("r_package") in ACADEMIC_A else "academic_b"
    return base


def main(src, dst):
    os.makedirs(dst, exist_ok=True)
    out = {}
    for name in sorted(os.listdir(src)):
        if not name.endswith(".jsonl"):
            continue
        for line in open(os.path.join(src, name), encoding="utf-8"):
            d = json.loads(line)
            dom = domain(d)
            d["metadata"]["domain"] = dom
            out.setdefault(dom, []).append(json.dumps(d, ensure_ascii=False))
    for dom, lines in out.items():
        tmp = os.path.join(dst, f".{dom}.jsonl.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        os.replace(tmp, os.path.join(dst, f"{dom}.jsonl"))
    for dom in sorted(out):
        size = sum(len(json.loads(l)["text"]) for l in out[dom])
        print(f"{dom}: {len(out[dom])} documents, {size} characters")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
