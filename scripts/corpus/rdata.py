"""Minimal reader for R's serialization format and lazy-load databases.

Enough of R's `unserialize` (XDR binary format, versions 2 and 3) to read the
data objects an R package ships in `data/Rdata.rdb` + `data/Rdata.rdx`:
character / numeric / logical / integer vectors, lists, pairlists, attributes
and the common ALTREP classes (compact sequences, wrappers, deferred strings).
Everything else (closures, environments, byte code...) raises `RDataError`
rather than being guessed at. Python standard library only; no R needed.

Values map to Python as follows:
  - atomic vectors -> `RVector(type, values, attributes)` (NA -> None)
  - lists (VECSXP) -> `RVector("list", [...], attributes)`
  - pairlists -> list of (tag, value) tuples
  - symbols -> `RSymbol(name)`
  - NULL -> None
"""

import bz2
import gzip
import lzma
import struct
import zlib

# SEXP types (R Internals, "Serialization Formats").
NILSXP, SYMSXP, LISTSXP, CLOSXP, ENVSXP, PROMSXP, LANGSXP = 0, 1, 2, 3, 4, 5, 6
CHARSXP, LGLSXP, INTSXP, REALSXP, CPLXSXP, STRSXP = 9, 10, 13, 14, 15, 16
DOTSXP, VECSXP, EXPRSXP, RAWSXP, S4SXP = 17, 19, 20, 24, 25
# Pseudo-SEXP types used only in the stream.
ALTREP_SXP, ATTRLISTSXP, ATTRLANGSXP = 238, 239, 240
BASEENV_SXP, EMPTYENV_SXP, GLOBALENV_SXP = 241, 242, 253
UNBOUNDVALUE_SXP, MISSINGARG_SXP, BASENAMESPACE_SXP = 252, 251, 250
NAMESPACESXP, PACKAGESXP, PERSISTSXP, REFSXP, NILVALUE_SXP = 249, 248, 247, 255, 254

NA_INTEGER = -(2**31)
ATOMIC_NAMES = {LGLSXP: "logical", INTSXP: "integer", REALSXP: "double",
                CPLXSXP: "complex", STRSXP: "character", RAWSXP: "raw",
                VECSXP: "list", EXPRSXP: "expression"}


class RDataError(Exception):
    """The stream is not R serialization, or uses a feature not handled here."""


class RSymbol:
    """An R symbol (name)."""

    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return f"RSymbol({self.name!r})"


class RVector:
    """An R vector: `rtype` is 'character', 'integer', 'list', ...;
    `values` a Python list; `attributes` a dict (names, class, row.names...)."""

    def __init__(self, rtype, values, attributes=None):
        self.rtype = rtype
        self.values = values
        self.attributes = attributes or {}

    def names(self):
        n = self.attributes.get("names")
        return n.values if isinstance(n, RVector) else None

    def classes(self):
        c = self.attributes.get("class")
        return c.values if isinstance(c, RVector) else []

    def __len__(self):
        return len(self.values)

    def __repr__(self):
        return f"RVector({self.rtype}, n={len(self.values)}, attrs={list(self.attributes)})"


class _Env:
    """Placeholder for environments (only their identity is kept)."""


class _Reader:
    def __init__(self, data):
        self.data = data
        self.pos = 0
        self.refs = []

    def take(self, n):
        if self.pos + n > len(self.data):
            raise RDataError(f"truncated stream: wanted {n} bytes at offset {self.pos}")
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def int(self):
        return struct.unpack(">i", self.take(4))[0]

    def length(self):
        n = self.int()
        if n == -1:  # long vector: two 32-bit halves
            hi, lo = self.int(), self.int()
            n = (hi << 32) + lo
        return n

    def string(self, n):
        return self.take(n)

    # -- items ------------------------------------------------------------
    def item(self):
        flags = self.int()
        t = flags & 0xFF
        levels = flags >> 12
        has_attr = bool(flags & (1 << 9))
        has_tag = bool(flags & (1 << 10))

        if t == NILVALUE_SXP:
            return None
        if t in (EMPTYENV_SXP, BASEENV_SXP, GLOBALENV_SXP, UNBOUNDVALUE_SXP,
                 MISSINGARG_SXP, BASENAMESPACE_SXP):
            return _Env()
        if t == REFSXP:
            idx = flags >> 8
            if idx == 0:
                idx = self.int()
            if not 1 <= idx <= len(self.refs):
                raise RDataError(f"bad reference index {idx}")
            return self.refs[idx - 1]
        if t == PERSISTSXP:
            self.item()  # the persistent name (a STRSXP); content unavailable
            v = _Env()
            self.refs.append(v)
            return v
        if t == SYMSXP:
            name = self.item()  # a CHARSXP
            sym = RSymbol(name)
            self.refs.append(sym)
            return sym
        if t in (NAMESPACESXP, PACKAGESXP):
            self.item()  # name info (STRSXP)
            v = _Env()
            self.refs.append(v)
            return v
        if t == ENVSXP:
            v = _Env()
            self.refs.append(v)
            self.int()  # locked
            self.item()  # enclosure
            self.item()  # frame
            self.item()  # hash table
            self.item()  # attributes
            return v
        if t in (LISTSXP, LANGSXP, CLOSXP, PROMSXP, DOTSXP, ATTRLISTSXP, ATTRLANGSXP):
            # Pairlist-like: iterate the CDR chain instead of recursing.
            out = []
            while True:
                attr = self.item() if has_attr else None
                tag = self.item() if has_tag else None
                car = self.item()
                out.append((tag.name if isinstance(tag, RSymbol) else tag, car))
                del attr
                flags = self.int()
                t = flags & 0xFF
                has_attr = bool(flags & (1 << 9))
                has_tag = bool(flags & (1 << 10))
                if t == NILVALUE_SXP:
                    return out
                if t not in (LISTSXP, LANGSXP, CLOSXP, PROMSXP, DOTSXP,
                             ATTRLISTSXP, ATTRLANGSXP):
                    # A non-pairlist CDR (rare); read it from these flags.
                    self.pos -= 4
                    out.append((None, self.item()))
                    return out
        if t == CHARSXP:
            n = self.int()
            if n == -1:
                return None  # NA_character_
            raw = self.string(n)
            if levels & (1 << 2):  # LATIN1
                return raw.decode("latin-1")
            if levels & (1 << 1):  # BYTES
                return raw.decode("latin-1")
            return raw.decode("utf-8", errors="replace")
        if t == ALTREP_SXP:
            info = self.item()
            state = self.item()
            attr = self.item()
            v = self._altrep(info, state)
            v.attributes.update(_attr_dict(attr))
            return v
        if t in (LGLSXP, INTSXP):
            n = self.length()
            vals = list(struct.unpack(f">{n}i", self.take(4 * n))) if n else []
            vals = [None if x == NA_INTEGER else x for x in vals]
            if t == LGLSXP:
                vals = [None if x is None else bool(x) for x in vals]
            v = RVector(ATOMIC_NAMES[t], vals)
        elif t == REALSXP:
            n = self.length()
            v = RVector("double", list(struct.unpack(f">{n}d", self.take(8 * n))) if n else [])
        elif t == CPLXSXP:
            n = self.length()
            d = struct.unpack(f">{2 * n}d", self.take(16 * n)) if n else ()
            v = RVector("complex", [complex(d[2 * i], d[2 * i + 1]) for i in range(n)])
        elif t == RAWSXP:
            n = self.length()
            v = RVector("raw", self.take(n))
        elif t in (STRSXP, VECSXP, EXPRSXP):
            n = self.length()
            v = RVector(ATOMIC_NAMES[t], [self.item() for _ in range(n)])
        elif t == S4SXP:
            v = RVector("S4", [])
        else:
            raise RDataError(f"unsupported SEXP type {t} at offset {self.pos - 4}")
        if has_attr:
            v.attributes = _attr_dict(self.item())
        return v

    def _altrep(self, info, state):
        cls = info[0][1].name if isinstance(info, list) and info else None
        if cls in ("compact_intseq", "compact_realseq"):
            n, start, inc = (int(x) for x in state.values[:3])
            vals = [start + i * inc for i in range(n)]
            return RVector("integer" if cls == "compact_intseq" else "double", vals)
        if cls and cls.startswith("wrap_"):
            inner = state.values[0]
            return RVector(inner.rtype, inner.values, dict(inner.attributes))
        if cls == "deferred_string":
            arg = state[0][1] if isinstance(state, list) else state
            return RVector("character", [None if x is None else _num_str(x) for x in arg.values])
        raise RDataError(f"unsupported ALTREP class {cls!r}")


def _num_str(x):
    if isinstance(x, float) and x.is_integer():
        return str(int(x))
    return str(x)


def _attr_dict(pairlist):
    if not pairlist:
        return {}
    return {tag: val for tag, val in pairlist}


def unserialize(data):
    """Decode one R-serialized object (XDR binary, format 2 or 3)."""
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    elif data[:3] == b"BZh":
        data = bz2.decompress(data)
    elif data[:6] == b"\xfd7zXZ\x00":
        data = lzma.decompress(data)
    if data[:2] == b"X\n":
        data = data[2:]
    elif data[:2] in (b"A\n", b"B\n"):
        raise RDataError("only the XDR binary R serialization format is supported")
    r = _Reader(data)
    version = r.int()
    r.int()  # writer's R version
    r.int()  # minimal reader R version
    if version == 3:
        r.take(r.int())  # native encoding name
    elif version != 2:
        raise RDataError(f"unsupported R serialization version {version}")
    return r.item()


def _rdb_blob(rdb, offset, length):
    """Decompress one lazy-load database entry (R's compress = TRUE/2/3)."""
    blob = rdb[offset:offset + length]
    if len(blob) != length or length < 5:
        raise RDataError(f"entry at offset {offset} (length {length}) lies outside the .rdb")
    expected = struct.unpack(">I", blob[:4])[0]
    body = blob[4:]
    if body[:1] == b"x":  # zlib header: compress = TRUE
        out = zlib.decompress(body)
    elif body[:1] == b"2":
        out = bz2.decompress(body[1:])
    elif body[:1] == b"X":
        out = lzma.decompress(body[1:])
    elif body[:1] == b"0":
        out = body[1:]
    else:
        raise RDataError(f"unknown compression marker {body[:1]!r} at offset {offset}")
    if len(out) != expected:
        raise RDataError(f"entry at offset {offset}: {len(out)} bytes, header says {expected}")
    return out


def load_lazy_db(rdx_bytes, rdb_bytes):
    """Read every variable of an R lazy-load database (`X.rdx` + `X.rdb`).
    Returns {name: value}."""
    index = unserialize(zlib.decompress(rdx_bytes) if rdx_bytes[:1] == b"x" else rdx_bytes)
    if not isinstance(index, RVector) or index.names() is None:
        raise RDataError(".rdx does not hold a named list")
    fields = dict(zip(index.names(), index.values))
    variables = fields.get("variables")
    if not isinstance(variables, RVector) or variables.names() is None:
        raise RDataError(".rdx has no 'variables' entry")
    out = {}
    for name, pos in zip(variables.names(), variables.values):
        offset, length = (int(x) for x in pos.values[:2])
        out[name] = unserialize(_rdb_blob(rdb_bytes, offset, length))
    return out
