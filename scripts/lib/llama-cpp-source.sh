# Sourced by scripts that need llama.cpp's source: the copy vendored in the PyPI source
# distribution of llama-cpp-python (no git access needed), downloaded once, checked against its
# sha256 and unpacked into ${MLCLI_LLAMA_CPP_CACHE:-~/.cache/mlcli/llama.cpp}.
#
#   . scripts/lib/llama-cpp-source.sh; src="$(llama_cpp_source)"
#   bin="$(llama_cpp_build llama-server)"    # builds one of its programs once, prints its path
# Needs $python (a Python with pip); llama_cpp_build uses $jobs (default 2) parallel jobs and
# $llama_cpp_isa: empty for this CPU (-march=native), `avx2` for AVX2/FMA/F16C only (what a
# CPU without AVX-512 runs), each in a build directory of its own.

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

llama_cpp_build() { # builds llama.cpp's program $1 (llama-bench, llama-server) once; prints its path
  local target="$1" build="$llama_cpp_cache/build${llama_cpp_isa:+-$llama_cpp_isa}"
  local bin="$build/bin/$target"
  if [ ! -x "$bin" ]; then
    local src cmake flags
    src="$(llama_cpp_source)"
    cmake="$(command -v cmake || true)"
    if [ -z "$cmake" ]; then
      [ -x "$llama_cpp_cache/venv/bin/cmake" ] || {
        echo "installing cmake (PyPI wheel) into $llama_cpp_cache/venv" >&2
        "$python" -m venv "$llama_cpp_cache/venv"
        "$llama_cpp_cache/venv/bin/pip" install --quiet cmake
      }
      cmake="$llama_cpp_cache/venv/bin/cmake"
    fi
    case "${llama_cpp_isa:-}" in
      # This CPU (-march=native) without AMX, whose kernels crash on some virtual machines.
      "") flags="-march=native -mno-amx-tile -mno-amx-int8 -mno-amx-bf16" ;;
      avx2) flags="-mavx2 -mfma -mf16c -mbmi2 -msse4.2" ;;
      *) echo "llama_cpp_build: unknown instruction set '$llama_cpp_isa' (known: avx2)" >&2
         return 2 ;;
    esac
    echo "configuring llama.cpp (Release, CPU, $flags)" >&2
    "$cmake" -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=Release \
      -DGGML_NATIVE=OFF -DCMAKE_C_FLAGS="$flags" -DCMAKE_CXX_FLAGS="$flags" \
      -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON \
      -DLLAMA_BUILD_APP=OFF -DLLAMA_BUILD_TOOLS=ON -DLLAMA_OPENSSL=OFF \
      >"$build.configure.log"
    echo "building $target with -j${jobs:-2} (a few minutes; log in $build.log)" >&2
    nice -n 10 "$cmake" --build "$build" --target "$target" -j "${jobs:-2}" \
      >"$build.log"
  fi
  echo "$bin"
}
