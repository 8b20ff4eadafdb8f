#!/usr/bin/env bash
# Serve one model with `mlcli serve` and with llama.cpp's llama-server, each with the same
# number of slots and context per slot, and measure both with the same client
# (`mlcli bench --endpoint`: streamed /v1/completions, TTFT, inter-token latency, throughput
# per stream and in aggregate) at each concurrency level; prints both tables and the ratios
# (mlcli / llama-server; TTFT: llama-server / mlcli, so above 1 is better for mlcli too).
#
#   scripts/serve-vs-llama-server.sh [options] MODEL.gguf
#   scripts/serve-vs-llama-server.sh [options] --synthetic NAME:QUANT
#
#   -p N                 prompt words per request (about one token each; default 128)
#   -n N                 tokens per reply (default 64)
#   -r N                 requests per client (default 3)
#   --concurrency LIST   clients at once (default 1,4)
#   --parallel N         slots of each server (default 4)
#   -c N                 context per slot (default 1024)
#   -t N                 threads (default: the number of physical cores)
#   --synthetic NAME:QUANT  a synthetic model written by mlcli (`bench --write-gguf`)
#
# llama-server is built once from the llama.cpp copy in llama-cpp-python's PyPI source
# distribution (scripts/lib/llama-cpp-source.sh); mlcli with `cargo build --release` unless
# $MLCLI_BIN names a binary. Results go to ${RESULTS:-target/serve-vs-llama-server}/.
# Only meaningful on an otherwise idle machine: the load is printed first.
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/lib/llama-cpp-source.sh
. scripts/lib/bench-common.sh
results="${RESULTS:-target/serve-vs-llama-server}"
python="${PYTHON:-python3}"
jobs="${JOBS:-2}"

prompt=128 gen=64 reps=3 levels="1,4" parallel=4 ctx=1024 threads="" synthetic="" model=""
while [ $# -gt 0 ]; do
  case "$1" in
    -p) prompt="$2"; shift 2 ;;
    -n) gen="$2"; shift 2 ;;
    -r) reps="$2"; shift 2 ;;
    --concurrency) levels="$2"; shift 2 ;;
    --parallel) parallel="$2"; shift 2 ;;
    -c) ctx="$2"; shift 2 ;;
    -t) threads="$2"; shift 2 ;;
    --synthetic) synthetic="$2"; shift 2 ;;
    -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
    -*) echo "serve-vs-llama-server: unknown option $1" >&2; exit 2 ;;
    *) model="$1"; shift ;;
  esac
done
[ -n "$threads" ] || threads="$(physical_cores)"
log() { echo "serve-vs-llama-server: $*" >&2; }

llama_server="$(llama_cpp_build llama-server)"
mlcli="$(mlcli_binary)"
mkdir -p "$results"
if [ -n "$synthetic" ]; then
  model="$results/synthetic-${synthetic//:/-}.gguf"
  [ -f "$model" ] || "$mlcli" bench --synthetic "$synthetic" --write-gguf "$model" -p 8 -n 1 -r 1 >/dev/null
fi
[ -f "$model" ] || { log "no model: give MODEL.gguf or --synthetic NAME:QUANT"; exit 2; }

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

free_port() { "$python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_healthy() { # url pid
  for _ in $(seq 600); do
    curl -sf "$1/health" >/dev/null 2>&1 && return 0
    kill -0 "$2" 2>/dev/null || { log "server exited before it was ready"; return 1; }
    sleep 0.5
  done
  log "$1 not ready after 300 s"; return 1
}
measure() { # name url
  log "measuring $1 ($2)"
  "$mlcli" bench --endpoint "$2" --concurrency "$levels" -p "$prompt" -n "$gen" -r "$reps" -o json \
    >"$results/$1.json"
}

echo "load: $(uptime)"
echo "cpu: $(lscpu | sed -n 's/^Model name: *//p'), threads $threads"
echo "model: $model; $parallel slots of $ctx tokens; prompt $prompt words, reply $gen tokens, $reps requests per client"

port="$(free_port)"
"$mlcli" serve "$model" --port "$port" --parallel "$parallel" -c "$ctx" -t "$threads" \
  2>"$results/mlcli-serve.log" &
pids+=($!)
wait_healthy "http://127.0.0.1:$port" "$!"
measure mlcli "http://127.0.0.1:$port"
cleanup; pids=()

port="$(free_port)"
# llama-server divides its context among its slots.
"$llama_server" -m "$model" --port "$port" -np "$parallel" -c "$((ctx * parallel))" -t "$threads" \
  >"$results/llama-server.log" 2>&1 &
pids+=($!)
wait_healthy "http://127.0.0.1:$port" "$!"
measure llama-server "http://127.0.0.1:$port"
cleanup; pids=()

"$python" - "$results/mlcli.json" "$results/llama-server.json" <<'PY'
import json, sys
ours, theirs = (json.load(open(p)) for p in sys.argv[1:3])
print("| concurrency | TTFT p50 ms mlcli / llama-server | ratio | t/s per stream mlcli / llama-server | ratio | t/s aggregate mlcli / llama-server | ratio |")
print("|---:|---:|---:|---:|---:|---:|---:|")
for a, b in zip(ours, theirs):
    ta, tb = a["ttft_ms"][0], b["ttft_ms"][0]
    print(f"| {a['concurrency']} | {ta:.0f} / {tb:.0f} | {tb / ta:.2f} "
          f"| {a['stream_tok_s']:.1f} / {b['stream_tok_s']:.1f} | {a['stream_tok_s'] / b['stream_tok_s']:.2f} "
          f"| {a['aggregate_tok_s']:.1f} / {b['aggregate_tok_s']:.1f} | {a['aggregate_tok_s'] / b['aggregate_tok_s']:.2f} |")
PY
