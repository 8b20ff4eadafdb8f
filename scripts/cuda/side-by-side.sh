#!/usr/bin/env bash
# mlcli's CUDA build next to llama.cpp's on one GPU, on the same synthetic GGUFs: builds
# llama-bench with CUDA (llama.cpp from the llama-cpp-python sdist the CPU script uses), writes
# each preset's GGUF with `mlcli bench --synthetic NAME:QUANT --write-gguf`, then runs both tools'
# prompt and generation tests and the generation tests at each depth, with the peak GPU memory
# of every run (nvidia-smi, sampled every 100 ms).
#
# Usage: scripts/cuda/side-by-side.sh [-p 512] [-n 128] [-r 3] [-d 8192,32768] PRESET|GGUF...
#   e.g. scripts/cuda/side-by-side.sh -d 8192 qwen3-8b:q4_k_m qwen3-moe-30b-a3b:q4_k_m
#   (an existing GGUF file is run as it is: the real test models, say)
# Environment: MLCLI_BIN (default target/release/mlcli, a `--features cuda` build),
#   LLAMA_SRC (llama.cpp's source; default: fetched as scripts/lib/llama-cpp-source.sh does),
#   WORK (GGUFs and llama.cpp's build; default target/side-by-side), CUDA_ARCH (default 90).
# The GPU should be otherwise idle; every figure comes from one lease.
set -euo pipefail
cd "$(dirname "$0")/../.."
prompt=512 gen=128 reps=3 depths=""
while getopts "p:n:r:d:" o; do
  case $o in
    p) prompt=$OPTARG ;; n) gen=$OPTARG ;; r) reps=$OPTARG ;; d) depths=$OPTARG ;;
    *) sed -n '2,14p' "$0" >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
[ $# -gt 0 ] || { sed -n '2,14p' "$0" >&2; exit 2; }
mlcli=${MLCLI_BIN:-target/release/mlcli}
work=${WORK:-target/side-by-side}
mkdir -p "$work"
if [ -z "${LLAMA_SRC:-}" ]; then
  python=${PYTHON:-python3}
  # shellcheck source=../lib/llama-cpp-source.sh
  . scripts/lib/llama-cpp-source.sh
  LLAMA_SRC=$(llama_cpp_source)
fi
bench=$work/llama-build/bin/llama-bench
if [ ! -x "$bench" ]; then
  echo "building llama-bench with CUDA (sm_${CUDA_ARCH:-90}); log in $work/llama-build.log" >&2
  cmake -S "$LLAMA_SRC" -B "$work/llama-build" -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCH:-90}" -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_CURL=OFF \
    -DLLAMA_OPENSSL=OFF -DBUILD_SHARED_LIBS=OFF >"$work/llama-build.log" 2>&1
  cmake --build "$work/llama-build" --target llama-bench -j "$(nproc)" >>"$work/llama-build.log" 2>&1
fi

# Runs a command while sampling the GPU's memory; prints its output, then the peak in MiB.
peak() {
  local log
  log=$(mktemp)
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 >"$log" &
  local smi=$!
  "$@" || { kill $smi; rm -f "$log"; return 1; }
  kill $smi
  wait $smi 2>/dev/null || true
  echo "peak GPU memory: $(sort -n "$log" | tail -1) MiB (whole GPU, sampled)"
  rm -f "$log"
}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
for preset in "$@"; do
  if [ -f "$preset" ]; then
    gguf=$preset
  else
    gguf=$work/${preset//:/-}.gguf
    [ -f "$gguf" ] || "$mlcli" bench --synthetic "$preset" --write-gguf "$gguf" >&2
  fi
  echo "## $preset"
  echo "### mlcli"
  peak "$mlcli" bench -m "$gguf" --device cuda -p "$prompt" -n "$gen" -r "$reps"
  [ -z "$depths" ] || "$mlcli" bench -m "$gguf" --device cuda -p 0 -n "$gen" -d "$depths" -r 1
  echo "### llama.cpp"
  peak "$bench" -m "$gguf" -ngl 99 -p "$prompt" -n "$gen" -r "$reps"
  [ -z "$depths" ] || "$bench" -m "$gguf" -ngl 99 -p 0 -n "$gen" -d "$depths" -r 1
done
