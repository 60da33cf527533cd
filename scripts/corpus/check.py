#!/usr/bin/env python3
"""Smoke checks for a corpus built by scripts/fetch-corpus.sh.

    check.py DATA_DIR

Checks MANIFEST.json against the files: every training domain and eval set
present and non-empty, every line a valid document (string id unique within
the file, non-empty text, metadata.domain/source/path), counts and sha256
matching the manifest, every end-task set (each line an item with a unique
id, non-empty context and answer, the answer among its choices if it has any),
and the GPT-2 tokenizer file. Prints one line per
check and a final 'N passed, N failed' line; exits 1 on any failure.
Depends on nothing but the data (no Debian byte-exactness is assumed).
"""

import hashlib
import json
import os
import sys

DOMAINS = ["books", "wikipedia", "kernel_docs", "rust_code", "python_code", "email", "legal", "academic"]
EVAL_SETS = ["sotu"]
TASK_SETS = ["word_analogy", "word_sentiment"]


class Checks:
    def __init__(self):
        self.passed = self.failed = 0

    def check(self, name, fn):
        try:
            detail = fn()
        except Exception as e:  # a failed check, whatever the cause
            self.failed += 1
            print(f"FAIL {name}: {e}")
        else:
            self.passed += 1
            print(f"ok   {name}" + (f": {detail}" if detail else ""))


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_jsonl(data, entry, domain):
    path = os.path.join(data, entry["file"])
    got = sha256_file(path)
    if got != entry["sha256"]:
        raise AssertionError(f"{path}: sha256 {got} != manifest {entry['sha256']}")
    ids, docs, nbytes = set(), 0, 0
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            where = f"{path}:{lineno}"
            try:
                d = json.loads(line)
            except ValueError as e:
                raise AssertionError(f"{where}: invalid JSON ({e})")
            if not isinstance(d.get("id"), str) or not d["id"]:
                raise AssertionError(f"{where}: missing string id")
            if d["id"] in ids:
                raise AssertionError(f"{where}: duplicate id {d['id']}")
            ids.add(d["id"])
            if not isinstance(d.get("text"), str) or not d["text"].strip():
                raise AssertionError(f"{where}: missing or empty text")
            m = d.get("metadata")
            if not isinstance(m, dict):
                raise AssertionError(f"{where}: missing metadata object")
            if m.get("domain") != domain:
                raise AssertionError(f"{where}: metadata.domain {m.get('domain')!r}, expected {domain!r}")
            for k in ("source", "path"):
                if not isinstance(m.get(k), str) or not m[k]:
                    raise AssertionError(f"{where}: metadata.{k} missing")
            docs += 1
            nbytes += len(d["text"].encode("utf-8"))
    if docs == 0:
        raise AssertionError(f"{path}: no documents")
    if docs != entry["documents"] or nbytes != entry["bytes"]:
        raise AssertionError(f"{path}: {docs} documents / {nbytes} bytes, manifest says "
                             f"{entry['documents']} / {entry['bytes']}")
    return f"{docs} documents, {nbytes / 1e6:.2f} MB"


def check_task_line(line, where):
    """One end-task item: {"id", "context", "answer", "choices"?, "metadata"}."""
    try:
        d = json.loads(line)
    except ValueError as e:
        raise AssertionError(f"{where}: invalid JSON ({e})")
    if not isinstance(d, dict):
        raise AssertionError(f"{where}: not a JSON object")
    if not isinstance(d.get("id"), str) or not d["id"]:
        raise AssertionError(f"{where}: missing string id")
    for k in ("context", "answer"):
        if not isinstance(d.get(k), str) or not d[k].strip():
            raise AssertionError(f"{where}: missing or empty {k}")
    if "choices" in d:
        ch = d["choices"]
        if not isinstance(ch, list) or len(ch) < 2 or not all(isinstance(c, str) and c.strip() for c in ch):
            raise AssertionError(f"{where}: choices must be a list of >= 2 non-empty strings")
        if d["answer"] not in ch:
            raise AssertionError(f"{where}: answer {d['answer']!r} not among the choices")
    if not isinstance(d.get("metadata"), dict):
        raise AssertionError(f"{where}: missing metadata object")
    return d


def check_tasks(data, entry):
    path = os.path.join(data, entry["file"])
    if not os.path.isfile(path):
        raise AssertionError(f"{path}: missing")
    got = sha256_file(path)
    if got != entry["sha256"]:
        raise AssertionError(f"{path}: sha256 {got} != manifest {entry['sha256']}")
    ids, n = set(), 0
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            d = check_task_line(line, f"{path}:{lineno}")
            if d["id"] in ids:
                raise AssertionError(f"{path}:{lineno}: duplicate id {d['id']}")
            ids.add(d["id"])
            n += 1
    if n == 0:
        raise AssertionError(f"{path}: no items")
    if n != entry["items"]:
        raise AssertionError(f"{path}: {n} items, manifest says {entry['items']}")
    return f"{n} items"


def check_tokenizer(data, entry):
    path = os.path.join(data, entry["file"])
    if sha256_file(path) != entry["sha256"]:
        raise AssertionError(f"{path}: sha256 does not match the manifest")
    with open(path, encoding="utf-8") as f:
        tok = json.load(f)
    vocab = tok["model"]["vocab"]
    if len(vocab) != 50257 or vocab.get("Hello") != 15496 or vocab.get("\u0120world") != 995:
        raise AssertionError(f"{path}: not the GPT-2 vocabulary")
    if not any(t["id"] == 50256 and t["content"] == "<|endoftext|>" for t in tok["added_tokens"]):
        raise AssertionError(f"{path}: no <|endoftext|> = 50256")
    return "GPT-2 BPE, 50257 tokens"


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    data = sys.argv[1]
    c = Checks()
    man = {}

    def load():
        with open(os.path.join(data, "MANIFEST.json"), encoding="utf-8") as f:
            man.update(json.load(f))
        return f"mode {man.get('mode')}"

    c.check("MANIFEST.json", load)
    if man:
        for section, names in (("domains", DOMAINS), ("eval", EVAL_SETS)):
            for name in names:
                def one(name=name, section=section):
                    entry = man.get(section, {}).get(name)
                    if entry is None:
                        raise AssertionError(f"MANIFEST.json has no {section}.{name}")
                    if not entry.get("sources"):
                        raise AssertionError(f"{section}.{name}: no sources recorded")
                    return check_jsonl(data, entry, name)
                c.check(f"{section}/{name}", one)
        for name in TASK_SETS:
            def task(name=name):
                entry = man.get("tasks", {}).get(name)
                if entry is None:
                    raise AssertionError(f"MANIFEST.json has no tasks.{name}")
                if not entry.get("sources"):
                    raise AssertionError(f"tasks.{name}: no sources recorded")
                return check_tasks(data, entry)
            c.check(f"tasks/{name}", task)
        c.check("tokenizer", lambda: check_tokenizer(data, man["tokenizer"]))
    print(f"{c.passed} passed, {c.failed} failed")
    sys.exit(1 if c.failed else 0)


if __name__ == "__main__":
    main()
