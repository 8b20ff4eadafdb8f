#!/usr/bin/env bash
# The reference oracle, in its pinned environment: makes (once) a virtual environment with
# torch and transformers from PyPI, fetches llama.cpp's converter (the llama-cpp-python sdist),
# and runs make.py.
#
#   scripts/oracle/run.sh                 # every case into tests/data/oracle/ (not committed)
#   scripts/oracle/run.sh NAME...         # only these cases (names in cases.py)
#   scripts/oracle/run.sh --out DIR       # into DIR (the tests make theirs in mlcli's cache)
#   scripts/oracle/run.sh --check --out DIR   # regenerate elsewhere; fail unless DIR is byte-identical
#
# The venv lives in ${MLCLI_ORACLE_VENV:-~/.cache/mlcli/oracle-venv} (about 4 GB: PyPI's torch
# for Linux brings its CUDA libraries even though the oracle runs on the CPU).
set -euo pipefail
cd "$(dirname "$0")/../.."

python="${PYTHON:-python3}"
venv="${MLCLI_ORACLE_VENV:-$HOME/.cache/mlcli/oracle-venv}"
# The oracle's environment, pinned so that every machine makes the same fixtures.
pins=(torch==2.15.0 transformers==5.25.0 tokenizers==0.23.3 sentencepiece==0.2.3 safetensors==0.8.0
      numpy==2.4.6 protobuf==7.36.2)

if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import torch, transformers" 2>/dev/null; then
  echo "oracle: installing ${pins[*]} into $venv" >&2
  "$python" -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "${pins[@]}"
fi
. scripts/lib/llama-cpp-source.sh
src="$(llama_cpp_source)"
ORACLE_LCP_VERSION="$LCP_VERSION" exec "$venv/bin/python" scripts/oracle/make.py \
  --converter "$src/convert_hf_to_gguf.py" "$@"
