# Sourced by scripts that need llama.cpp's source: the copy vendored in the PyPI source
# distribution of llama-cpp-python (no git access needed), downloaded once, checked against its
# sha256 and unpacked into ${MLCLI_LLAMA_CPP_CACHE:-~/.cache/mlcli/llama.cpp}.
#
#   . scripts/lib/llama-cpp-source.sh; src="$(llama_cpp_source)"
# Needs $python (a Python with pip).

LCP_VERSION="0.3.36"
LCP_SHA256="832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
llama_cpp_cache="${MLCLI_LLAMA_CPP_CACHE:-$HOME/.cache/mlcli/llama.cpp}"

llama_cpp_source() { # prints the llama.cpp source directory, fetching it when needed
  local sdist="$llama_cpp_cache/llama_cpp_python-$LCP_VERSION.tar.gz"
  local src="$llama_cpp_cache/llama_cpp_python-$LCP_VERSION/vendor/llama.cpp"
  mkdir -p "$llama_cpp_cache"
  if [ ! -f "$sdist" ]; then
    echo "downloading llama-cpp-python $LCP_VERSION (source distribution) from PyPI" >&2
    # Only this package as source: ':all:' would also build pip's build tools (cmake!) from
    # source just to read the package's metadata.
    "$python" -m pip download --quiet --no-deps --no-binary llama-cpp-python \
      "llama-cpp-python==$LCP_VERSION" -d "$llama_cpp_cache" >&2
  fi
  echo "$LCP_SHA256  $sdist" | sha256sum --check --quiet >&2
  [ -d "$src" ] || tar -xzf "$sdist" -C "$llama_cpp_cache"
  echo "$src"
}
