#!/usr/bin/env bash
# Run llama.cpp's llama-bench and `mlcli bench` on the same models and settings, and print a
# side-by-side table with ratios (mlcli / llama.cpp) per test.
#
#   scripts/bench-vs-llama-cpp.sh [options] [MODEL.gguf ...]
#
#   MODEL...                 default: the two test models (`cargo test --test real_models`)
#   -p LIST, -n LIST         prompt and generation sizes (default 512 and 128), as llama-bench
#   -d LIST                  also run each generation test after this many tokens of context
#                            (llama-bench's -d; e.g. -d 512)
#   -r N                     repetitions (default 5)
#   --busy                   keep one core busy with an unrelated CPU-bound process (a shell
#                            loop) during every test: how each tool holds up on a shared machine
#   -t N                     threads (default: the number of physical cores)
#   --synthetic NAME:QUANT   also compare a synthetic model: mlcli writes it to a GGUF
#                            (--write-gguf) and both tools run that file
#   --tokenizer-from GGUF    tokenizer for --synthetic files (llama.cpp needs one; default:
#                            mlcli's made-up byte-level vocabulary)
#   --isa avx2               both tools as on a CPU without AVX-512: llama.cpp built for
#                            AVX2/FMA/F16C only (its own build directory), mlcli with
#                            MLCLI_CPU_KERNELS=avx2 (candle's f32 GEMM still picks its own)
#
# llama-bench is built once, from the llama.cpp copy vendored in the PyPI source distribution
# of llama-cpp-python (no git access needed), into ${MLCLI_LLAMA_CPP_CACHE:-~/.cache/mlcli/llama.cpp}.
# The build targets this CPU (-march=native) without AMX, whose kernels crash on some virtual
# machines. mlcli is built with `cargo build --release` unless $MLCLI_BIN names a binary.
# Every test runs in its own process of each tool, so the table can show each process's peak
# RSS (/usr/bin/time's maximum resident set: weights, KV cache and buffers at that test's
# context size). Raw JSON of both tools goes to ${RESULTS:-target/bench-vs-llama-cpp}/.
# Generation tests also get their share of the bandwidth bound: `mlcli bench --bandwidth`
# measures the threads' read bandwidth and the bytes of weights a token reads, in a process
# of its own, right before and right after each tool's generation test (a shared host's
# bandwidth moves by a third within minutes); each tool's bound is the mean of its two.
# Benchmarks are only meaningful on an otherwise idle machine: the load is printed first.
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/lib/llama-cpp-source.sh
. scripts/lib/bench-common.sh
cache="$llama_cpp_cache"
results="${RESULTS:-target/bench-vs-llama-cpp}"
python="${PYTHON:-python3}"
jobs="${JOBS:-2}"

llama_cpp_isa="" busy="" prompt=512 gen=128 depth="" reps=5 threads="" synthetic="" tokenizer_from=""
models=()
while [ $# -gt 0 ]; do
  case "$1" in
    -p) prompt="$2"; shift 2 ;;
    -n) gen="$2"; shift 2 ;;
    -d) depth="$2"; shift 2 ;;
    --busy) busy=1; shift ;;
    -r) reps="$2"; shift 2 ;;
    -t) threads="$2"; shift 2 ;;
    --synthetic) synthetic="$2"; shift 2 ;;
    --tokenizer-from) tokenizer_from="$2"; shift 2 ;;
    --isa) llama_cpp_isa="$2"; export MLCLI_CPU_KERNELS="$2"; shift 2 ;;
    -h|--help) sed -n '2,33p' "$0"; exit 0 ;;
    -*) echo "bench-vs-llama-cpp: unknown option $1" >&2; exit 2 ;;
    *) models+=("$1"); shift ;;
  esac
done
[ -n "$threads" ] || threads="$(physical_cores)"
if [ ${#models[@]} -eq 0 ] && [ -z "$synthetic" ]; then
  dir="${MLCLI_TEST_MODELS:-${XDG_CACHE_HOME:-$HOME/.cache}/mlcli/test-models}"
  models=("$dir/SmolLM2-135M-Instruct.Q4_1.gguf" "$dir/gemma-3-270m-q4_k_m.gguf")
fi

log() { echo "bench-vs-llama-cpp: $*" >&2; }
[ -z "$llama_cpp_isa" ] ||
  log "instruction set: llama.cpp built for $llama_cpp_isa only, mlcli with MLCLI_CPU_KERNELS=$llama_cpp_isa"

# --- llama-bench, built once ------------------------------------------------------------------
llama_bench="$(llama_cpp_build llama-bench)"

# --- mlcli ------------------------------------------------------------------------------------
mlcli="$(mlcli_binary)"

mkdir -p "$results"
if [ -n "$synthetic" ]; then
  file="$results/synthetic-${synthetic//:/-}.gguf"
  args=(bench --synthetic "$synthetic" --write-gguf "$file")
  [ -n "$tokenizer_from" ] && args+=(--tokenizer-from "$tokenizer_from")
  log "writing $synthetic to $file"
  "$mlcli" "${args[@]}"
  models+=("$file")
fi

log "machine: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
if [ -n "$busy" ]; then
  sh -c 'while :; do :; done' &
  busy_pid=$!
  trap 'kill "$busy_pid" 2>/dev/null || true' EXIT
  log "--busy: a shell loop (pid $busy_pid) keeps one core busy during the tests"
elif awk '{exit !($1 > 0.5)}' /proc/loadavg; then
  log "warning: the machine is busy (1-minute load above 0.5): figures will be low and noisy,"
  log "         llama.cpp's far more than mlcli's (its threads spin at barriers); rerun when idle"
fi

[ -x /usr/bin/time ] || { echo "bench-vs-llama-cpp: /usr/bin/time is required (peak RSS)" >&2; exit 1; }
ours="$results/mlcli.jsonl" theirs="$results/llama-bench.jsonl" rss="$results/rss.jsonl"
bw="$results/bandwidth.jsonl"
: >"$ours"; : >"$theirs"; : >"$rss"; : >"$bw"
# One test per process: "P N D" triples.
tests=()
for p in ${prompt//,/ }; do [ "$p" -gt 0 ] && tests+=("$p 0 0"); done
for n in ${gen//,/ }; do
  [ "$n" -gt 0 ] || continue
  tests+=("0 $n 0")
  for d in ${depth//,/ }; do [ "$d" -gt 0 ] && tests+=("0 $n $d"); done
done
# run TOOL OUT MODEL P N D CMD...: appends CMD's JSON line to OUT and its peak RSS to $rss.
run() {
  local tool="$1" out="$2" model="$3" p="$4" n="$5" d="$6"; shift 6
  /usr/bin/time -f "%M" -o "$results/time.txt" "$@" >>"$out"
  printf '{"tool":"%s","model":"%s","n_prompt":%s,"n_gen":%s,"n_depth":%s,"rss_kib":%s}\n' \
    "$tool" "$(basename "$model")" "$p" "$n" "$d" "$(tail -1 "$results/time.txt")" >>"$rss"
}
# bandwidth MODEL N AT: the threads' read bandwidth and the weights a token reads, in a
# process of its own (its 1 GiB buffer would count in a test's peak RSS), tagged with the
# generation test (N tokens) and when: 0 before llama.cpp's run, 1 between, 2 after mlcli's.
bandwidth() {
  "$mlcli" bench -m "$1" -p 0 -n 1 -r 1 --no-warmup -t "$threads" --bandwidth -o jsonl |
    sed "s/^{/{\"bound_of\":[$2,$3],/" >>"$bw"
}
for m in "${models[@]}"; do
  for t in "${tests[@]}"; do
    read -r p n d <<<"$t"
    log "$(basename "$m"): -p $p -n $n -d $d"
    bound=$([ "$p" = 0 ] && [ "$d" = 0 ] && echo yes || true)
    [ -z "$bound" ] || bandwidth "$m" "$n" 0
    run llama.cpp "$theirs" "$m" "$p" "$n" "$d" \
      "$llama_bench" -m "$m" -p "$p" -n "$n" -d "$d" -r "$reps" -t "$threads" -o jsonl
    [ -z "$bound" ] || bandwidth "$m" "$n" 1
    run mlcli "$ours" "$m" "$p" "$n" "$d" \
      "$mlcli" bench -m "$m" -p "$p" -n "$n" -d "$d" -r "$reps" -t "$threads" -o jsonl
    [ -z "$bound" ] || bandwidth "$m" "$n" 2
  done
done

"$python" - "$theirs" "$ours" "$rss" "$bw" <<'PY'
import json, os, sys

def rows(path):
    with open(path) as f:
        return [json.loads(l) for l in f if l.strip()]

theirs, ours, rss = rows(sys.argv[1]), rows(sys.argv[2]), rows(sys.argv[3])
def key(r, file_field):
    return (os.path.basename(r[file_field]), r["n_prompt"], r["n_gen"], r.get("n_depth", 0))
mine = {key(r, "model_file"): r for r in ours}
peak = {(r["tool"], r["model"], r["n_prompt"], r["n_gen"], r["n_depth"]): r["rss_kib"] / 1024 for r in rss}
print("| model | test | threads | llama.cpp t/s | mlcli t/s | t/s ratio | llama.cpp peak RSS | mlcli peak RSS | RSS ratio |")
print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for t in theirs:
    k = key(t, "model_filename")
    o = mine.get(k)
    test = f"pp{t['n_prompt']}" if t["n_gen"] == 0 else f"tg{t['n_gen']}" if t["n_prompt"] == 0 else f"pp{t['n_prompt']}+tg{t['n_gen']}"
    if t.get("n_depth", 0):
        test += f" @ d{t['n_depth']}"
    ours_cell = f"{o['avg_ts']:.2f} ± {o['stddev_ts']:.2f}" if o else "missing"
    ratio = f"{o['avg_ts'] / t['avg_ts']:.2f}" if o else "n/a"
    lr, mr = peak.get(("llama.cpp",) + k), peak.get(("mlcli",) + k)
    cells = [f"{v:.0f} MiB" if v else "n/a" for v in (lr, mr)]
    rss_ratio = f"{mr / lr:.2f}" if lr and mr else "n/a"
    print(f"| {k[0]} | {test} | {t['n_threads']} | {t['avg_ts']:.2f} ± {t['stddev_ts']:.2f} | {ours_cell} | {ratio} | {cells[0]} | {cells[1]} | {rss_ratio} |")
# (model, n_gen) -> {0: before llama.cpp's test, 1: between, 2: after mlcli's}
bound = {}
for r in rows(sys.argv[4]):
    if r.get("memory_read_gbs") and "bound_of" in r:
        n, at = r["bound_of"]
        bound.setdefault((os.path.basename(r["model_file"]), n), {})[at] = r
gen = [t for t in theirs if t["n_gen"] and not t["n_prompt"] and not t.get("n_depth", 0)]
if bound and gen:
    print("\n| model | test | read bandwidth before / between / after (GB/s) | weights per token | llama.cpp bound t/s | llama.cpp share | mlcli bound t/s | mlcli share |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for t in gen:
        k = key(t, "model_filename")
        b, o = bound.get((k[0], t["n_gen"]), {}), mine.get(k)
        if len(b) < 3:
            continue
        gbs = [b[i]["memory_read_gbs"] for i in range(3)]
        per_token = b[0]["weights_read_bytes"]
        # Each tool's bound: the mean of the bandwidth read right before and right after its test.
        limits = [(gbs[0] + gbs[1]) / 2 * 1e9 / per_token, (gbs[1] + gbs[2]) / 2 * 1e9 / per_token]
        share = lambda r, limit: f"{100 * r['avg_ts'] / limit:.0f}%" if r else "n/a"
        print(f"| {k[0]} | tg{t['n_gen']} | {gbs[0]:.1f} / {gbs[1]:.1f} / {gbs[2]:.1f} | {per_token / 2**20:.0f} MiB | {limits[0]:.2f} | {share(t, limits[0])} | {limits[1]:.2f} | {share(o, limits[1])} |")
build = theirs[0].get("build_commit", "?") if theirs else "?"
rec = ours[0]["record"] if ours else {}
print(f"\nllama.cpp {build} (llama-cpp-python sdist); mlcli {rec.get('mlcli_version', '?')} ({rec.get('git_commit', '?')[:12]}), candle {rec.get('candle_version', '?')}; {rec.get('cpu_model', '?')}")
PY
