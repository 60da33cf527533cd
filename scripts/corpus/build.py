#!/usr/bin/env python3
"""Build one domain (or the eval set, an end-task set, the tokenizer, the
manifest) of the datamix built-in corpus from downloaded registry artifacts.

Called by scripts/fetch-corpus.sh; Python standard library only. Every output
file is written to a temporary file in the same directory, fsynced, then
renamed, so a crash never leaves a partial output. Output is deterministic:
the same inputs give the same bytes.

    build.py domain NAME --out FILE --sources SOURCES.json [--small-bytes N]
    build.py task NAME --out FILE --sources SOURCES.json [--small-items N]
    build.py tokenizer --tgz FILE --out FILE
    build.py manifest --data DIR
    build.py verify --data DIR
"""

import argparse
import bz2
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import xml.etree.ElementTree as ET
import zipfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rdata  # noqa: E402

# Bumped when the output of any builder changes; part of every step's stamp.
BUILDER_VERSION = 2

WIKI_MEMBER = "gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
WIKI_SHA256 = "a53f4648dec40467ebdcbc7a1307eddb51fe6e28e9309f6ebde81ba0d04bea2d"
# The Google word-analogy test set (Mikolov et al., 2013), shipped in the same wheel.
ANALOGY_MEMBER = "gensim/test/test_data/questions-words.txt"
ANALOGY_SHA256 = "8c29b3332afc46f3fb8be04cb5297bf96f39aa7131272dff57869b4485b22a36"
AFINN_MEMBER = "package/data/words.json"

LICENSES = {
    "moby-dick": "public domain text; package data CC0-1.0 / PDDL-1.0 (@stdlib, code Apache-2.0)",
    "janeaustenr": "public domain text; R package MIT",
    "wikipedia": "CC-BY-SA-3.0 / GFDL (Wikipedia text), shipped in gensim (LGPL-2.1-only)",
    "kernel_docs": "GPL-2.0 (Linux kernel documentation; some files carry other SPDX tags, e.g. GFDL or CC-BY-4.0, in their headers)",
    "rust_code": "MIT OR Apache-2.0 (Rust standard library)",
    "python_code": "PSF-2.0 (Python standard library)",
    "email": "SpamAssassin public corpus; @stdlib packaging: data CC0-1.0 / PDDL-1.0",
    "legal": "licence texts as published by SPDX (each text's own terms); spdx-license-list CC0-1.0",
    "sotu": "public domain (works of the US Government); @stdlib packaging: data CC0-1.0 / PDDL-1.0",
    "word_analogy": "Apache-2.0 (questions-words.txt from Google's word2vec, as shipped in gensim, LGPL-2.1-only)",
    "word_sentiment": "AFINN-111 by Finn Årup Nielsen: database ODC-By-1.0, contents CC-BY-4.0 (attribution required); @stdlib code Apache-2.0",
}


class BuildError(Exception):
    pass


# --------------------------------------------------------------------------
# helpers


def die(msg):
    print(f"fetch-corpus: error: {msg}", file=sys.stderr)
    sys.exit(1)


def decode(raw, where):
    """UTF-8 if valid, else Latin-1 (never fails). Returns (text, encoding)."""
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return raw.decode("latin-1"), "latin-1"


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def atomic_write(path, write_fn, binary=False):
    """Call write_fn(fileobj) on a temp file beside `path`, fsync, rename."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=d)
    try:
        with os.fdopen(fd, "wb" if binary else "w", encoding=None if binary else "utf-8",
                       newline=None if binary else "\n") as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def tar_members(tf, want):
    """Yield (name, bytes) for regular files in a streaming tarfile whose
    normalised name satisfies want(name)."""
    for m in tf:
        if not m.isfile():
            continue
        name = m.name[2:] if m.name.startswith("./") else m.name
        if want(name):
            yield name, tf.extractfile(m).read()


def deb_files(deb, want):
    """Regular files of a .deb matching want(path), read by streaming
    `dpkg-deb --fsys-tarfile` (nothing is unpacked to disk)."""
    proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", deb], stdout=subprocess.PIPE)
    try:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tf:
            out = list(tar_members(tf, want))
    finally:
        proc.stdout.close()
        rc = proc.wait()
    if rc != 0:
        raise BuildError(f"dpkg-deb --fsys-tarfile {deb} failed (exit {rc})")
    return out


def tgz_files(tgz, want):
    with tarfile.open(tgz, mode="r:gz") as tf:
        return list(tar_members(tf, want))


def doc(domain, doc_id, text, source, path, **extra):
    meta = {"domain": domain, "source": source, "path": path}
    meta.update({k: v for k, v in extra.items() if v is not None})
    return {"id": doc_id, "text": text, "metadata": meta}


def select_small(docs, budget):
    """Deterministic ~budget-byte subset spread over the whole domain: take
    documents in order of sha256(id) while they fit, keep original order."""
    if budget is None:
        return docs
    order = sorted(range(len(docs)), key=lambda i: hashlib.sha256(docs[i]["id"].encode()).hexdigest())
    chosen, total = [], 0
    for i in order:
        n = len(docs[i]["text"].encode("utf-8"))
        if total + n <= budget or not chosen:
            chosen.append(i)
            total += n
        if total >= 0.95 * budget:
            break
    return [docs[i] for i in sorted(chosen)]


def source_of(sources, key):
    try:
        return sources[key]
    except KeyError:
        raise BuildError(f"source '{key}' missing from the sources file (was it downloaded?)")


# --------------------------------------------------------------------------
# domain builders: each returns a list of documents in a stable order


def build_books(src):
    docs = []
    moby = source_of(src, "moby-dick")
    files = dict(tgz_files(moby["file"], lambda n: re.fullmatch(r"package/data/\w+\.txt", n) is not None))
    chapters = sorted((int(m.group(1)), n) for n in files
                      if (m := re.fullmatch(r"package/data/chapter_(\d+)\.txt", n)))
    if len(chapters) < 100:
        raise BuildError(f"{moby['file']}: expected ~135 chapter_*.txt files, found {len(chapters)}")
    order = ["package/data/etymology.txt", "package/data/extracts.txt"]
    order += [n for _, n in chapters] + ["package/data/epilogue.txt"]
    for n in order:
        if n not in files:
            continue
        text, _ = decode(files[n], n)
        stem = os.path.basename(n)[:-4]
        docs.append(doc("books", f"books/moby-dick/{stem}", text, moby["label"], n[len("package/"):],
                        title="Moby-Dick; or, The Whale", author="Herman Melville",
                        chapter=stem, license=LICENSES["moby-dick"]))

    austen = source_of(src, "janeaustenr")
    files = dict(deb_files(austen["file"], lambda n: n.endswith("/janeaustenr/data/Rdata.rdx")
                           or n.endswith("/janeaustenr/data/Rdata.rdb")))
    rdx = [v for k, v in files.items() if k.endswith(".rdx")]
    rdb = [v for k, v in files.items() if k.endswith(".rdb")]
    if not rdx or not rdb:
        raise BuildError(f"{austen['file']}: no janeaustenr/data/Rdata.rdx + Rdata.rdb inside")
    rdb_path = [k for k in files if k.endswith(".rdb")][0]
    novels = rdata.load_lazy_db(rdx[0], rdb[0])
    titles = {"sensesensibility": "Sense and Sensibility", "prideprejudice": "Pride and Prejudice",
              "mansfieldpark": "Mansfield Park", "emma": "Emma",
              "northangerabbey": "Northanger Abbey", "persuasion": "Persuasion"}
    if set(titles) - set(novels):
        raise BuildError(f"{austen['file']}: Rdata lacks novels {sorted(set(titles) - set(novels))}")
    for key in ["sensesensibility", "prideprejudice", "mansfieldpark", "emma", "northangerabbey", "persuasion"]:
        lines = ["" if x is None else x for x in novels[key].values]
        for i, (heading, text) in enumerate(split_chapters(lines)):
            docs.append(doc("books", f"books/janeaustenr/{key}/{i:03d}", text, austen["label"],
                            f"{rdb_path}#{key}", title=titles[key], author="Jane Austen",
                            chapter=heading, license=LICENSES["janeaustenr"]))
    return docs


CHAPTER_RE = re.compile(r"^(CHAPTER|Chapter) ([IVXLC]+|\d+)\.?\s*$")
VOLUME_RE = re.compile(r"^VOLUME [IVX]+\s*$")


def split_chapters(lines):
    """Split a novel (list of lines) into (heading, text) chapters. Front
    matter joins the first chapter; a VOLUME line joins the chapter after it."""
    starts = [i for i, l in enumerate(lines) if CHAPTER_RE.match(l)]
    if not starts:
        return [("whole", "\n".join(lines).strip() + "\n")]
    cuts = [0]
    for s in starts[1:]:
        j = s - 1
        while j > 0 and not lines[j].strip():
            j -= 1
        cuts.append(j if VOLUME_RE.match(lines[j]) else s)
    cuts.append(len(lines))
    out = []
    volume = None
    for k in range(len(starts)):
        chunk = lines[cuts[k]:cuts[k + 1]]
        volume = next((l.strip() for l in chunk if VOLUME_RE.match(l)), volume)
        heading = lines[starts[k]].strip()
        out.append((f"{volume}, {heading}" if volume else heading, "\n".join(chunk).strip() + "\n"))
    return out


def build_wikipedia(src):
    s = source_of(src, "gensim")
    with zipfile.ZipFile(s["file"]) as z:
        try:
            raw = z.read(WIKI_MEMBER)
        except KeyError:
            raise BuildError(f"{s['file']}: no {WIKI_MEMBER} inside the wheel")
    got = hashlib.sha256(raw).hexdigest()
    if got != WIKI_SHA256:
        raise BuildError(f"{WIKI_MEMBER}: sha256 {got}, expected {WIKI_SHA256}")
    docs = []
    ns = ""
    for event, el in ET.iterparse(io.BytesIO(bz2.decompress(raw)), events=("start", "end")):
        if event == "start":
            if not ns and el.tag.startswith("{"):
                ns = el.tag[:el.tag.index("}") + 1]
            continue
        if el.tag != ns + "page":
            continue
        title = el.findtext(ns + "title")
        page_id = el.findtext(ns + "id")
        namespace = el.findtext(ns + "ns")
        rev = el.find(ns + "revision")
        text = rev.findtext(ns + "text") if rev is not None else None
        redirect = el.find(ns + "redirect") is not None
        el.clear()
        if text is None or redirect:
            continue
        if text.lstrip().upper().startswith("#REDIRECT") or namespace not in (None, "0"):
            continue
        docs.append(doc("wikipedia", f"wikipedia/{page_id}", text, s["label"], WIKI_MEMBER,
                        title=title, page_id=int(page_id), license=LICENSES["wikipedia"]))
    return docs


def build_files_from_debs(domain, src, keys, want, relpath, extra=None):
    docs = []
    for key in keys:
        s = source_of(src, key)
        for name, raw in sorted(deb_files(s["file"], want)):
            text, enc = decode(raw, name)
            if not text.strip():
                continue
            rel = relpath(name)
            meta = {"license": LICENSES.get(domain), "encoding": enc if enc != "utf-8" else None}
            if extra:
                meta.update(extra(name))
            docs.append(doc(domain, f"{domain}/{rel}", text, s["label"], name, **meta))
    if not docs:
        raise BuildError(f"{domain}: no matching files in {', '.join(source_of(src, k)['file'] for k in keys)}")
    return docs


def build_kernel_docs(src):
    pat = re.compile(r"usr/share/doc/linux-doc-[^/]+/html/_sources/(.+)")

    def want(n):
        m = pat.fullmatch(n)
        return m is not None and not m.group(1).startswith("translations/") and n.endswith(".txt")

    return build_files_from_debs("kernel_docs", src, ["linux-doc"], want, lambda n: pat.fullmatch(n).group(1))


def build_rust_code(src):
    pat = re.compile(r"usr/src/rustc-[^/]+/library/(.+\.rs)")
    return build_files_from_debs("rust_code", src, ["rust-src"], lambda n: pat.fullmatch(n) is not None,
                                 lambda n: pat.fullmatch(n).group(1))


def build_python_code(src):
    pat = re.compile(r"usr/lib/python3\.\d+/(.+\.py)")
    skip = {"test", "tests", "idle_test"}

    def want(n):
        m = pat.fullmatch(n)
        return m is not None and not (set(m.group(1).split("/")[:-1]) & skip)

    return build_files_from_debs("python_code", src, ["libpython-minimal", "libpython-stdlib"], want,
                                 lambda n: pat.fullmatch(n).group(1))


def build_email(src):
    s = source_of(src, "spam-assassin")
    pat = re.compile(r"package/data/([\w-]+)/([^/]+)\.txt")
    docs = []
    for name, raw in sorted(tgz_files(s["file"], lambda n: pat.fullmatch(n) is not None)):
        group, stem = pat.fullmatch(name).groups()
        text, enc = decode(raw, name)
        docs.append(doc("email", f"email/{group}/{stem}", text, s["label"], name[len("package/"):],
                        group=group, label="spam" if group.startswith("spam") else "ham",
                        encoding=enc if enc != "utf-8" else None, license=LICENSES["email"]))
    if len(docs) < 1000:
        raise BuildError(f"{s['file']}: expected ~6000 messages, found {len(docs)}")
    return docs


def build_legal(src):
    s = source_of(src, "spdx-license-list")
    pat = re.compile(r"package/licenses/(.+)\.json")
    docs = []
    for name, raw in sorted(tgz_files(s["file"], lambda n: pat.fullmatch(n) is not None)):
        try:
            rec = json.loads(raw)
        except ValueError as e:
            raise BuildError(f"{s['file']}:{name}: invalid JSON ({e})")
        text = rec.get("licenseText")
        if not isinstance(text, str) or not text.strip():
            continue
        spdx = pat.fullmatch(name).group(1)
        docs.append(doc("legal", f"legal/{spdx}", text, s["label"], name[len("package/"):],
                        spdx_id=spdx, name=rec.get("name"), osi_approved=rec.get("osiApproved"),
                        license=LICENSES["legal"]))
    if len(docs) < 100:
        raise BuildError(f"{s['file']}: expected ~700 licence texts, found {len(docs)}")
    return docs


def build_academic(src):
    docs = []
    rnw = re.compile(r"usr/lib/R/(?:site-)?library/([^/]+)/(.+\.Rnw)")
    desc = re.compile(r"usr/lib/R/(?:site-)?library/([^/]+)/DESCRIPTION")
    keys = sorted(k for k in src if k.startswith("r-cran-") and k != "r-cran-janeaustenr")
    if not keys:
        raise BuildError("academic: no r-cran-* sources downloaded")
    for key in keys:
        s = source_of(src, key)
        files = deb_files(s["file"], lambda n: rnw.fullmatch(n) is not None or desc.fullmatch(n) is not None)
        lic = {}
        for name, raw in files:
            if m := desc.fullmatch(name):
                got = re.search(r"^License:\s*(.+)$", raw.decode("utf-8", "replace"), re.M)
                lic[m.group(1)] = got.group(1).strip() if got else None
        found = 0
        for name, raw in sorted(files):
            m = rnw.fullmatch(name)
            if not m:
                continue
            text, enc = decode(raw, name)
            pkg = m.group(1)
            docs.append(doc("academic", f"academic/{pkg}/{m.group(2)}", text, s["label"], name,
                            r_package=pkg, license=lic.get(pkg),
                            encoding=enc if enc != "utf-8" else None))
            found += 1
        if not found:
            raise BuildError(f"{s['file']}: no .Rnw vignette sources inside")
    return docs


def build_sotu(src):
    s = source_of(src, "sotu")
    pat = re.compile(r"package/data/(\d{4}_[\w]+)\.json")
    docs = []
    for name, raw in sorted(tgz_files(s["file"], lambda n: pat.fullmatch(n) is not None)):
        rec = json.loads(raw)
        stem = pat.fullmatch(name).group(1)
        docs.append(doc("sotu", f"sotu/{stem}", rec["text"], s["label"], name[len("package/"):],
                        year=rec.get("year"), president=rec.get("name"), party=rec.get("party"),
                        license=LICENSES["sotu"]))
    if len(docs) < 100:
        raise BuildError(f"{s['file']}: expected ~230 addresses, found {len(docs)}")
    return docs


BUILDERS = {
    "books": build_books,
    "wikipedia": build_wikipedia,
    "kernel_docs": build_kernel_docs,
    "rust_code": build_rust_code,
    "python_code": build_python_code,
    "email": build_email,
    "legal": build_legal,
    "academic": build_academic,
    "sotu": build_sotu,
}


# --------------------------------------------------------------------------
# end-task sets: items {"id", "context", "answer", "choices"?, "metadata"},
# scored on the answer tokens only. `context` ends where the answer starts
# (no trailing space); `answer` carries its own leading space. The licence
# is recorded once, in MANIFEST.json (tasks.<name>.license), not per item.


def task_item(task, item_id, context, answer, choices, source, path, **extra):
    meta = {"task": task, "source": source, "path": path}
    meta.update({k: v for k, v in extra.items() if v is not None})
    item = {"id": item_id, "context": context, "answer": answer}
    if choices is not None:
        item["choices"] = choices
    item["metadata"] = meta
    return item


def check_item(item):
    """Raise BuildError unless `item` is a well-formed task item."""
    where = item.get("id") or "<no id>"
    if not isinstance(item.get("id"), str) or not item["id"]:
        raise BuildError(f"{where}: missing string id")
    ctx, ans = item.get("context"), item.get("answer")
    if not isinstance(ctx, str) or not ctx.strip():
        raise BuildError(f"{where}: empty context")
    if not isinstance(ans, str) or not ans.strip():
        raise BuildError(f"{where}: empty answer")
    if ctx != ctx.rstrip():
        raise BuildError(f"{where}: context ends in whitespace (the answer carries the space)")
    if "choices" in item:
        ch = item["choices"]
        if (not isinstance(ch, list) or len(ch) < 2 or any(not isinstance(c, str) or not c.strip() for c in ch)
                or len(set(ch)) != len(ch) or ans not in ch):
            raise BuildError(f"{where}: choices must be >= 2 distinct non-empty strings including the answer")
    if not isinstance(item.get("metadata"), dict):
        raise BuildError(f"{where}: missing metadata object")


def _h(*parts):
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()


def parse_analogies(text):
    """questions-words.txt -> [(section, line_number, [a, b, c, d])]. Sections
    start with ': name'; every other non-blank line holds four words."""
    rows, section = [], None
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if line.startswith(":"):
            section = line[1:].strip()
            continue
        words = line.split()
        if section is None or len(words) != 4:
            raise BuildError(f"questions-words.txt:{lineno}: expected four words in a section, got {line!r}")
        rows.append((section, lineno, words))
    return rows


def analogy_items(rows, source, path, n_choices=4):
    """'a is to b as c is to' -> ' d'. Distractors: other second-of-pair
    words (b or d) of the same section, none of a/b/c/d, picked and ordered by
    hash, so the choices are all of one kind (countries, plurals, ...)."""
    answers = {}
    for section, _, w in rows:
        pool = answers.setdefault(section, [])
        for x in (w[1], w[3]):
            if x not in pool:
                pool.append(x)
    items, counts = [], {}
    for section, lineno, (a, b, c, d) in rows:
        k = counts[section] = counts.get(section, 0) + 1
        item_id = f"word_analogy/{section}/{k:05d}"
        pool = sorted((x for x in answers[section] if x not in (a, b, c, d)), key=lambda x: _h(item_id, x))
        if len(pool) < n_choices - 1:
            raise BuildError(f"{item_id}: section {section} has too few distinct answers for {n_choices} choices")
        choices = sorted([d] + pool[:n_choices - 1], key=lambda x: _h(item_id, "order", x))
        items.append(task_item("word_analogy", item_id, f"{a} is to {b} as {c} is to", " " + d,
                               [" " + x for x in choices], source, f"{path}:{lineno}",
                               section=section, words=[a, b, c, d]))
    return items


def sentiment_items(pairs, source, path):
    """AFINN [word, valence] pairs -> 'The sentiment of the word "w" is' ->
    ' positive' / ' negative'. Neutral (valence 0) entries are skipped."""
    items, seen = [], set()
    for word, valence in pairs:
        if not isinstance(word, str) or not word.strip() or not isinstance(valence, int):
            raise BuildError(f"{path}: bad AFINN entry {[word, valence]!r}")
        if valence == 0:
            continue
        if word in seen:
            raise BuildError(f"{path}: duplicate AFINN word {word!r}")
        seen.add(word)
        polarity = "positive" if valence > 0 else "negative"
        items.append(task_item("word_sentiment", f"word_sentiment/{word}", f'The sentiment of the word "{word}" is',
                               " " + polarity, [" positive", " negative"], source, path,
                               word=word, valence=valence))
    return items


def select_items(items, cap):
    """Deterministic subset of at most `cap` items spread over the whole set:
    the first `cap` in order of sha256(id), written in source order."""
    if cap is None or len(items) <= cap:
        return items
    order = sorted(range(len(items)), key=lambda i: hashlib.sha256(items[i]["id"].encode()).hexdigest())
    return [items[i] for i in sorted(order[:cap])]


def build_word_analogy(src):
    s = source_of(src, "gensim")
    with zipfile.ZipFile(s["file"]) as z:
        try:
            raw = z.read(ANALOGY_MEMBER)
        except KeyError:
            raise BuildError(f"{s['file']}: no {ANALOGY_MEMBER} inside the wheel")
    got = hashlib.sha256(raw).hexdigest()
    if got != ANALOGY_SHA256:
        raise BuildError(f"{ANALOGY_MEMBER}: sha256 {got}, expected {ANALOGY_SHA256}")
    items = analogy_items(parse_analogies(raw.decode("utf-8")), s["label"], ANALOGY_MEMBER)
    if len(items) != 19544:
        raise BuildError(f"{ANALOGY_MEMBER}: expected 19544 analogies, found {len(items)}")
    return items


def build_word_sentiment(src):
    s = source_of(src, "afinn-111")
    files = dict(tgz_files(s["file"], lambda n: n == AFINN_MEMBER))
    if not files:
        raise BuildError(f"{s['file']}: no {AFINN_MEMBER} inside")
    try:
        pairs = json.loads(files[AFINN_MEMBER])
    except ValueError as e:
        raise BuildError(f"{s['file']}:{AFINN_MEMBER}: invalid JSON ({e})")
    items = sentiment_items(pairs, s["label"], AFINN_MEMBER[len("package/"):])
    if len(items) < 2000:
        raise BuildError(f"{s['file']}: expected ~2476 rated AFINN-111 words, found {len(items)}")
    return items


TASK_BUILDERS = {
    "word_analogy": build_word_analogy,
    "word_sentiment": build_word_sentiment,
}
TASK_SOURCES = {"word_analogy": ["gensim"], "word_sentiment": ["afinn-111"]}


# --------------------------------------------------------------------------
# commands


def write_jsonl(path, docs):
    ids = set()
    for d in docs:
        if d["id"] in ids:
            raise BuildError(f"duplicate document id {d['id']}")
        ids.add(d["id"])

    def w(f):
        for d in docs:
            f.write(json.dumps(d, ensure_ascii=False, separators=(", ", ": ")))
            f.write("\n")

    atomic_write(path, w)


def jsonl_stats(path):
    docs = nbytes = 0
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            try:
                d = json.loads(line)
                text = d["text"]
                assert isinstance(text, str) and isinstance(d["id"], str) and isinstance(d["metadata"], dict)
            except Exception as e:
                raise BuildError(f"{path}:{lineno}: not a valid document line ({e!r})")
            docs += 1
            nbytes += len(text.encode("utf-8"))
    return docs, nbytes


DOMAIN_SOURCES = {
    "books": ["moby-dick", "janeaustenr"],
    "wikipedia": ["gensim"],
    "kernel_docs": ["linux-doc"],
    "rust_code": ["rust-src"],
    "python_code": ["libpython-minimal", "libpython-stdlib"],
    "email": ["spam-assassin"],
    "legal": ["spdx-license-list"],
    "academic": None,  # every r-cran-* source except janeaustenr
    "sotu": ["sotu"],
}

DOMAIN_LICENSES = {
    "books": "public domain texts (Moby-Dick, Jane Austen's six novels); packages: @stdlib data CC0-1.0/PDDL-1.0, janeaustenr MIT",
    "wikipedia": LICENSES["wikipedia"],
    "kernel_docs": LICENSES["kernel_docs"],
    "rust_code": LICENSES["rust_code"],
    "python_code": LICENSES["python_code"],
    "email": LICENSES["email"],
    "legal": LICENSES["legal"],
    "academic": "GPL-2 / GPL-3 / GPL (>= 2) / LGPL per R package (see each document's metadata.license)",
    "sotu": LICENSES["sotu"],
}


def load_sources(tsv):
    """sources.tsv (written by fetch-corpus.sh): key, registry, package, version, file."""
    out = {}
    with open(tsv) as f:
        for lineno, line in enumerate(f, 1):
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 5:
                raise BuildError(f"{tsv}:{lineno}: expected 5 tab-separated fields")
            key, registry, package, version, path = parts
            if not os.path.isfile(path):
                raise BuildError(f"{tsv}:{lineno}: source file {path} is missing")
            out[key] = {"registry": registry, "package": package, "version": version,
                        "file": path, "label": f"{package}@{version}"}
    return out


def code_hash():
    h = hashlib.sha256(str(BUILDER_VERSION).encode())
    here = os.path.dirname(os.path.abspath(__file__))
    for name in ("build.py", "rdata.py"):
        with open(os.path.join(here, name), "rb") as f:
            h.update(f.read())
    return h.hexdigest()


def domain_stamp(name, src, small_bytes, keys=None, small_key="small_bytes"):
    if keys is None:
        keys = DOMAIN_SOURCES[name]
    if keys is None:
        keys = sorted(k for k in src if k.startswith("r-cran-") and k != "r-cran-janeaustenr")
    parts = {"code": code_hash(), small_key: small_bytes,
             "sources": {k: [source_of(src, k)["label"], sha256_file(source_of(src, k)["file"])] for k in keys}}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def stats_path(out):
    """DATA/corpus/x.jsonl -> DATA/.stamps/corpus/x.jsonl.json (kept out of the
    corpus folders so that readers globbing them see only documents)."""
    folder, name = os.path.split(os.path.abspath(out))
    parent, sub = os.path.split(folder)
    return os.path.join(parent, ".stamps", sub, name + ".json")


def up_to_date(out, stamp):
    try:
        with open(stats_path(out)) as f:
            st = json.load(f)
        return st.get("stamp") == stamp and sha256_file(out) == st.get("sha256")
    except (OSError, ValueError):
        return False


def cmd_domain(args):
    src = load_sources(args.sources)
    stamp = domain_stamp(args.name, src, args.small_bytes)
    if up_to_date(args.out, stamp):
        print(f"  {args.name}: up to date ({args.out})")
        return
    docs = BUILDERS[args.name](src)
    full = len(docs)
    docs = select_small(docs, args.small_bytes)
    if not docs:
        raise BuildError(f"{args.name}: no documents")
    write_jsonl(args.out, docs)
    used = sorted({d["metadata"]["source"] for d in docs})
    nbytes = sum(len(d["text"].encode("utf-8")) for d in docs)
    stats = {"documents": len(docs), "documents_in_source": full, "bytes": nbytes,
             "file_bytes": os.path.getsize(args.out), "sha256": sha256_file(args.out),
             "sources": used, "stamp": stamp}
    atomic_write(stats_path(args.out), lambda f: json.dump(stats, f, indent=1, sort_keys=True))
    print(f"  {args.name}: {len(docs)} documents ({full} in source), {nbytes / 1e6:.2f} MB text")


def cmd_task(args):
    src = load_sources(args.sources)
    stamp = domain_stamp(args.name, src, args.small_items, keys=TASK_SOURCES[args.name], small_key="small_items")
    if up_to_date(args.out, stamp):
        print(f"  {args.name}: up to date ({args.out})")
        return
    items = TASK_BUILDERS[args.name](src)
    full = len(items)
    items = select_items(items, args.small_items)
    if not items:
        raise BuildError(f"{args.name}: no items")
    for it in items:
        check_item(it)
    write_jsonl(args.out, items)
    stats = {"items": len(items), "items_in_source": full, "file_bytes": os.path.getsize(args.out),
             "sha256": sha256_file(args.out), "sources": sorted({it["metadata"]["source"] for it in items}),
             "choices": sorted({len(it.get("choices", [])) for it in items}), "stamp": stamp}
    atomic_write(stats_path(args.out), lambda f: json.dump(stats, f, indent=1, sort_keys=True))
    print(f"  {args.name}: {len(items)} items ({full} in source)")


def cmd_tokenizer(args):
    files = dict(tgz_files(args.tgz, lambda n: n == "package/models/tokenizer.json"))
    if not files:
        raise BuildError(f"{args.tgz}: no package/models/tokenizer.json inside")
    raw = files["package/models/tokenizer.json"]
    tok = json.loads(raw)
    vocab = tok.get("model", {}).get("vocab", {})
    if (tok["model"].get("type") != "BPE" or len(vocab) != 50257 or vocab.get("Hello") != 15496
            or vocab.get("\u0120world") != 995):
        raise BuildError(f"{args.tgz}: tokenizer.json is not the GPT-2 byte-level BPE (50257 tokens) expected")
    if not any(t.get("id") == 50256 and t.get("content") == "<|endoftext|>" for t in tok.get("added_tokens", [])):
        raise BuildError(f"{args.tgz}: tokenizer.json lacks <|endoftext|> = 50256")
    if os.path.exists(args.out) and sha256_file(args.out) == hashlib.sha256(raw).hexdigest():
        print(f"  tokenizer: up to date ({args.out})")
        return
    atomic_write(args.out, lambda f: f.write(raw), binary=True)
    print(f"  tokenizer: {args.out} ({len(raw) / 1e6:.2f} MB, {len(vocab)} tokens)")


def cmd_manifest(args):
    src = load_sources(args.sources)
    man = {"format": 1, "mode": args.mode, "builder_version": BUILDER_VERSION,
           "domains": {}, "eval": {}, "tasks": {}, "tokenizer": None,
           "sources": {k: {f: s[f] for f in ("registry", "package", "version")} for k, s in sorted(src.items())}}
    for section, sub, names in (("domains", "corpus", args.domains), ("eval", "eval", args.eval)):
        for name in names.split(","):
            path = os.path.join(args.data, sub, name + ".jsonl")
            try:
                with open(stats_path(path)) as f:
                    st = json.load(f)
            except (OSError, ValueError) as e:
                raise BuildError(f"{stats_path(path)}: unreadable ({e}); re-run fetch-corpus.sh")
            if sha256_file(path) != st["sha256"]:
                raise BuildError(f"{path}: changed since it was built; re-run fetch-corpus.sh")
            man[section][name] = {
                "file": f"{sub}/{name}.jsonl", "documents": st["documents"],
                "documents_in_source": st["documents_in_source"], "bytes": st["bytes"],
                "file_bytes": st["file_bytes"], "sha256": st["sha256"], "sources": st["sources"],
                "license": DOMAIN_LICENSES[name]}
    for name in filter(None, (args.tasks or "").split(",")):
        path = os.path.join(args.data, "tasks", name + ".jsonl")
        try:
            with open(stats_path(path)) as f:
                st = json.load(f)
        except (OSError, ValueError) as e:
            raise BuildError(f"{stats_path(path)}: unreadable ({e}); re-run fetch-corpus.sh")
        if sha256_file(path) != st["sha256"]:
            raise BuildError(f"{path}: changed since it was built; re-run fetch-corpus.sh")
        man["tasks"][name] = {
            "file": f"tasks/{name}.jsonl", "items": st["items"], "items_in_source": st["items_in_source"],
            "file_bytes": st["file_bytes"], "sha256": st["sha256"], "sources": st["sources"],
            "choices": st["choices"], "license": LICENSES[name]}
    tok = os.path.join(args.data, "tokenizer", "gpt2.json")
    man["tokenizer"] = {"file": "tokenizer/gpt2.json", "sha256": sha256_file(tok),
                        "source": source_of(src, "tokenizer")["label"], "path": "package/models/tokenizer.json",
                        "vocab_size": 50257, "eos_token": "<|endoftext|>", "eos_id": 50256,
                        "license": "MIT (package LICENSE file; its package.json says Apache-2.0)"}
    out = os.path.join(args.data, "MANIFEST.json")
    atomic_write(out, lambda f: (json.dump(man, f, indent=2, sort_keys=True), f.write("\n")))
    print(f"  manifest: {out}")


def cmd_verify(args):
    """Exit 0 if MANIFEST.json exists and every file matches its hash."""
    path = os.path.join(args.data, "MANIFEST.json")
    with open(path) as f:
        man = json.load(f)
    entries = (list(man["domains"].values()) + list(man["eval"].values())
               + list(man.get("tasks", {}).values()) + [man["tokenizer"]])
    for e in entries:
        p = os.path.join(args.data, e["file"])
        if not os.path.exists(p) or sha256_file(p) != e["sha256"]:
            raise BuildError(f"{p}: missing or does not match MANIFEST.json")


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("domain")
    p.add_argument("name", choices=sorted(BUILDERS))
    p.add_argument("--out", required=True)
    p.add_argument("--sources", required=True)
    p.add_argument("--small-bytes", type=int)
    p = sub.add_parser("task")
    p.add_argument("name", choices=sorted(TASK_BUILDERS))
    p.add_argument("--out", required=True)
    p.add_argument("--sources", required=True)
    p.add_argument("--small-items", type=int)
    p = sub.add_parser("tokenizer")
    p.add_argument("--tgz", required=True)
    p.add_argument("--out", required=True)
    p = sub.add_parser("manifest")
    p.add_argument("--data", required=True)
    p.add_argument("--sources", required=True)
    p.add_argument("--mode", required=True, choices=["full", "small"])
    p.add_argument("--domains", required=True, help="comma-separated training domains")
    p.add_argument("--eval", required=True, help="comma-separated eval sets")
    p.add_argument("--tasks", default="", help="comma-separated end-task sets")
    p = sub.add_parser("verify")
    p.add_argument("--data", required=True)
    args = ap.parse_args()
    try:
        {"domain": cmd_domain, "task": cmd_task, "tokenizer": cmd_tokenizer, "manifest": cmd_manifest,
         "verify": cmd_verify}[args.cmd](args)
    except (BuildError, rdata.RDataError, OSError, KeyError, ValueError) as e:
        die(f"{args.cmd} {getattr(args, 'name', '')}: {e}")


if __name__ == "__main__":
    main()
