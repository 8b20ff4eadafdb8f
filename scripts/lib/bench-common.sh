# Sourced by the side-by-side scripts: the helpers both need.
#
#   . scripts/lib/bench-common.sh
#   threads="${threads:-$(physical_cores)}"; mlcli="$(mlcli_binary)"

physical_cores() { # the machine's physical cores (llama-bench's default thread count)
  local n
  n="$(lscpu -p=core,socket 2>/dev/null | grep -v '^#' | sort -u | wc -l)"
  [ "$n" -gt 0 ] || n="$(nproc)"
  echo "$n"
}

mlcli_binary() { # $MLCLI_BIN, else a fresh `cargo build --release`; prints the binary's path
  if [ -n "${MLCLI_BIN:-}" ]; then
    echo "$MLCLI_BIN"
    return
  fi
  echo "building mlcli (cargo build --release)" >&2
  cargo build --release --quiet
  echo "target/release/mlcli"
}
